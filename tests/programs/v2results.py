"""Build SamplerV2/EstimatorV2 result bodies the way qiskit-ibm-runtime's RuntimeEncoder writes them
(np.save + zlib + base64 for arrays, BitArray bytes big-endian), for the emulator to serve."""

from __future__ import annotations

import base64
import io
import json
import zlib
from typing import Any

import numpy as np


def ndarray(a: np.ndarray) -> dict[str, Any]:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return {"__type__": "ndarray", "__value__": base64.b64encode(zlib.compress(buf.getvalue())).decode()}


def bit_array(values: list[int], num_bits: int) -> dict[str, Any]:
    nbytes = max(1, (num_bits + 7) // 8)
    rows = [list(v.to_bytes(nbytes, "big")) for v in values]
    array = ndarray(np.array(rows, dtype=np.uint8).reshape(len(values), nbytes))
    return {"__type__": "BitArray", "__value__": {"array": array, "num_bits": num_bits}}


def sampler_result(pubs: list[list[tuple[str, list[int], int]]]) -> bytes:
    """pubs: per pub, its registers as (name, per-shot values, bits), in the DataBin's field order."""
    out = []
    for regs in pubs:
        fields = {name: bit_array(vals, bits) for name, vals, bits in regs}
        names = [r[0] for r in regs]
        data = {"__type__": "DataBin", "__value__": {"field_names": names, "shape": [], "fields": fields}}
        out.append({"__type__": "SamplerPubResult", "__value__": {"data": data, "metadata": {"circuit_metadata": {}}}})
    doc = {"__type__": "PrimitiveResult", "__value__": {"pub_results": out, "metadata": {"version": 2}}}
    return json.dumps(doc).encode()


def estimator_result(pubs: list[tuple[float, float]], shots: int | None = None) -> bytes:
    out = []
    for ev, std in pubs:
        fields = {"evs": ndarray(np.array(ev)), "stds": ndarray(np.array(std))}
        data = {"__type__": "DataBin", "__value__": {"field_names": ["evs", "stds"], "shape": [], "fields": fields}}
        meta: dict[str, Any] = {"target_precision": 0.0}
        if shots:
            meta["shots"] = shots
        out.append({"__type__": "PubResult", "__value__": {"data": data, "metadata": meta}})
    return json.dumps({"__type__": "PrimitiveResult", "__value__": {"pub_results": out, "metadata": {}}}).encode()
