"""SamplerV2 / EstimatorV2 results -> the answer the V1 client decodes. Pure.

* V1 Sampler: `{"quasi_dists": [{"0x3": 0.5, ...}], "metadata": [{"shots": n, ...}]}` (hex keys:
  qiskit's QuasiDistribution reads them as integers).
* V1 Estimator: `{"values": [...], "metadata": [{"variance": v, "shots": n}]}`; variance from the
  V2 standard error: std_error = sqrt(variance / shots).
* circuit-runner / qasm3-runner: a qiskit `Result` dict (hex `counts`, `memory` when asked,
  `header` with `creg_sizes`, `memory_slots`, `name`).

Counts come from the V2 BitArrays: one per classical register, bytes big-endian. Registers join
in circuit order, later registers in higher bits (qiskit's clbit order).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import numpy as np

from ..errors import UpstreamError
from .encoding import CircuitInfo, decode_ndarray
from .translate import Translation


class RebuildError(UpstreamError):
    """The V2 result is not one the proxy can turn into the V1 answer."""

    code = "result_translation_failed"


def _value(node: Any) -> Any:
    """The `__value__` of a RuntimeEncoder object (or the node itself)."""
    return node.get("__value__") if isinstance(node, dict) and "__type__" in node else node


def pub_results(body: bytes) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(the pubs' `{"fields": {name: node}, "names": [...], "metadata": ...}`, result metadata)."""
    try:
        doc = json.loads(body)
    except ValueError:
        raise RebuildError("the new API's job result is not JSON") from None
    top = _value(doc)
    if not isinstance(top, dict) or not isinstance(top.get("pub_results"), list):
        raise RebuildError("the new API's job result has no pub_results")
    out = []
    for i, pub in enumerate(top["pub_results"]):
        value = _value(pub)
        if not isinstance(value, dict) or not isinstance(_value(value.get("data")), dict):
            raise RebuildError(f"pub result {i} of the new API's job result has no data")
        data = _value(value["data"])
        fields = data.get("fields")
        if not isinstance(fields, dict):  # older encodings put the fields at the top of the DataBin
            fields = {k: v for k, v in data.items() if k not in ("field_names", "field_types", "shape")}
        names = data.get("field_names") or list(fields)
        out.append({"fields": fields, "names": list(names), "metadata": value.get("metadata") or {}})
    return out, top.get("metadata") or {}


def bit_values(node: Any) -> tuple[np.ndarray | list[int], int]:
    """Per-shot integer values of one BitArray, and its bit count."""
    value = _value(node)
    if not isinstance(value, dict) or "array" not in value or "num_bits" not in value:
        raise RebuildError("a register in the result is not a BitArray")
    arr = np.asarray(decode_ndarray(value["array"]), dtype=np.uint8)
    num_bits = int(value["num_bits"])
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1) if num_bits else arr.reshape(-1, 0)
    arr = arr.reshape(-1, arr.shape[-1])  # a broadcast pub: all its shots together
    nbytes = arr.shape[1]
    if nbytes <= 8:
        vals = np.zeros(arr.shape[0], dtype=np.uint64)
        for j in range(nbytes):
            vals = (vals << np.uint64(8)) | arr[:, j].astype(np.uint64)
        if num_bits < 64:
            vals &= np.uint64((1 << num_bits) - 1)
        return vals, num_bits
    mask = (1 << num_bits) - 1
    return [int.from_bytes(row.tobytes(), "big") & mask for row in arr], num_bits


def _registers(pub: dict[str, Any], info: CircuitInfo | None) -> list[tuple[str, Any, int]]:
    """(name, per-shot values, bits) of the pub's registers, in circuit order."""
    fields = pub["fields"]
    names = [n for n in pub["names"] if n in fields]
    if info is not None and info.cregs and {n for n, _ in info.cregs} <= set(fields):
        names = [n for n, _ in info.cregs]
    out = []
    for name in names:
        node = fields[name]
        if isinstance(_value(node), dict) and "num_bits" in _value(node):
            vals, bits = bit_values(node)
            out.append((name, vals, bits))
    return out


def joined(regs: list[tuple[str, Any, int]]) -> tuple[np.ndarray | list[int], int]:
    """Per-shot values of all registers joined (first register in the low bits): a uint64 array,
    or Python ints beyond 63 bits."""
    if not regs:
        return np.zeros(0, dtype=np.uint64), 0
    total = sum(b for _, _, b in regs)
    if total < 64:
        acc = np.zeros(len(regs[0][1]), dtype=np.uint64)
        offset = 0
        for _, vals, bits in regs:
            acc |= np.asarray(vals, dtype=np.uint64) << np.uint64(offset)
            offset += bits
        return acc, total
    out = [0] * len(regs[0][1])
    offset = 0
    for _, vals, bits in regs:
        for i, v in enumerate(vals):
            out[i] |= int(v) << offset
        offset += bits
    return out, total


def tally(values: np.ndarray | list[int], memory: bool = False) -> tuple[dict[str, int], list[str] | None]:
    """Hex counts (and the per-shot hex memory when asked)."""
    arr = values if isinstance(values, np.ndarray) else np.asarray(values, dtype=object)
    if arr.size == 0:
        return {}, [] if memory else None
    uniq, inverse, freq = np.unique(arr, return_inverse=True, return_counts=True)
    keys = [hex(int(u)) for u in uniq.tolist()]
    counts = dict(zip(keys, freq.tolist(), strict=True))
    return counts, (np.asarray(keys, dtype=object)[inverse.reshape(-1)].tolist() if memory else None)


def rebuild(tr: Translation, body: bytes, job_id: str) -> bytes:
    """The V1-shaped answer for the V2 result `body` of the translated job `job_id`."""
    pubs, meta = pub_results(body)
    if tr.experiments and len(pubs) != len(tr.experiments):
        raise RebuildError(f"the result has {len(pubs)} pub results for {len(tr.experiments)} experiments")
    if tr.kind == "estimator":
        doc: Any = _estimator(tr, pubs)
    elif tr.kind == "sampler":
        doc = _sampler(tr, pubs)
    else:
        doc = _result(tr, pubs, meta, job_id)
    return json.dumps(doc, separators=(",", ":")).encode()


def _info(tr: Translation, i: int) -> CircuitInfo | None:
    return tr.experiments[i].circuit if i < len(tr.experiments) else None


def _sampler(tr: Translation, pubs: list[dict[str, Any]]) -> dict[str, Any]:
    dists, metas = [], []
    for i, pub in enumerate(pubs):
        values, _ = joined(_registers(pub, _info(tr, i)))
        shots = len(values)
        dists.append({k: c / shots for k, c in tally(values)[0].items()} if shots else {})
        info = _info(tr, i)
        metas.append({"shots": shots, "header_metadata": (info.metadata if info else None) or {},
                      "circuit_metadata": pub["metadata"].get("circuit_metadata", {})})  # fmt: skip
    return {"quasi_dists": dists, "metadata": metas}


def _scalar(node: Any, what: str) -> float:
    if node is None:
        raise RebuildError(f"an estimator pub result has no {what}")
    arr = decode_ndarray(node) if isinstance(node, (dict, str)) else np.asarray(node)
    return float(np.asarray(arr, dtype=float).reshape(-1)[0])


def _estimator(tr: Translation, pubs: list[dict[str, Any]]) -> dict[str, Any]:
    values, metas = [], []
    for i, pub in enumerate(pubs):
        ev = _scalar(pub["fields"].get("evs"), "evs")
        std = _scalar(pub["fields"]["stds"], "stds") if pub["fields"].get("stds") is not None else 0.0
        shots = pub["metadata"].get("shots") or (tr.experiments[i].shots if i < len(tr.experiments) else None)
        shots = shots or tr.shots
        variance = std * std * shots if shots else std * std
        values.append(ev)
        metas.append({"variance": variance, "shots": shots or 0, "std_error": std})
    return {"values": values, "metadata": metas}


def _result(tr: Translation, pubs: list[dict[str, Any]], meta: dict[str, Any], job_id: str) -> dict[str, Any]:
    experiments = []
    for i, pub in enumerate(pubs):
        info = _info(tr, i)
        regs = _registers(pub, info)
        values, total = joined(regs)
        creg_sizes = [[n, b] for n, _, b in regs]
        slots = info.num_clbits if info and info.num_clbits >= total else total
        counts, memory = tally(values, tr.memory)
        data: dict[str, Any] = {"counts": counts}
        if memory is not None:
            data["memory"] = memory
        header: dict[str, Any] = {
            **tr.header,
            "name": info.name if info else f"circuit-{i}",
            "memory_slots": slots,
            "creg_sizes": creg_sizes,
            "clbit_labels": [[n, j] for n, _, b in regs for j in range(b)],
        }
        if info:
            header["n_qubits"] = info.num_qubits
            header["qreg_sizes"] = [[n, s] for n, s in info.qregs]
            header["qubit_labels"] = [[n, j] for n, s in info.qregs for j in range(s)]
            header["metadata"] = info.metadata or {}
        experiments.append({"shots": len(values), "success": True, "status": "DONE", "meas_level": 2,
                            "data": data, "header": header})  # fmt: skip
    return {
        "backend_name": tr.backend,
        "backend_version": "",
        "qobj_id": "",
        "job_id": job_id,
        "success": True,
        "status": "COMPLETED",
        "date": datetime.now(timezone.utc).isoformat(),
        "header": {"backend_name": tr.backend},
        "results": experiments,
        "metadata": {"translated_by": "qiskit-classic-proxy", "from": "sampler", "v2_metadata": meta},
    }
