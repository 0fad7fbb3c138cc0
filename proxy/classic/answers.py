"""Answer fix-ups: reshape new-API answers into what Classic callers read.

A row opts in by name (`answer="job"`); everything else streams through untouched. A fix-up
declares when it needs the body (`when`), so only those answers are buffered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .. import fastjson
from ..call import Call, Reply

Fix = Callable[[Call, int, bytes], tuple[int, bytes]]

#: Tags the proxy adds to each submission to find it again (proxy/submissions.py); callers never see them.
MARKER_PREFIX = "qcp:req:"


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


def unmarked(tags: Any) -> Any:
    """`tags` without the proxy's submission markers (anything else unchanged)."""
    if not isinstance(tags, list):
        return tags
    return [t for t in tags if not (isinstance(t, str) and t.startswith(MARKER_PREFIX))]


def job_hgp(call: Call, job: dict[str, Any]) -> dict[str, Any]:
    """Classic job objects name their instance; the provider crashes without hub/group/project."""
    if "tags" in job:
        job["tags"] = unmarked(job["tags"])
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


def tag_list(call: Call, status: int, body: bytes) -> tuple[int, bytes]:
    """GET /v1/tags lists every tag in use, the proxy's markers included: hide those."""
    doc = _load(body)
    if not isinstance(doc, dict) or not isinstance(doc.get("tags"), list):
        return status, body
    doc["tags"] = unmarked(doc["tags"])
    return status, _dump(doc)


def workloads(call: Call, status: int, body: bytes) -> tuple[int, bytes]:
    """Workloads (jobs and sessions) carry their jobs' tags: without the markers."""
    doc = _load(body)
    if not isinstance(doc, dict) or not isinstance(doc.get("workloads"), list):
        return status, body
    for w in doc["workloads"]:
        if isinstance(w, dict) and "tags" in w:
            w["tags"] = unmarked(w["tags"])
    return status, _dump(doc)


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
    """Set by identity: a runtime client below COMPAT_RESULTS_BELOW, or one that sent no version."""
    return 200 <= status < 300 and call.compat_results


def queue_status(call: Call, status: int, body: bytes) -> tuple[int, bytes]:
    """The provider reads Classic's `lengthQueue`; the new API says `length_queue`."""
    doc = _load(body)
    if isinstance(doc, dict) and "length_queue" in doc and "lengthQueue" not in doc:
        doc["lengthQueue"] = doc["length_queue"]
        return status, _dump(doc)
    return status, body


ANSWERS: dict[str, Answer] = {
    "device_names": Answer(device_names),
    "job": Answer(job),
    "job_list": Answer(job_list),
    "job_created": Answer(job_created),
    "session_created": Answer(session_created),
    "tag_list": Answer(tag_list),
    "workloads": Answer(workloads),
    "metrics": Answer(metrics),
    "defaults": Answer(defaults, _defaults_when),
    "results": Answer(results, _old_runtime),
    "queue_status": Answer(queue_status),
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


#: (`job_type`, for /facade/v1/jobs/{id}/type, is the pipeline's: it asks proxy/programs/.)
# -- qiskit-ibmq-provider 0.19/0.20: the /Network/{hub}/Groups/{group}/Projects/{project} surface --
#: Fetch one new-API path for the call's instance: (status, body). The pipeline provides it.
Fetch = Callable[[Call, str], Awaitable[tuple[int, bytes]]]


async def device_configs(call: Call, fetch: Fetch) -> Reply:
    """`devices/v/1` was every backend's full configuration in one call; the new API has one per backend."""
    status, body = await fetch(call, "/v1/backends")
    doc = _load(body)
    if status != 200 or not isinstance(doc, dict):
        return Reply(status, classic_error(call, status, body) if status >= 400 else body)
    names = [d["name"] if isinstance(d, dict) else d for d in doc.get("devices") or []]
    got = await asyncio.gather(*(fetch(call, f"/v1/backends/{n}/configuration") for n in names if isinstance(n, str)))
    configs = [c for st, raw in got if st == 200 and isinstance(c := _load(raw), dict)]
    return Reply.json(configs)


async def qobj_jobs(call: Call, body: bytes) -> Reply:
    """Qobj jobs of the retired service: the new API holds none, so the honest list is empty."""
    return Reply.json([])


LOCAL = {"usage": usage, "qobj_jobs": qobj_jobs}
