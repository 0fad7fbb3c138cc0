"""The few pieces of the SDKs' JSON encoding the translation reads or writes, without qiskit.

* `ndarray`: qiskit-ibm-runtime's RuntimeEncoder writes numpy arrays as base64(zlib(np.save)) (or a
  plain list for object arrays); BitArrays, coefficients and parameter values travel that way.
* `peek_circuit`: the circuit's name, widths and registers from the head of a QPY payload (file
  header, circuit header, name, metadata, register table). The proxy never needs the gates, so it
  does not import qiskit (which would tie the proxy to one QPY version and symengine build).
* `observable_terms`: a V1 observable (SparsePauliOp "settings" object, a Pauli label, or a dict)
  as the `{pauli label: real coefficient}` mapping EstimatorV2 pubs take.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import BadRequest

QPY_MAGIC = b"QISKIT"


def decode_ndarray(node: Any) -> np.ndarray:
    """The array in a RuntimeEncoder `{"__type__": "ndarray", "__value__": ...}` object (or a list)."""
    if isinstance(node, dict) and node.get("__type__") == "ndarray":
        node = node.get("__value__")
    if isinstance(node, list):
        return np.asarray(node)
    if not isinstance(node, str):
        raise BadRequest("an ndarray value is neither a list nor base64 text", code="invalid_program_input")
    try:
        raw = base64.b64decode(node)
        try:
            raw = zlib.decompress(raw)
        except zlib.error:
            pass  # RuntimeEncoder compresses by default, but not always
        return np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise BadRequest(f"an ndarray value cannot be decoded: {exc}", code="invalid_program_input") from None


def encode_ndarray(array: np.ndarray) -> dict[str, Any]:
    """RuntimeEncoder's encoding (np.save, zlib, base64), so the upstream decodes it as the SDK's own."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return {"__type__": "ndarray", "__value__": base64.b64encode(zlib.compress(buf.getvalue())).decode("ascii")}


# --------------------------------------------------------------------------------------- QPY


@dataclass
class CircuitInfo:
    """What a V1 answer needs from a circuit: its name and classical registers, in circuit order."""

    name: str
    num_qubits: int
    num_clbits: int
    cregs: list[tuple[str, int]] = field(default_factory=list)
    qregs: list[tuple[str, int]] = field(default_factory=list)
    metadata: Any = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "num_qubits": self.num_qubits, "num_clbits": self.num_clbits,
                "cregs": self.cregs, "qregs": self.qregs}  # fmt: skip

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> CircuitInfo:
        return cls(
            str(doc.get("name", "")), int(doc.get("num_qubits", 0)), int(doc.get("num_clbits", 0)),
            [(str(n), int(s)) for n, s in doc.get("cregs", [])], [(str(n), int(s)) for n, s in doc.get("qregs", [])],
        )  # fmt: skip


def circuit_payload(node: Any) -> bytes | None:
    """The QPY bytes of a `{"__type__": "QuantumCircuit", "__value__": base64(zlib(qpy))}` object."""
    if not (isinstance(node, dict) and node.get("__type__") == "QuantumCircuit"):
        return None
    value = node.get("__value__")
    if not isinstance(value, str):
        return None
    try:
        raw = base64.b64decode(value)
    except ValueError:
        return None
    try:
        return zlib.decompress(raw)
    except zlib.error:
        return raw


def peek_circuit(node: Any) -> CircuitInfo | None:
    """Name, widths and registers of the first circuit of a QPY payload; None if it is not QPY we know.

    Layout (qiskit/qpy/formats.py): FILE_HEADER (`!6sBBBBQ`, + `c` symbolic encoding from v10),
    the program type key (`q`, from v5), CIRCUIT_HEADER_V2 (`!H1cHIIQIQ`, + `I` num_vars from v12),
    name, global phase, metadata (JSON), then the register table: REGISTER_V4 (`!1c?IH?`) + name + one int64 per bit.
    """
    data = circuit_payload(node)
    if data is None or not data.startswith(QPY_MAGIC) or len(data) < 18:
        return None
    try:
        version = data[6]
        pos = 19 if version >= 10 else 18
        if version < 2:
            return None
        if version >= 5:  # a one-byte program type: "q" circuit, "s" schedule block
            if data[pos : pos + 1] != b"q":
                return None
            pos += 1
        head = "!H1cHIIQIQI" if version >= 12 else "!H1cHIIQIQ"
        fields = struct.unpack_from(head, data, pos)
        pos += struct.calcsize(head)
        name_size, _ptype, phase_size, num_qubits, num_clbits, meta_size, num_registers = fields[:7]
        name = data[pos : pos + name_size].decode("utf-8")
        pos += name_size + phase_size
        meta_raw = data[pos : pos + meta_size]
        pos += meta_size
        try:
            metadata = json.loads(meta_raw) if meta_raw else None
        except ValueError:
            metadata = None
        info = CircuitInfo(name, num_qubits, num_clbits, metadata=metadata)
        if version < 4:
            return info  # old register records: the answer falls back to the result's registers
        for _ in range(num_registers):
            kind, _standalone, size, rname_size, in_circuit = struct.unpack_from("!1c?IH?", data, pos)
            pos += struct.calcsize("!1c?IH?")
            rname = data[pos : pos + rname_size].decode("utf-8")
            pos += rname_size + 8 * size
            if in_circuit:
                (info.cregs if kind == b"c" else info.qregs).append((rname, size))
        if pos > len(data) or sum(s for _, s in info.cregs) > num_clbits:
            info.cregs, info.qregs = [], []
        return info
    except (struct.error, UnicodeDecodeError, IndexError):
        return None


# ------------------------------------------------------------------------------- observables

_PHASES = {"": 1, "-": -1, "i": 1j, "-i": -1j, "j": 1j, "-j": -1j}


def _split_phase(label: str) -> tuple[complex, str]:
    for prefix in ("-i", "-j", "i", "j", "-"):
        if label.startswith(prefix):
            return _PHASES[prefix], label[len(prefix) :]
    return 1, label


def observable_terms(node: Any, where: str) -> dict[str, float]:
    """A V1 observable as `{pauli label: coefficient}`; complex coefficients are refused (EstimatorV2 wants real)."""
    terms: dict[str, complex] = {}
    if isinstance(node, str):
        phase, label = _split_phase(node)
        terms[label] = phase
    elif isinstance(node, dict) and node.get("__type__") == "settings":
        cls, value = node.get("__class__"), node.get("__value__") or {}
        if cls == "SparsePauliOp":
            paulis = value.get("data")
            if isinstance(paulis, dict) and paulis.get("__type__") == "settings":
                paulis = (paulis.get("__value__") or {}).get("data")
            if isinstance(paulis, str):
                paulis = [paulis]
            coeffs = value.get("coeffs")
            values = decode_ndarray(coeffs) if coeffs is not None else np.ones(len(paulis or []))
            if not isinstance(paulis, list) or len(values) != len(paulis):
                raise BadRequest(f"{where}: a SparsePauliOp without matching labels and coefficients",
                                 code="invalid_program_input")  # fmt: skip
            for label, coeff in zip(paulis, values.tolist(), strict=True):
                phase, bare = _split_phase(str(label))
                terms[bare] = terms.get(bare, 0) + phase * complex(coeff)
        elif cls == "Pauli":
            phase, label = _split_phase(str(value.get("data", "")))
            terms[label] = phase
        else:
            raise BadRequest(f"{where}: observables of type {cls} have no EstimatorV2 encoding the proxy knows; "
                             "send a SparsePauliOp", code="unsupported_program_option")  # fmt: skip
    elif isinstance(node, dict) and node and all(isinstance(k, str) for k in node) and "__type__" not in node:
        for label, coeff in node.items():
            terms[label] = complex(coeff[0], coeff[1]) if isinstance(coeff, list) else complex(coeff)
    else:
        raise BadRequest(f"{where}: an observable the proxy cannot read", code="invalid_program_input")
    out: dict[str, float] = {}
    for label, c in terms.items():
        if abs(c.imag) > 1e-12:
            raise BadRequest(
                f"{where}: observable term {label} has a complex coefficient {c}; EstimatorV2 takes Hermitian "
                "observables with real coefficients", code="unsupported_program_option",
            )  # fmt: skip
        if not label or set(label) - set("IXYZ"):
            raise BadRequest(f"{where}: {label!r} is not a Pauli label", code="invalid_program_input")
        out[label] = float(c.real)
    return out
