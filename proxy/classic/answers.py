"""Answer fix-ups: reshape new-API answers into what Classic callers read.

A row opts in by name (`answer="job"`); everything else streams through untouched. A fix-up
declares when it needs the body (`when`), so only those answers are buffered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import fastjson
from ..call import Call, Reply

Fix = Callable[[Call, int, bytes], tuple[int, bytes]]


def _ok(call: Call, status: int) -> bool:
    return 200 <= status < 300


@dataclass(frozen=True)
class Answer:
    fix: Fix
    when: Callable[[Call, int], bool] = _ok


def _load(body: bytes) -> Any:
    try:
        return fastjson.loads(body)
    except ValueError:
        return None


def _dump(doc: Any) -> bytes:
    return fastjson.dumps(doc)


def job_hgp(call: Call, job: dict[str, Any]) -> dict[str, Any]:
    """Classic job objects name their instance; the provider crashes without hub/group/project."""
    if call.instance:
        hub, group, project = call.instance.split("/")
        job.setdefault("hub", hub)
        job.setdefault("group", group)
        job.setdefault("project", project)
    state = job.get("state")
    if "status" not in job and isinstance(state, dict) and "status" in state:
        job["status"] = state["status"]
    return job


def device_names(call: Call, status: int, body: bytes) -> tuple[int, bytes]:
    doc = _load(body)
    if not isinstance(doc, dict) or not isinstance(doc.get("devices"), list):
        return status, body
    names = [d["name"] if isinstance(d, dict) else d for d in doc["devices"]]
    return status, _dump({"devices": [n for n in names if isinstance(n, str)]})


def job(call: Call, status: int, body: bytes) -> tuple[int, bytes]:
    doc = _load(body)
    if not isinstance(doc, dict):
        return status, body
    if isinstance(doc.get("id"), str):
        call.seen_ids.append(doc["id"])
    return status, _dump(job_hgp(call, doc))


def job_list(call: Call, status: int, body: bytes) -> tuple[int, bytes]:
    doc = _load(body)
    if not isinstance(doc, dict) or not isinstance(doc.get("jobs"), list):
        return status, body
    doc["jobs"] = [job_hgp(call, j) if isinstance(j, dict) else j for j in doc["jobs"]]
    call.seen_ids.extend(j["id"] for j in doc["jobs"] if isinstance(j, dict) and isinstance(j.get("id"), str))
    doc.setdefault("count", len(doc["jobs"]))
    return status, _dump(doc)


def job_created(call: Call, status: int, body: bytes) -> tuple[int, bytes]:
    return job(call, status, body)


def session_created(call: Call, status: int, body: bytes) -> tuple[int, bytes]:
    doc = _load(body)
    if isinstance(doc, dict) and isinstance(doc.get("id"), str):
        call.seen_ids.append(doc["id"])
    return status, body


def metrics(call: Call, status: int, body: bytes) -> tuple[int, bytes]:
    """Legacy SDKs read usage.quantum_seconds, which the new API renamed (2026-03-15)."""
    doc = _load(body)
    if not isinstance(doc, dict):
        return status, body
    usage = doc.get("usage")
    if isinstance(usage, dict) and "qpu_charge_time_seconds" in usage:
        usage.setdefault("quantum_seconds", usage["qpu_charge_time_seconds"])
        usage.setdefault("seconds", usage["qpu_charge_time_seconds"])
    return status, _dump(doc)


def defaults(call: Call, status: int, body: bytes) -> tuple[int, bytes]:
    """Every legacy SDK builds its Target from defaults; a 404 breaks all of them, `{}` does not."""
    if status == 404:
        return 200, b"{}"
    return status, body


def _defaults_when(call: Call, status: int) -> bool:
    return status == 404


#: qiskit-ibm-runtime below this cannot decode today's SamplerV2 results (legacy-clients.md §5.4).
COMPAT_RESULTS_BELOW = (0, 25)


def _compat(node: Any) -> Any:
    """SamplerPubResult -> PubResult, and DataBin gets the `field_types` old decoders require."""
    if isinstance(node, list):
        return [_compat(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _compat(v) for k, v in node.items()}
    kind = out.get("__type__")
    if kind == "SamplerPubResult":
        out["__type__"] = "PubResult"
    elif kind == "DataBin" and isinstance(out.get("__value__"), dict):
        value = out["__value__"]
        if "field_types" not in value:
            fields = value.get("fields") or {}
            value["field_types"] = [
                (fields.get(name) or {}).get("__type__", "object") if isinstance(fields.get(name), dict) else "object"
                for name in value.get("field_names") or []
            ]
    return out


def results(call: Call, status: int, body: bytes) -> tuple[int, bytes]:
    doc = _load(body)
    if doc is None:
        return status, body
    return status, _dump(_compat(doc))


def _old_runtime(call: Call, status: int) -> bool:
    return (
        200 <= status < 300
        and call.sdk.startswith("qiskit_ibm_runtime")
        and bool(call.sdk_version)
        and call.sdk_version < COMPAT_RESULTS_BELOW
    )


ANSWERS: dict[str, Answer] = {
    "device_names": Answer(device_names),
    "job": Answer(job),
    "job_list": Answer(job_list),
    "job_created": Answer(job_created),
    "session_created": Answer(session_created),
    "metrics": Answer(metrics),
    "defaults": Answer(defaults, _defaults_when),
    "results": Answer(results, _old_runtime),
}


def classic_error(call: Call, status: int, body: bytes) -> bytes:
    """Add the Classic `error` object next to the new `errors` list, so old SDKs show the message."""
    doc = _load(body)
    if not isinstance(doc, dict) or "error" in doc:
        return body
    errors = doc.get("errors")
    first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
    message = first.get("message") or doc.get("message") or f"upstream answered {status}"
    code: Any = first.get("code", status)
    if status == 404 and call.route is not None and "{job_id}" in call.route.template:
        code = 3250  # what qiskit-ibm-provider recognizes as "job not found"
        message = f"{message} Error code: 3250."
    doc["error"] = {"message": message, "code": code, "status": status}
    return _dump(doc)


# ------------------------------------------------------------------ local answers for legacy SDKs


async def usage(call: Call, body: bytes) -> Reply:
    """Classic /usage: SDK 0.40.1 checks pending-job quota before each open-plan submit."""
    return Reply.json(
        {
            "byInstance": [{"instance": call.instance, "pendingJobs": 0, "maxPendingJobs": 1000}],
            "note": "synthesized by qiskit-classic-proxy: the new API has no per-instance job quota",
        }
    )


async def job_type(call: Call, body: bytes) -> Reply:
    """qiskit-ibm-provider asks this before reading results; everything is a Runtime job now."""
    return Reply.json({"type": "RUNTIME"})


LOCAL = {"usage": usage, "job_type": job_type}
