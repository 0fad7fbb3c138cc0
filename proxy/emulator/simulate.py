"""Answer SamplerV2 / EstimatorV2 jobs from the pubs that were submitted.

Why: a canned result hides every translation bug (a wrong parameter binding, a flipped bit, a lost
register). With qiskit importable (the `test` / `emulator` extras) the circuits are really
simulated with qiskit's reference primitives (`StatevectorSampler` / `StatevectorEstimator`,
seeded); the answer is written in the new API's result encoding (RuntimeEncoder JSON, as in
`data/sampler_v2_result.json`). Without qiskit, `simulate` returns None and the caller serves the
packaged fixture... unless the pubs' QPY headers can be read: then `canned` answers with the
right registers, bit widths, shots and shapes (every bit 0, every expectation value 0). The same
canned answer is given to submissions too large to simulate here (more than MAX_SIMULATED_PUBS
pubs, or more than MAX_SIMULATED_QUBITS qubits in use).

Inputs are decoded the way qiskit-ibm-runtime's RuntimeDecoder does (`QuantumCircuit` = base64 of
zlib'd QPY, `ndarray` = base64 of zlib'd `np.save`, `settings` objects of qiskit.quantum_info,
`ObservablesArray`, `BindingsArray`, `complex`). QPY from qiskit 0.46 clients carries
symengine-serialized parameter expressions: loading it needs the same symengine (pinned in the
extras).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from typing import Any

import numpy as np

from .results import DEFAULT_SHOTS, SimulationError, canned, databin, nd, primitive_result, unb64

try:  # optional: the `emulator` / `test` extras
    from qiskit import qpy
    from qiskit.circuit import QuantumCircuit
    from qiskit.primitives import StatevectorEstimator, StatevectorSampler

    HAVE_QISKIT = True
except ImportError:  # pragma: no cover - exercised only without the extra
    HAVE_QISKIT = False

#: EstimatorV2's default precision (1/sqrt(4096)).
DEFAULT_PRECISION = 0.015625
#: Larger submissions get `canned` answers: a statevector simulation runs inside the emulator's
#: event loop (about 20 ms a pub), and benchmarks send hundreds of circuits.
MAX_SIMULATED_PUBS = 32
#: Statevector width limit, after idle qubits are dropped (an ISA circuit for a 127-qubit device
#: touches only a few of them).
MAX_SIMULATED_QUBITS = 20
#: quantum_info classes a `settings` object may name (never import what a body names).
SETTINGS_CLASSES = frozenset({"SparsePauliOp", "Pauli", "PauliList", "SparseObservable"})


class TooBig(Exception):
    """More than the emulator simulates: the answer is `canned` instead."""


def _without_idle_qubits(circuit: QuantumCircuit) -> QuantumCircuit:
    """The same circuit on the qubits it uses (same classical registers and parameters), if it is wide."""
    if circuit.num_qubits <= MAX_SIMULATED_QUBITS:
        return circuit
    used = {q for inst in circuit.data for q in inst.qubits}
    keep = [q for q in circuit.qubits if q in used]
    out = QuantumCircuit(len(keep), name=circuit.name, global_phase=circuit.global_phase, metadata=circuit.metadata)
    for creg in circuit.cregs:
        out.add_register(creg)
    index = {q: out.qubits[k] for k, q in enumerate(keep)}
    for inst in circuit.data:
        out.append(inst.operation, [index[q] for q in inst.qubits], inst.clbits, copy=False)
    return out


def decode(obj: Any) -> Any:
    """RuntimeDecoder for the types a primitive's params carry; anything else stays JSON."""
    if isinstance(obj, list):
        return [decode(x) for x in obj]
    if not isinstance(obj, dict):
        return obj
    kind = obj.get("__type__")
    value = obj.get("__value__")
    if kind is None or "__value__" not in obj:
        return {k: decode(v) for k, v in obj.items()}
    if kind == "QuantumCircuit":
        try:
            circuits = qpy.load(io.BytesIO(unb64(value, "QuantumCircuit")))
        except Exception as exc:  # QPY raises many types for bad input
            raise SimulationError(f"cannot load the QPY circuit: {exc}") from exc
        return circuits[0]
    if kind == "ndarray":
        if isinstance(value, list):
            return np.array(value)
        try:
            return np.load(io.BytesIO(unb64(value, "ndarray")), allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise SimulationError(f"cannot load an ndarray: {exc}") from exc
    if kind == "complex" and isinstance(value, list) and len(value) == 2:
        return complex(value[0], value[1])
    if kind == "set":
        return set(decode(value))
    if kind == "settings":
        name = obj.get("__class__")
        if name not in SETTINGS_CLASSES:
            raise SimulationError(f"unsupported settings object {name!r}")
        import qiskit.quantum_info as qi

        settings = decode(value)
        settings.pop("__int_keys__", None)
        return getattr(qi, name)(**settings)
    if kind == "ObservablesArray":
        return decode(value)
    if kind == "BindingsArray" and isinstance(value, dict):
        return {"__bindings__": True, "data": {k: decode(v) for k, v in (value.get("data") or {}).items()}}
    return decode(value)


def _bindings(circuit: QuantumCircuit, values: Any) -> Any:
    """Parameter values as qiskit's BindingsArray accepts them, in circuit.parameters order."""
    params = list(circuit.parameters)
    if values is None or (isinstance(values, dict) and not values):
        if params:
            raise SimulationError(f"the circuit has {len(params)} parameters but no values were sent")
        return None
    if isinstance(values, dict):
        data = values["data"] if values.get("__bindings__") else values
        by_name = {p.name: p for p in params}
        out: dict[Any, Any] = {}
        for key, val in data.items():
            names = json.loads(key) if isinstance(key, str) and key.startswith("[") else key
            names = [names] if isinstance(names, str) else list(names)
            try:
                out[tuple(by_name[n] for n in names)] = np.asarray(val, dtype=float)
            except KeyError as exc:
                raise SimulationError(f"unknown parameter {exc.args[0]!r}") from exc
        return out
    arr = np.asarray(values, dtype=float)
    if not params:
        if arr.size:
            raise SimulationError("parameter values were sent for a circuit without parameters")
        return None
    if arr.ndim == 0 or arr.shape[-1] != len(params):
        raise SimulationError(f"parameter values of shape {arr.shape} do not fit {len(params)} parameters")
    return {tuple(params): arr}


def _seed(pubs: Any, options: dict[str, Any]) -> int:
    """options.simulator.seed_simulator, else a hash of the pubs: the same submission, the same counts."""
    sim = options.get("simulator") if isinstance(options.get("simulator"), dict) else {}
    seed = sim.get("seed_simulator") if sim else None
    if isinstance(seed, int) and not isinstance(seed, bool):
        return seed
    digest = hashlib.sha256(json.dumps(pubs, sort_keys=True, separators=(",", ":")).encode()).digest()
    return int.from_bytes(digest[:4], "big")


def _pub_list(params: dict[str, Any]) -> list[list[Any]]:
    pubs = decode(params.get("pubs"))
    if not isinstance(pubs, list):
        raise SimulationError("'pubs' must be a list")
    out = []
    for i, pub in enumerate(pubs):
        if isinstance(pub, QuantumCircuit):
            pub = [pub]
        if not isinstance(pub, list) or not pub or not isinstance(pub[0], QuantumCircuit):
            raise SimulationError(f"pub {i}: expected [circuit, ...]")
        out.append(pub)
    return out


def _sample(pubs: list[list[Any]], options: dict[str, Any], seed: int) -> bytes:
    default = options.get("default_shots")
    default_shots = default if isinstance(default, int) and default > 0 else DEFAULT_SHOTS
    coerced = []
    for i, pub in enumerate(pubs):
        circuit = pub[0]
        values = pub[1] if len(pub) > 1 else None
        shots = pub[2] if len(pub) > 2 and pub[2] is not None else default_shots
        if not isinstance(shots, int) or isinstance(shots, bool) or shots < 1:
            raise SimulationError(f"pub {i}: shots must be a positive integer")
        if not circuit.cregs:
            raise SimulationError(f"pub {i}: the circuit has no classical registers (nothing is measured)")
        bindings = _bindings(circuit, values)
        circuit = _without_idle_qubits(circuit)
        if circuit.num_qubits > MAX_SIMULATED_QUBITS:
            raise TooBig(f"pub {i}: {circuit.num_qubits} active qubits")
        coerced.append((circuit, bindings, shots))
    try:
        result = StatevectorSampler(seed=np.random.default_rng(seed)).run(coerced).result()
    except Exception as exc:  # qiskit validation errors have many types
        raise SimulationError(f"sampler: {exc}") from exc
    out = []
    for pub_result, circuit in zip(result, (p[0] for p in coerced), strict=True):
        data = pub_result.data
        fields = {
            creg.name: {
                "__type__": "BitArray",
                "__value__": {"array": nd(data[creg.name].array), "num_bits": data[creg.name].num_bits},
            }
            for creg in circuit.cregs
        }
        value = {"data": databin(fields, tuple(data.shape)), "metadata": {"circuit_metadata": circuit.metadata or {}}}
        out.append({"__type__": "SamplerPubResult", "__value__": value})
    return primitive_result(out)


def _estimate(pubs: list[list[Any]], options: dict[str, Any], seed: int) -> bytes:
    default = options.get("default_precision")
    shots_option = options.get("default_shots")
    default_shots = shots_option if isinstance(shots_option, int) and shots_option > 0 else None
    if isinstance(default, (int, float)) and default > 0:
        default_precision = float(default)
    elif default_shots:
        default_precision = 1 / math.sqrt(default_shots)
    else:
        default_precision = DEFAULT_PRECISION
    coerced = []
    for i, pub in enumerate(pubs):
        if len(pub) < 2:
            raise SimulationError(f"pub {i}: expected [circuit, observables, ...]")
        circuit, observables = pub[0], pub[1]
        values = pub[2] if len(pub) > 2 else None
        precision = pub[3] if len(pub) > 3 and pub[3] is not None else default_precision
        if circuit.cregs and any(inst.operation.name == "measure" for inst in circuit.data):
            circuit = circuit.remove_final_measurements(inplace=False)
        if circuit.num_qubits > MAX_SIMULATED_QUBITS:  # observables span every qubit: no narrowing
            raise TooBig(f"pub {i}: {circuit.num_qubits} qubits")
        coerced.append((circuit, observables, _bindings(circuit, values), float(precision)))
    try:
        result = StatevectorEstimator(seed=np.random.default_rng(seed)).run(coerced).result()
    except Exception as exc:  # qiskit validation errors have many types
        raise SimulationError(f"estimator: {exc}") from exc
    out = []
    for pub_result, pub in zip(result, coerced, strict=True):
        data = pub_result.data
        evs = np.asarray(data.evs, dtype=float)
        precision = pub[3]
        # The reference estimator reports stds of 0; a device's are the precision its shots reach.
        stds = np.full(evs.shape, precision, dtype=float)
        fields = {"evs": nd(evs), "stds": nd(stds), "ensemble_standard_error": nd(stds)}
        if default_shots and precision == default_precision:
            shots = default_shots  # what the caller asked for, not 1/precision^2 rounded up
        else:
            shots = round(1 / precision**2) if precision > 0 else DEFAULT_SHOTS
        meta = {
            "target_precision": precision,
            "shots": shots,
            "circuit_metadata": pub[0].metadata or {},
        }
        out.append({"__type__": "PubResult", "__value__": {"data": databin(fields, evs.shape), "metadata": meta}})
    return primitive_result(out)


def simulate(program_id: str, params: Any) -> bytes | None:
    """The result body for a V2 sampler/estimator job, or None (no pubs, other program, unreadable without qiskit).

    Raises SimulationError when the pubs cannot run (the job then fails, as on the real service).
    """
    if program_id not in ("sampler", "estimator"):
        return None
    if not isinstance(params, dict) or not params.get("pubs"):
        return None
    if not HAVE_QISKIT or len(params["pubs"]) > MAX_SIMULATED_PUBS:
        return canned(program_id, params)
    options = params.get("options") if isinstance(params.get("options"), dict) else {}
    seed = _seed(params["pubs"], options)
    pubs = _pub_list(params)
    try:
        return _sample(pubs, options, seed) if program_id == "sampler" else _estimate(pubs, options, seed)
    except TooBig:
        return canned(program_id, params)
