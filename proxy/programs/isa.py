"""The `[transpile]` extra: transpile a translated job's non-ISA circuits for the backend's target.

Old V1 code submitted abstract circuits and relied on server-side transpilation
(`optimization_level`); the new API runs only circuits written for the target's instruction set.
With qiskit installed (`pip install 'qiskit-classic-proxy[transpile]'`) the proxy decodes each
circuit (QPY), checks it against a Target built from the backend's configuration (basis gates,
coupling map), and transpiles those that do not fit with qiskit's preset pass manager at the V1
optimization level; Estimator observables follow the layout. Without qiskit nothing here runs
and the upstream's ISA error reaches the caller with a hint naming the extra (`isa_hint`).
"""

from __future__ import annotations

import base64
import io
import logging
import zlib
from typing import Any

from ..errors import BadRequest
from .encoding import circuit_payload, peek_circuit
from .translate import Translation

try:
    from qiskit import qpy
    from qiskit.circuit import QuantumCircuit
    from qiskit.circuit.library import get_standard_gate_name_mapping
    from qiskit.quantum_info import SparsePauliOp
    from qiskit.transpiler import CouplingMap, Target, generate_preset_pass_manager

    AVAILABLE = True
except ImportError:  # the extra is not installed
    AVAILABLE = False

log = logging.getLogger("qiskit_classic_proxy.programs")

#: Instructions that are always there and need no target entry.
_FREE = frozenset({"barrier"})


def target_from_configuration(conf: dict[str, Any]) -> Target:
    """A Target from the new API's backend configuration (gate names, qubit count, coupling map)."""
    known = get_standard_gate_name_mapping()
    basis = [g for g in conf.get("basis_gates") or [] if g in known]
    for extra in ("measure", "delay", "reset"):
        if extra not in basis:
            basis.append(extra)
    edges = conf.get("coupling_map") or None
    num_qubits = int(conf.get("n_qubits") or conf.get("num_qubits") or 0)
    return Target.from_configuration(
        basis_gates=basis, num_qubits=num_qubits, coupling_map=CouplingMap(edges) if edges else None
    )


def is_isa(circuit: QuantumCircuit, target: Target) -> bool:
    if circuit.num_qubits > target.num_qubits:
        return False
    for inst in circuit.data:
        name = inst.operation.name
        if name in _FREE:
            continue
        qargs = tuple(circuit.find_bit(q).index for q in inst.qubits)
        if not target.instruction_supported(name, qargs):
            return False
    return True


def _load(node: Any, i: int) -> QuantumCircuit | None:
    """The circuit, or None when this qiskit cannot read it (QPY version, symengine build...): it
    then goes as it came, and the new API judges it."""
    data = circuit_payload(node)
    try:
        return qpy.load(io.BytesIO(data))[0] if data is not None else None
    except Exception as exc:  # qpy raises many kinds
        log.warning("circuit %d not transpiled: qiskit cannot decode it (%s: %s)", i, type(exc).__name__, exc)
        return None


def _dump(circuit: QuantumCircuit) -> dict[str, Any]:
    buf = io.BytesIO()
    qpy.dump(circuit, buf, version=qpy.QPY_COMPATIBILITY_VERSION)
    return {"__type__": "QuantumCircuit", "__value__": base64.b64encode(zlib.compress(buf.getvalue())).decode()}


def transpile_pubs(body: dict[str, Any], tr: Translation, conf: dict[str, Any]) -> int:
    """Transpile the pubs' non-ISA circuits in place; returns how many were transpiled."""
    target = target_from_configuration(conf)
    level = tr.optimization_level if tr.optimization_level in (0, 1, 2, 3) else 1
    pm = generate_preset_pass_manager(optimization_level=level, target=target)
    done: dict[str, dict[str, Any]] = {}  # the same circuit (V1 circuit_indices) once
    layouts: dict[str, Any] = {}
    count = 0
    for i, pub in enumerate(body["params"]["pubs"]):
        key = str(pub[0].get("__value__"))[:4096] + str(len(str(pub[0].get("__value__"))))
        if key not in done:
            circuit = _load(pub[0], i)
            if circuit is None or is_isa(circuit, target):
                done[key], layouts[key] = pub[0], None
            else:
                try:
                    isa = pm.run(circuit)
                except Exception as exc:
                    raise BadRequest(f"circuit {i} cannot be transpiled for {tr.backend}: {exc}",
                                     code="transpile_failed") from None  # fmt: skip
                done[key], layouts[key] = _dump(isa), (isa.layout, isa.num_qubits)
                count += 1
        if layouts[key] is not None:
            pub[0] = done[key]
            if tr.kind == "estimator" and isinstance(pub[1], dict):
                layout, width = layouts[key]
                op = SparsePauliOp.from_list(list(pub[1].items())).apply_layout(layout, width)
                pub[1] = {str(p): float(c.real) for p, c in zip(op.paulis.to_labels(), op.coeffs, strict=True)}
            if i < len(tr.experiments):
                tr.experiments[i].circuit = peek_circuit(pub[0]) or tr.experiments[i].circuit
    tr.transpiled = count
    return count
