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

import base64
import hashlib
import io
import json
import math
import struct
import zlib
from typing import Any

import numpy as np

try:  # optional: the `emulator` / `test` extras
    from qiskit import qpy
    from qiskit.circuit import QuantumCircuit
    from qiskit.primitives import StatevectorEstimator, StatevectorSampler

    HAVE_QISKIT = True
except ImportError:  # pragma: no cover - exercised only without the extra
    HAVE_QISKIT = False

#: The service's default when neither the pub nor `options.default_shots` says (IBM docs).
DEFAULT_SHOTS = 4096
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


class SimulationError(ValueError):
    """The pubs cannot be run; the job ends Failed with this text as its reason."""


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


def _b64(data: bytes) -> str:
    return base64.standard_b64encode(data).decode("ascii")


def _unb64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise SimulationError(f"{what}: expected a base64 string")
    try:
        raw = base64.standard_b64decode(value)
    except ValueError as exc:
        raise SimulationError(f"{what}: not base64 ({exc})") from exc
    try:
        return zlib.decompress(raw)
    except zlib.error:
        return raw  # RuntimeEncoder compresses, but an uncompressed payload is readable too


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
            circuits = qpy.load(io.BytesIO(_unb64(value, "QuantumCircuit")))
        except Exception as exc:  # QPY raises many types for bad input
            raise SimulationError(f"cannot load the QPY circuit: {exc}") from exc
        return circuits[0]
    if kind == "ndarray":
        if isinstance(value, list):
            return np.array(value)
        try:
            return np.load(io.BytesIO(_unb64(value, "ndarray")), allow_pickle=False)
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


def _nd(arr: Any) -> dict[str, Any]:
    """RuntimeEncoder's ndarray: base64(zlib(np.save(arr)))."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(arr), allow_pickle=False)
    return {"__type__": "ndarray", "__value__": _b64(zlib.compress(buf.getvalue()))}


def _databin(fields: dict[str, Any], shape: tuple[int, ...]) -> dict[str, Any]:
    return {"__type__": "DataBin", "__value__": {"field_names": list(fields), "shape": list(shape), "fields": fields}}


def _primitive_result(pub_results: list[dict[str, Any]]) -> bytes:
    doc = {
        "__type__": "PrimitiveResult",
        "__value__": {"pub_results": pub_results, "metadata": {"execution": {"execution_spans": []}, "version": 2}},
    }
    return json.dumps(doc, separators=(",", ":")).encode()


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
        result = StatevectorSampler(seed=seed).run(coerced).result()
    except Exception as exc:  # qiskit validation errors have many types
        raise SimulationError(f"sampler: {exc}") from exc
    out = []
    for pub_result, circuit in zip(result, (p[0] for p in coerced), strict=True):
        data = pub_result.data
        fields = {
            creg.name: {
                "__type__": "BitArray",
                "__value__": {"array": _nd(data[creg.name].array), "num_bits": data[creg.name].num_bits},
            }
            for creg in circuit.cregs
        }
        value = {"data": _databin(fields, tuple(data.shape)), "metadata": {"circuit_metadata": circuit.metadata or {}}}
        out.append({"__type__": "SamplerPubResult", "__value__": value})
    return _primitive_result(out)


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
        result = StatevectorEstimator(seed=seed).run(coerced).result()
    except Exception as exc:  # qiskit validation errors have many types
        raise SimulationError(f"estimator: {exc}") from exc
    out = []
    for pub_result, pub in zip(result, coerced, strict=True):
        data = pub_result.data
        evs = np.asarray(data.evs, dtype=float)
        precision = pub[3]
        # The reference estimator reports stds of 0; a device's are the precision its shots reach.
        stds = np.full(evs.shape, precision, dtype=float)
        fields = {"evs": _nd(evs), "stds": _nd(stds), "ensemble_standard_error": _nd(stds)}
        if default_shots and precision == default_precision:
            shots = default_shots  # what the caller asked for, not 1/precision^2 rounded up
        else:
            shots = round(1 / precision**2) if precision > 0 else DEFAULT_SHOTS
        meta = {
            "target_precision": precision,
            "shots": shots,
            "circuit_metadata": pub[0].metadata or {},
        }
        out.append({"__type__": "PubResult", "__value__": {"data": _databin(fields, evs.shape), "metadata": meta}})
    return _primitive_result(out)


# ---------------------------------------------------------------------------- without qiskit
def peek_cregs(node: Any) -> list[tuple[str, int]] | None:
    """The classical registers (name, width) of a QPY circuit, read from its header; None if unreadable.

    Layout (qiskit/qpy/formats.py): FILE_HEADER (`!6sBBBBQ`, + 1 byte symbolic encoding from v10), a
    program type byte (`q`, from v5), CIRCUIT_HEADER_V2 (`!H1cHIIQIQ`, + `I` num_vars from v12), name,
    global phase, metadata, then REGISTER_V4 records (`!1c?IH?`) + name + one int64 per bit. Versions 5..15
    (qiskit 0.25 .. 2.0, which covers every client of the V1 primitives and backend.run).
    """
    if not (isinstance(node, dict) and node.get("__type__") == "QuantumCircuit"):
        return None
    try:
        data = _unb64(node.get("__value__"), "QuantumCircuit")
    except SimulationError:
        return None
    if not data.startswith(b"QISKIT") or len(data) < 19 or not 5 <= data[6] <= 15:
        return None  # v16+ (qiskit >= 2.1's Rust writer) lays registers out differently: not read here
    version = data[6]
    pos = 19 if version >= 10 else 18
    if data[pos : pos + 1] != b"q":
        return None
    head = "!H1cHIIQIQI" if version >= 12 else "!H1cHIIQIQ"
    try:
        pos += 1
        name_size, _, phase_size, _, num_clbits, meta_size, num_registers = struct.unpack_from(head, data, pos)[:7]
        pos += struct.calcsize(head) + name_size + phase_size + meta_size
        cregs = []
        for _ in range(num_registers):
            kind, _standalone, size, rname_size, in_circuit = struct.unpack_from("!1c?IH?", data, pos)
            pos += struct.calcsize("!1c?IH?")
            rname = data[pos : pos + rname_size].decode("utf-8")
            pos += rname_size + 8 * size
            if in_circuit and kind == b"c":
                cregs.append((rname, size))
    except (struct.error, UnicodeDecodeError):
        return None
    if pos > len(data) or sum(w for _, w in cregs) > num_clbits:
        return None
    return cregs


def _values_shape(node: Any) -> tuple[int, ...]:
    """The binding shape of a pub's parameter values (an ndarray of shape (*shape, num_parameters))."""
    if node is None:
        return ()
    if isinstance(node, dict) and node.get("__type__") == "ndarray" and isinstance(node.get("__value__"), str):
        try:
            arr = np.load(io.BytesIO(_unb64(node["__value__"], "ndarray")), allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise SimulationError(f"cannot load an ndarray: {exc}") from exc
    else:
        arr = np.asarray(node.get("__value__") if isinstance(node, dict) else node)
    return tuple(arr.shape[:-1]) if arr.ndim >= 1 and arr.size else ()


def _observables_shape(node: Any) -> tuple[int, ...]:
    if isinstance(node, dict) and node.get("__type__") == "ObservablesArray":
        node = node.get("__value__")
    shape: list[int] = []
    while isinstance(node, list):
        shape.append(len(node))
        node = node[0] if node else None
    return tuple(shape)


def zero_bits(shape: tuple[int, ...], shots: int, width: int) -> np.ndarray:
    """A BitArray's bytes (big-endian, ceil(width/8) per shot) with every bit 0."""
    return np.zeros((*shape, shots, (width + 7) // 8), np.uint8)


def canned(program_id: str, params: Any) -> bytes | None:
    """Without qiskit: registers, widths, shots and shapes as submitted, every bit 0 and every <O> 0."""
    if program_id not in ("sampler", "estimator") or not isinstance(params, dict):
        return None
    pubs = params.get("pubs")
    if not isinstance(pubs, list) or not pubs:
        return None
    options = params.get("options") if isinstance(params.get("options"), dict) else {}
    default = options.get("default_shots")
    default_shots = default if isinstance(default, int) and default > 0 else DEFAULT_SHOTS
    out = []
    for pub in pubs:
        pub = pub if isinstance(pub, list) else [pub]
        if program_id == "sampler":
            cregs = peek_cregs(pub[0])
            if cregs is None:
                return None
            shape = _values_shape(pub[1] if len(pub) > 1 else None)
            shots = pub[2] if len(pub) > 2 and isinstance(pub[2], int) and pub[2] > 0 else default_shots
            fields = {
                name: {"__type__": "BitArray", "__value__": {"array": _nd(zero_bits(shape, shots, w)), "num_bits": w}}
                for name, w in cregs
            }
            value = {"data": _databin(fields, shape), "metadata": {"circuit_metadata": {}}}
            out.append({"__type__": "SamplerPubResult", "__value__": value})
        else:
            obs_shape = _observables_shape(pub[1] if len(pub) > 1 else None)
            try:
                shape = np.broadcast_shapes(obs_shape, _values_shape(pub[2] if len(pub) > 2 else None))
            except ValueError as exc:
                raise SimulationError(f"observables and parameter values do not broadcast: {exc}") from exc
            zeros = _nd(np.zeros(shape))
            fields = {"evs": zeros, "stds": zeros, "ensemble_standard_error": zeros}
            meta = {"target_precision": 0.0, "shots": default_shots, "circuit_metadata": {}}
            out.append({"__type__": "PubResult", "__value__": {"data": _databin(fields, shape), "metadata": meta}})
    return _primitive_result(out)


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
