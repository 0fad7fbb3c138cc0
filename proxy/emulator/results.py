"""The new API's result encoding, and answers built without qiskit.

Why apart from simulate.py: this needs only numpy, so an emulator without the `emulator` extra
still answers a V2 job with the right layout. `canned` reads each pub's classical registers from
the QPY header (`peek_cregs`), its binding shape from the parameter values and its shots, and
answers every bit 0 / every expectation value 0; simulate.py uses it too for submissions it does
not simulate. `nd`, `databin`, `primitive_result` write RuntimeEncoder JSON
(`data/sampler_v2_result.json` is an example).
"""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from typing import Any

import numpy as np

#: The service's default when neither the pub nor `options.default_shots` says (IBM docs).
DEFAULT_SHOTS = 4096


class SimulationError(ValueError):
    """The pubs cannot be run; the job ends Failed with this text as its reason."""


def b64(data: bytes) -> str:
    return base64.standard_b64encode(data).decode("ascii")


def unb64(value: Any, what: str) -> bytes:
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



def nd(arr: Any) -> dict[str, Any]:
    """RuntimeEncoder's ndarray: base64(zlib(np.save(arr)))."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(arr), allow_pickle=False)
    return {"__type__": "ndarray", "__value__": b64(zlib.compress(buf.getvalue()))}


def databin(fields: dict[str, Any], shape: tuple[int, ...]) -> dict[str, Any]:
    return {"__type__": "DataBin", "__value__": {"field_names": list(fields), "shape": list(shape), "fields": fields}}


def primitive_result(pub_results: list[dict[str, Any]]) -> bytes:
    doc = {
        "__type__": "PrimitiveResult",
        "__value__": {"pub_results": pub_results, "metadata": {"execution": {"execution_spans": []}, "version": 2}},
    }
    return json.dumps(doc, separators=(",", ":")).encode()



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
        data = unb64(node.get("__value__"), "QuantumCircuit")
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
            arr = np.load(io.BytesIO(unb64(node["__value__"], "ndarray")), allow_pickle=False)
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
                name: {"__type__": "BitArray", "__value__": {"array": nd(zero_bits(shape, shots, w)), "num_bits": w}}
                for name, w in cregs
            }
            value = {"data": databin(fields, shape), "metadata": {"circuit_metadata": {}}}
            out.append({"__type__": "SamplerPubResult", "__value__": value})
        else:
            obs_shape = _observables_shape(pub[1] if len(pub) > 1 else None)
            try:
                shape = np.broadcast_shapes(obs_shape, _values_shape(pub[2] if len(pub) > 2 else None))
            except ValueError as exc:
                raise SimulationError(f"observables and parameter values do not broadcast: {exc}") from exc
            zeros = nd(np.zeros(shape))
            fields = {"evs": zeros, "stds": zeros, "ensemble_standard_error": zeros}
            meta = {"target_precision": 0.0, "shots": default_shots, "circuit_metadata": {}}
            out.append({"__type__": "PubResult", "__value__": {"data": databin(fields, shape), "metadata": meta}})
    return primitive_result(out)
