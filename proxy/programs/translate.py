"""V1 job submissions -> SamplerV2 / EstimatorV2 submissions. Pure: no I/O, no settings.

IBM refuses the V1 primitives (`sampler`/`estimator` without `"version": 2`, error 1513) and
has removed `circuit-runner`/`qasm3-runner` (backend.run). `translate_submission` rewrites such
a `POST /jobs` body into the V2 program's body and returns, next to it, the `Translation`: what
the answer needs to be rebuilt in the old shape (kind, per-experiment circuit name/registers,
shots, memory). Circuits stay as the SDK encoded them (QPY); only their header is read.

Options map onto their V2 equivalents; an option without one is refused with a 400 naming it
(never dropped silently). Two V1 defaults every SDK sends are accepted although V2 has nothing
to do with them: `optimization_settings.level` (the new API does not transpile: circuits must
already be ISA) and Sampler `resilience_settings.level` 1 (SamplerV2 has no readout mitigation;
the quasi-distributions are the measured frequencies).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import BadRequest
from .encoding import CircuitInfo, encode_ndarray, observable_terms, peek_circuit

V1_PRIMITIVES = frozenset({"sampler", "estimator"})
RUNNERS = frozenset({"circuit-runner", "qasm3-runner"})
#: Marks the V2 job (in its tags, which the new API keeps and lists) so a restarted proxy still
#: knows the job was translated and from what: "qcp-v1:<kind>[:memory]".
MARKER = "qcp-v1:"
MAX_TAGS = 8
#: qiskit-ibm-runtime V1 extrapolators -> EstimatorV2 `resilience.zne.extrapolator`.
EXTRAPOLATORS = {
    "LinearExtrapolator": "linear",
    "QuadraticExtrapolator": "polynomial_degree_2",
    "CubicExtrapolator": "polynomial_degree_3",
    "QuarticExtrapolator": "polynomial_degree_4",
}
AMPLIFIERS = {"GlobalFoldingAmplifier": "gate_folding"}


@dataclass
class Experiment:
    """One V1 experiment = one V2 pub."""

    circuit: CircuitInfo | None
    shots: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"circuit": self.circuit.to_json() if self.circuit else None, "shots": self.shots}


@dataclass
class Translation:
    """What was translated and what its answer needs. Kept per job id (memory + the job's tag)."""

    kind: str  # sampler | estimator | circuit-runner | qasm3-runner (what the caller submitted)
    program: str  # the V2 program id
    experiments: list[Experiment] = field(default_factory=list)
    memory: bool = False
    shots: int | None = None  # the V1 shots option (Estimator variance, default per pub)
    backend: str = ""
    header: dict[str, Any] = field(default_factory=dict)  # backend.run(header=...): copied into results
    optimization_level: int | None = None  # V1 transpilation level (isa.py, the [transpile] extra)
    skip_transpilation: bool = False  # the caller said its circuits are ISA already
    transpiled: int = 0  # circuits the proxy transpiled (isa.py)

    @property
    def marker(self) -> str:
        return MARKER + self.kind + (":memory" if self.memory else "")


def parse_marker(tags: Any) -> tuple[str, bool] | None:
    """(kind, memory) from a job's tags, or None when the job was not translated by the proxy."""
    if not isinstance(tags, list):
        return None
    for t in tags:
        if isinstance(t, str) and t.startswith(MARKER):
            kind, _, rest = t[len(MARKER) :].partition(":")
            if kind in V1_PRIMITIVES or kind in RUNNERS:
                return kind, rest == "memory"
    return None


def is_translatable(doc: dict[str, Any]) -> bool:
    """A V1 primitive (no `version: 2`, circuits instead of pubs) or a backend.run program."""
    program = doc.get("program_id")
    if program in RUNNERS:
        return True
    params = doc.get("params")
    if program not in V1_PRIMITIVES or not isinstance(params, dict):
        return False
    return params.get("version") != 2 and "pubs" not in params and "circuits" in params


def translate_submission(doc: dict[str, Any]) -> tuple[dict[str, Any], Translation]:
    """The V2 body for a V1 / circuit-runner submission, and the record its answer needs."""
    program = str(doc.get("program_id"))
    params = doc.get("params")
    if not isinstance(params, dict):
        raise BadRequest(f"program '{program}': 'params' must be a JSON object", code="invalid_program_input")
    params = dict(params)
    if program in RUNNERS:
        pubs, options, tr = _runner(program, params)
    elif program == "sampler":
        pubs, options, tr = _sampler(params)
    else:
        pubs, options, tr = _estimator(params)
    tr.backend = str(doc.get("backend") or "")
    out = {k: v for k, v in doc.items() if k != "params"}
    out["program_id"] = tr.program
    out["params"] = {"pubs": pubs, "options": options, "version": 2, "support_qiskit": True}
    tags = [t for t in (doc.get("tags") or []) if not (isinstance(t, str) and t.startswith(MARKER))]
    if not isinstance(doc.get("tags") or [], list):
        raise BadRequest("'tags' must be a list", code="invalid_program_input")
    if len(tags) >= MAX_TAGS:
        raise BadRequest(
            f"a translated {program} job carries one tag of the proxy's ({tr.marker}); give at most "
            f"{MAX_TAGS - 1} job tags", code="too_many_tags",
        )  # fmt: skip
    out["tags"] = [*tags, tr.marker]
    return out, tr


# ------------------------------------------------------------------------------------ pieces


def _unsupported(program: str, name: str, why: str = "") -> BadRequest:
    target = "EstimatorV2" if program == "estimator" else "SamplerV2"
    return BadRequest(
        f"option '{name}' of {program} has no {target} equivalent on the new IBM Quantum Platform"
        + (f" ({why})" if why else "") + "; remove it to run through the proxy",
        code="unsupported_program_option", extra={"option": name},
    )  # fmt: skip


def _circuits(program: str, params: dict[str, Any]) -> list[Any]:
    circuits = params.pop("circuits", None)
    if isinstance(circuits, dict) or isinstance(circuits, str):
        circuits = [circuits]
    if not isinstance(circuits, list) or not circuits:
        raise BadRequest(f"program '{program}': 'circuits' must be a non-empty list", code="invalid_program_input")
    for i, c in enumerate(circuits):
        if isinstance(c, str):
            raise BadRequest(
                f"program '{program}': circuit {i} is OpenQASM text; the new API takes QuantumCircuit (QPY) only",
                code="unsupported_program_option", extra={"option": "circuits"},
            )  # fmt: skip
        if not (isinstance(c, dict) and c.get("__type__") == "QuantumCircuit"):
            raise BadRequest(f"program '{program}': circuit {i} is not an encoded QuantumCircuit",
                             code="invalid_program_input")  # fmt: skip
    return circuits


def _indices(program: str, params: dict[str, Any], name: str, count: int, n: int | None) -> list[int]:
    raw = params.pop(name, None)
    if raw is None:
        return list(range(n if n is not None else count))
    if not isinstance(raw, list) or not all(isinstance(i, int) and 0 <= i < count for i in raw):
        raise BadRequest(f"program '{program}': '{name}' must list indices below {count}", code="invalid_program_input")
    return raw


def _values(program: str, params: dict[str, Any], n: int) -> list[np.ndarray]:
    raw = params.pop("parameter_values", None)
    params.pop("parameters", None)  # same order as circuit.parameters, which V2 binds by
    if raw is None:
        return [np.zeros(0) for _ in range(n)]
    if not isinstance(raw, list) or len(raw) != n:
        raise BadRequest(f"program '{program}': 'parameter_values' must have one row per circuit ({n})",
                         code="invalid_program_input")  # fmt: skip
    out = []
    for row in raw:
        try:
            out.append(np.asarray(row if row is not None else [], dtype=float).reshape(-1))
        except (TypeError, ValueError):
            raise BadRequest(f"program '{program}': 'parameter_values' must be numbers",
                             code="invalid_program_input") from None  # fmt: skip
    return out


def _int(program: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value < 1:
        raise BadRequest(f"program '{program}': '{name}' must be a positive integer", code="invalid_program_input")
    return int(value)


def _set(options: dict[str, Any], path: str, value: Any) -> None:
    node = options
    *heads, last = path.split(".")
    for h in heads:
        node = node.setdefault(h, {})
    node[last] = value


def _transpilation(program: str, params: dict[str, Any], options: dict[str, Any]) -> tuple[int | None, bool]:
    """(V1 optimization level, skip_transpilation); the rest has no V2 equivalent but the simulator's."""
    ts = params.pop("transpilation_settings", None) or {}
    if not isinstance(ts, dict):
        raise _unsupported(program, "transpilation_settings", "not an object")
    opt = ts.get("optimization_settings")
    level = opt.get("level") if isinstance(opt, dict) else None
    for key, value in ts.items():
        if key in ("skip_transpilation", "optimization_settings") or value is None:
            continue  # no server-side transpilation any more: circuits must be ISA already
        if key in ("coupling_map", "basis_gates"):
            _set(options, f"simulator.{key}", value)
            continue
        raise _unsupported(program, f"transpilation_settings.{key}",
                           "the new API does not transpile; transpile locally with qiskit")  # fmt: skip
    return level if isinstance(level, int) else None, bool(ts.get("skip_transpilation"))


def _run_options(program: str, params: dict[str, Any], options: dict[str, Any]) -> int | None:
    run = params.pop("run_options", None) or {}
    if not isinstance(run, dict):
        raise _unsupported(program, "run_options", "not an object")
    shots = None
    for key, value in run.items():
        if value is None:
            continue
        if key == "shots":
            shots = _int(program, "run_options.shots", value)
        elif key in ("init_qubits", "rep_delay"):
            _set(options, f"execution.{key}", value)
        elif key in ("seed_simulator", "noise_model"):
            _set(options, f"simulator.{key}", value)
        else:
            raise _unsupported(program, f"run_options.{key}")
    return shots


def _resilience(program: str, params: dict[str, Any], options: dict[str, Any]) -> None:
    rs = params.pop("resilience_settings", None) or {}
    if not isinstance(rs, dict):
        raise _unsupported(program, "resilience_settings", "not an object")
    level = rs.get("level")
    if program == "sampler":
        if level not in (None, 0, 1):
            raise _unsupported(program, "resilience_settings.level", f"level {level}")
        for key, value in rs.items():
            if key != "level" and value is not None:
                raise _unsupported(program, f"resilience_settings.{key}")
        return
    if level is not None:
        if level in (0, 1, 2):
            options["resilience_level"] = level
        elif level == 3:
            options["resilience_level"] = 0
            _set(options, "resilience.pec_mitigation", True)
        else:
            raise _unsupported(program, "resilience_settings.level", f"level {level}")
    for key, value in rs.items():
        if key == "level" or value is None:
            continue
        if key == "noise_factors":
            _set(options, "resilience.zne.noise_factors", list(value))
        elif key == "extrapolator" and value in EXTRAPOLATORS:
            _set(options, "resilience.zne.extrapolator", EXTRAPOLATORS[value])
        elif key == "noise_amplifier" and value in AMPLIFIERS:
            _set(options, "resilience.zne.amplifier", AMPLIFIERS[value])
        else:
            raise _unsupported(program, f"resilience_settings.{key}", f"value {value!r}")


def _extras(program: str, params: dict[str, Any], options: dict[str, Any]) -> None:
    """Later V1 options that share the V2 name; anything else is refused by name."""
    for key in list(params):
        value = params.pop(key)
        if value is None or value == {}:
            continue
        if key in ("twirling", "dynamical_decoupling") and isinstance(value, dict):
            options[key] = copy.deepcopy(value)
        else:
            raise _unsupported(program, key)


def _experiments(circuits: list[Any], indices: list[int], shots: int | None) -> list[Experiment]:
    infos = [peek_circuit(c) for c in circuits]
    return [Experiment(infos[i], shots) for i in indices]


def _options(kind: str, params: dict[str, Any]) -> tuple[dict[str, Any], int | None, bool, int | None]:
    """The V2 options of a V1 submission: (options, optimization level, skip transpilation, shots)."""
    options: dict[str, Any] = {}
    level, skip = _transpilation(kind, params, options)
    _resilience(kind, params, options)
    shots = _run_options(kind, params, options)
    _extras(kind, params, options)
    if shots is not None:
        options["default_shots"] = shots
    return options, level, skip, shots


def _sampler(params: dict[str, Any]) -> tuple[list[Any], dict[str, Any], Translation]:
    circuits = _circuits("sampler", params)
    indices = _indices("sampler", params, "circuit_indices", len(circuits), None)
    values = _values("sampler", params, len(indices))
    options, level, skip, shots = _options("sampler", params)
    pubs = [[circuits[i], encode_ndarray(values[k]), shots] for k, i in enumerate(indices)]
    tr = Translation("sampler", "sampler", _experiments(circuits, indices, shots), shots=shots,
                     optimization_level=level, skip_transpilation=skip)  # fmt: skip
    return pubs, options, tr


def _estimator(params: dict[str, Any]) -> tuple[list[Any], dict[str, Any], Translation]:
    circuits = _circuits("estimator", params)
    observables = params.pop("observables", None)
    if isinstance(observables, (dict, str)):
        observables = [observables]
    if not isinstance(observables, list) or not observables:
        raise BadRequest("program 'estimator': 'observables' must be a non-empty list", code="invalid_program_input")
    cidx = _indices("estimator", params, "circuit_indices", len(circuits), None)
    oidx = _indices("estimator", params, "observable_indices", len(observables), len(cidx))
    if len(cidx) != len(oidx):
        raise BadRequest("program 'estimator': one observable per circuit is needed", code="invalid_program_input")
    values = _values("estimator", params, len(cidx))
    options, level, skip, shots = _options("estimator", params)
    terms = [observable_terms(o, f"observable {j}") for j, o in enumerate(observables)]
    pubs = [[circuits[i], terms[oidx[k]], encode_ndarray(values[k]), None] for k, i in enumerate(cidx)]
    tr = Translation("estimator", "estimator", _experiments(circuits, cidx, shots), shots=shots,
                     optimization_level=level, skip_transpilation=skip)  # fmt: skip
    return pubs, options, tr


#: backend.run options that are accepted without a V2 counterpart because they change nothing.
_RUNNER_NOOPS = {"skip_transpilation", "meas_return", "init_num_resets"}


def _runner(program: str, params: dict[str, Any]) -> tuple[list[Any], dict[str, Any], Translation]:
    circuits = _circuits(program, params)
    options: dict[str, Any] = {}
    shots = None
    memory = False
    header: dict[str, Any] = {}
    for key, value in params.items():
        if value is None:
            continue
        if key == "shots":
            shots = _int(program, "shots", value)
        elif key == "memory":
            memory = bool(value)
        elif key == "meas_level":
            if value not in (2, "2", "classified"):
                raise _unsupported(program, "meas_level", f"meas_level {value}: only classified (2) results")
        elif key in ("init_qubits", "rep_delay"):
            _set(options, f"execution.{key}", value)
        elif key in ("seed_simulator", "noise_model"):
            _set(options, f"simulator.{key}", value)
        elif key == "header" and isinstance(value, dict):
            header = value
        elif key == "use_measure_esp" and not value:
            continue
        elif key in _RUNNER_NOOPS:
            continue
        else:
            raise _unsupported(program, key)
    if shots is not None:
        options["default_shots"] = shots
    empty = encode_ndarray(np.zeros(0))
    pubs = [[c, empty, shots] for c in circuits]
    tr = Translation(program, "sampler", _experiments(circuits, list(range(len(circuits))), shots),
                     memory=memory, shots=shots, header=header, optimization_level=1)  # fmt: skip
    return pubs, options, tr
