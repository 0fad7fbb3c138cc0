"""The new Qiskit Runtime REST API (`/api/v1/...`): route table, validation and answer shapes.

Each handler gets a `Ctx` that the pipeline in `app.py` has already authenticated (bearer,
Service-CRN, IBM-API-Version, no legacy leaks) and returns a `Reply`. Shapes follow
`shared/spec/qiskit-runtime-openapi.json` and the live bodies quoted in `new-api.md`;
version-gated shapes follow the IBM changelog (`new-api.md` §8).

Why one long module: it is the emulated API's route table plus one handler per endpoint, read
side by side with the spec; splitting by resource would scatter the shared validation helpers.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from .config import KNOWN_API_VERSIONS, fixture_bytes
from .simulate import SimulationError, simulate
from .state import (
    ApiError,
    Emulator,
    InstanceState,
    Job,
    Session,
    TokenInfo,
    iso,
    now_utc,
)

PLAN_ID = "00000000-0000-0000-0000-0000000premium"
PLAN_NAME = "premium"
MAX_TAGS = 8
MAX_TAG_LEN = 86
MAX_COST = 10_800
MAX_SESSION_TTL = 28_800
LOG_LEVELS = frozenset({"critical", "error", "warning", "info", "debug"})
#: The real service's refusal of V1 primitive jobs since 2024-08-15 (IBM error code 1513).
V1_REFUSED = (
    "The V1 Primitives SamplerV1 and EstimatorV1 are no longer supported. Please use SamplerV2 and "
    "EstimatorV2 instead. For more information see https://docs.quantum.ibm.com/migration-guides/v2-primitives"
)
#: Classic programs behind backend.run(): gone on the new platform, refused with the same code.
RUNNER_REFUSED = (
    "The {program} program is no longer supported. Please use SamplerV2 instead. For more information "
    "see https://docs.quantum.ibm.com/migration-guides/v2-primitives"
)
RETIRED_RUNNERS = frozenset({"circuit-runner", "qasm3-runner"})

JOB_FIELDS = frozenset(
    {
        "program_id", "backend", "runtime", "tags", "log_level", "cost", "session_id", "params",
        "private", "calibration_id", "start_session", "session_time", "remote_storage",
    }
)  # fmt: skip
SESSION_FIELDS = frozenset({"mode", "backend", "backend_name", "max_ttl", "interactive_ttl", "active_ttl", "instance"})
#: Classic-only body fields per route, rejected with a message naming them.
LEGACY_BODY_FIELDS: dict[str, tuple[str, ...]] = {
    "POST /v1/jobs": ("hub", "group", "project"),
    "POST /v1/sessions": ("max_session_ttl",),
}


# ---------------------------------------------------------------------------- plumbing
@dataclass
class Reply:
    """A complete HTTP answer (the pipeline may still drop or truncate it on the wire)."""

    status: int = 200
    body: bytes = b""
    content_type: str | None = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def json_reply(obj: Any, status: int = 200) -> Reply:
    return Reply(status, json.dumps(obj, separators=(",", ":")).encode())


def text_reply(text: str | bytes, status: int = 200, content_type: str = "text/plain; charset=utf-8") -> Reply:
    return Reply(status, text.encode() if isinstance(text, str) else text, content_type)


def no_content() -> Reply:
    return Reply(204, b"", None)


@dataclass
class Ctx:
    """One authenticated request, as handlers see it."""

    em: Emulator
    method: str
    path: str  # without the /api prefix
    params: dict[str, str]
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    base_url: str
    api_version: str
    token: TokenInfo | None = None
    inst: InstanceState | None = None

    @property
    def instance(self) -> InstanceState:
        assert self.inst is not None, "route declared crn=False but needs an instance"
        return self.inst

    @property
    def user_id(self) -> str:
        return self.token.user_id if self.token else "IBMid-anonymous"


Handler = Callable[[Ctx], Reply]


@dataclass(frozen=True)
class Route:
    method: str
    template: str
    handler: Handler
    auth: bool = True
    crn: bool = True
    #: The route reads a JSON body (Content-Type is then checked, and malformed JSON is a 400).
    body: bool = False
    regex: re.Pattern[str] = field(default=re.compile(""), compare=False)


def invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_parameter", message)


# ---------------------------------------------------------------------------- query helpers
def q_one(ctx: Ctx, name: str) -> str | None:
    values = ctx.query.get(name)
    return values[-1] if values else None


def q_int(ctx: Ctx, name: str, default: int, lo: int, hi: int | None = None) -> int:
    raw = q_one(ctx, name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise invalid(f"Query parameter '{name}' must be an integer, got {raw!r}.") from None
    if value < lo or (hi is not None and value > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
        raise invalid(f"Query parameter '{name}' must be {bound}, got {value}.")
    return value


def q_bool(ctx: Ctx, name: str, *, lenient: bool = False) -> bool | None:
    """'true'/'false' only (Python's 'False' is a Classic-client habit the proxy must fix)."""
    raw = q_one(ctx, name)
    if raw is None:
        return None
    if lenient:
        raw = raw.lower()
    if raw == "true":
        return True
    if raw == "false":
        return False
    raise invalid(f"Query parameter '{name}' must be 'true' or 'false', got {raw!r}.")


def parse_dt(value: str, what: str) -> datetime:
    try:
        dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace(" ", "+"))
    except ValueError:
        raise invalid(f"{what} must be an ISO 8601 date-time, got {value!r}.") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def q_dt(ctx: Ctx, name: str) -> datetime | None:
    raw = q_one(ctx, name)
    return None if raw in (None, "") else parse_dt(raw, f"Query parameter '{name}'")


# ---------------------------------------------------------------------------- body helpers
def body_object(ctx: Ctx, *, required: bool = True) -> dict[str, Any]:
    if ctx.body is None:
        if required:
            raise invalid("A JSON object request body is required.")
        return {}
    if not isinstance(ctx.body, dict):
        raise invalid("The request body must be a JSON object.")
    return ctx.body


def check_fields(ctx: Ctx, body: dict[str, Any], known: Iterable[str]) -> None:
    if not ctx.em.config.reject_unknown_fields:
        return
    unknown = sorted(set(body) - set(known))
    if unknown:
        raise invalid(f"Unknown field(s) in request body: {', '.join(unknown)}.")


def opt_str(body: dict[str, Any], name: str, max_len: int | None = None) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid(f"'{name}' must be a string.")
    if max_len is not None and len(value) > max_len:
        raise invalid(f"'{name}' must be at most {max_len} characters.")
    return value


def opt_int(body: dict[str, Any], name: str, lo: int, hi: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"'{name}' must be an integer, got {value!r}.")
    if value < lo or (hi is not None and value > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
        raise invalid(f"'{name}' must be {bound}, got {value}.")
    return value


def opt_bool(body: dict[str, Any], name: str) -> bool | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise invalid(f"'{name}' must be a boolean.")
    return value


def valid_tags(value: Any, name: str = "tags") -> list[str]:
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise invalid(f"'{name}' must be an array of strings.")
    if len(value) > MAX_TAGS:
        raise invalid(f"'{name}' must contain at most {MAX_TAGS} tags, got {len(value)}.")
    for tag in value:
        if not tag or len(tag) > MAX_TAG_LEN:
            raise invalid(f"Each tag must be 1 to {MAX_TAG_LEN} characters long.")
    return list(value)


# ---------------------------------------------------------------------------- views
def at_least(ctx: Ctx, version: str) -> bool:
    return ctx.api_version >= version


def job_usage(ctx: Ctx, job: Job) -> dict[str, Any]:
    if at_least(ctx, "2026-03-15"):
        usage: dict[str, Any] = {
            "qpu_charge_time_seconds": job.usage_seconds,
            "status": "pending" if job.pending else "complete",
        }
        if not at_least(ctx, "2026-04-15"):
            usage["circuits_execution_time_ns"] = int(job.usage_seconds * 1e9 * 0.8)
        return usage
    return {"quantum_seconds": job.usage_seconds, "seconds": job.usage_seconds}


def job_view(ctx: Ctx, job: Job, *, exclude_params: bool) -> dict[str, Any]:
    state: dict[str, Any] = {"status": "Cancelled" if job.status.startswith("Cancelled") else job.status}
    if job.reason:
        state["reason"] = job.reason
    if job.reason_code is not None:
        state["reason_code"] = job.reason_code
    if job.reason_solution:
        state["reason_solution"] = job.reason_solution
    out: dict[str, Any] = {
        "id": job.id,
        "backend": job.backend,
        "state": state,
        "status": job.status,
        "program": {"id": job.program_id},
        "created": iso(job.created),
        "runtime": job.runtime,
        "cost": job.cost,
        "tags": list(job.tags),
        "user_id": job.user_id,
        "usage": job_usage(ctx, job),
        "private": job.private,
        "estimated_running_time_seconds": 1.5,
    }
    if not at_least(ctx, "2026-03-15"):
        out["bss"] = {"seconds": job.usage_seconds}
    if job.session_id:
        out["session_id"] = job.session_id
    if job.calibration_id:
        out["calibration_id"] = job.calibration_id
    if job.remote_storage is not None:
        out["remote_storage"] = job.remote_storage
    if not exclude_params and job.params is not None:
        out["params"] = job.params
    return out


def session_view(sess: Session) -> dict[str, Any]:
    elapsed = 0.0
    if sess.activated_at is not None:
        end = sess.closed_at or now_utc()
        elapsed = round((end - sess.activated_at).total_seconds(), 3)
    return {
        "id": sess.id,
        "backend_name": sess.backend,
        "started_at": iso(sess.started_at),
        "activated_at": iso(sess.activated_at),
        "closed_at": iso(sess.closed_at),
        "last_job_started": iso(sess.last_job_started),
        "last_job_completed": iso(sess.last_job_completed),
        "interactive_ttl": sess.interactive_ttl,
        "max_ttl": sess.max_ttl,
        "active_ttl": sess.active_ttl,
        "state": sess.state,
        "state_reason": sess.state_reason,
        "accepting_jobs": sess.accepting_jobs,
        "mode": sess.mode,
        "timestamps": [{"status": s, "timestamp": iso(t)} for s, t in sess.timestamps],
        "user_id": sess.user_id,
        "elapsed_time": elapsed,
    }


# ---------------------------------------------------------------------------- backends
def list_backends(ctx: Ctx) -> Reply:
    fields = q_one(ctx, "fields")
    wanted = {f.strip() for f in fields.split(",") if f.strip()} if fields else set()
    if wanted - {"wait_time_seconds"}:
        raise invalid("Query parameter 'fields' supports only 'wait_time_seconds'.")
    q_bool(ctx, "include_mocks", lenient=True)  # qiskit-ibm-runtime sends 'True'
    em = ctx.em
    if not at_least(ctx, "2025-01-01"):
        return json_reply({"devices": list(em.backends)})
    devices = []
    for b in em.backends.values():
        queue = em.queue_length(b.name)
        conf = b.configuration
        dev: dict[str, Any] = {
            "name": b.name,
            "status": {"name": b.status, "reason": b.status_reason},
            "is_simulator": b.is_simulator,
            "qubits": b.n_qubits,
            "clops": {"type": "hpe", "value": b.clops},
            "processor_type": conf.get("processor_type"),
            "queue_length": queue,
            "performance_metrics": {
                "two_q_error_best": {"value": 0.0061, "gate": "cx", "unit": "", "qubits": [0, 1]},
                "two_q_error_layered": {"value": 0.0123, "unit": ""},
            },
        }
        if "wait_time_seconds" in wanted:
            dev["wait_time_seconds"] = {"average": 30 * queue, "p50": 20 * queue, "p95": 90 * queue}
        devices.append(dev)
    return json_reply({"devices": devices})


def backend_configuration(ctx: Ctx) -> Reply:
    return json_reply(ctx.em.backend(ctx.params["id"]).configuration)


def backend_properties(ctx: Ctx) -> Reply:
    b = ctx.em.backend(ctx.params["id"])
    q_dt(ctx, "updated_before")
    if b.properties is None:
        raise ApiError(404, "not_found", "Properties are not available for this backend.")
    return json_reply(b.properties)


def backend_defaults(ctx: Ctx) -> Reply:
    b = ctx.em.backend(ctx.params["id"])
    if b.defaults is None:
        raise ApiError(404, "not_found", "Defaults are not available for this backend.")
    return json_reply(b.defaults)


def backend_status(ctx: Ctx) -> Reply:
    b = ctx.em.backend(ctx.params["id"])
    online = b.status == "online"
    status = {"online": "active", "paused": "internal"}.get(b.status, "maintenance")
    return json_reply(
        {
            "state": online,
            "status": status,
            "message": "" if online else b.status_reason,
            "length_queue": ctx.em.queue_length(b.name),
            "backend_version": b.version,
        }
    )


# ---------------------------------------------------------------------------- jobs
def create_job(ctx: Ctx) -> Reply:
    em, inst = ctx.em, ctx.instance
    body = body_object(ctx)
    check_fields(ctx, body, JOB_FIELDS)
    program_id = opt_str(body, "program_id")
    if not program_id:
        raise invalid("'program_id' is required.")
    backend = opt_str(body, "backend")
    if not backend:
        raise invalid("'backend' is required.")
    if program_id in RETIRED_RUNNERS:
        raise ApiError(400, 1513, RUNNER_REFUSED.format(program=program_id), solution="Use SamplerV2.")
    if program_id not in em.config.programs:
        raise ApiError(404, "not_found", f"Program not found: {program_id}")
    em.backend(backend)
    if body.get("params") is not None and not isinstance(body["params"], dict):
        raise invalid("'params' must be a JSON object.")
    if program_id in ("sampler", "estimator") and (body.get("params") or {}).get("version") != 2:
        raise ApiError(400, 1513, V1_REFUSED, solution="Use SamplerV2 and EstimatorV2.")
    if body.get("params") is not None and body.get("remote_storage") is not None:
        raise invalid("Use either 'params' or 'remote_storage', not both.")
    tags = valid_tags(body["tags"]) if body.get("tags") is not None else []
    log_level = opt_str(body, "log_level")
    if log_level is not None and log_level.lower() not in LOG_LEVELS:
        raise invalid(f"'log_level' must be one of {', '.join(sorted(LOG_LEVELS))}.")
    cost = opt_int(body, "cost", 0, MAX_COST)
    private = opt_bool(body, "private")
    calibration_id = opt_str(body, "calibration_id", 100)
    runtime = opt_str(body, "runtime")
    if opt_bool(body, "start_session"):
        raise invalid("'start_session': sessions can no longer be started via /v1/jobs; use POST /v1/sessions.")
    opt_int(body, "session_time", 0)
    session_id = opt_str(body, "session_id")
    result, failure = _simulated(program_id, body.get("params"))
    with em.lock:
        if session_id:
            sess = em.get_session(inst, session_id)
            if not sess.accepting_jobs or sess.state == "closed":
                raise ApiError(409, "conflict", f"Session {session_id} is closed and not accepting jobs.")
            if sess.backend != backend:
                raise invalid(f"Session {session_id} runs on {sess.backend}, not {backend}.")
        limit = inst.instance_limit
        if limit is not None and inst.consumed_seconds >= limit:
            raise ApiError(409, "conflict", "Job usage exceeds the instance usage limit.")
        em.check_rate(ctx.user_id)
        job = em.add_job(
            inst,
            backend=backend,
            program_id=program_id,
            user_id=ctx.user_id,
            params=body.get("params"),
            tags=tags,
            session_id=session_id,
            log_level=log_level,
            cost=600 if cost is None else cost,
            runtime=runtime or "",
            private=bool(private),
            calibration_id=calibration_id,
            remote_storage=body.get("remote_storage"),
            caller=ctx.headers.get("x-qx-client-application"),
            result=result,
            failure=failure,
        )
    out: dict[str, Any] = {"id": job.id, "backend": job.backend}
    if session_id:
        out["session_id"] = session_id
    if private is not None:
        out["private"] = job.private
    if calibration_id:
        out["calibration_id"] = calibration_id
    return json_reply(out)


def _simulated(program_id: str, params: Any) -> tuple[bytes | None, str | None]:
    """Run the pubs now (outside the lock): (result body, None) or (None, why the job will fail)."""
    try:
        return simulate(program_id, params), None
    except SimulationError as exc:
        return None, f"Error running the pubs: {exc}"


def list_jobs(ctx: Ctx) -> Reply:
    limit = q_int(ctx, "limit", 200, 1, 200)
    offset = q_int(ctx, "offset", 0, 0)
    pending = q_bool(ctx, "pending")
    exclude = q_bool(ctx, "exclude_params") or False
    q_bool(ctx, "include_mocks", lenient=True)
    program, backend, session_id = q_one(ctx, "program"), q_one(ctx, "backend"), q_one(ctx, "session_id")
    tags = [t for t in ctx.query.get("tags", []) if t]
    after, before = q_dt(ctx, "created_after"), q_dt(ctx, "created_before")
    sort = (q_one(ctx, "sort") or "DESC").upper()
    if sort not in ("ASC", "DESC"):
        raise invalid("Query parameter 'sort' must be ASC or DESC.")
    with ctx.em.lock:
        jobs = list(ctx.instance.jobs.values())
        selected = [
            j
            for j in jobs
            if (pending is None or j.pending == pending)
            and (program is None or j.program_id == program)
            and (backend is None or j.backend == backend)
            and (session_id is None or j.session_id == session_id)
            and all(t in j.tags for t in tags)
            and (after is None or j.created > after)
            and (before is None or j.created < before)
        ]
        selected.sort(key=lambda j: j.seq, reverse=sort == "DESC")
        page = [job_view(ctx, j, exclude_params=exclude) for j in selected[offset : offset + limit]]
    return json_reply({"jobs": page, "count": len(selected), "offset": offset, "limit": limit})


def _job(ctx: Ctx) -> Job:
    return ctx.em.get_job(ctx.instance, ctx.params["id"])


def get_job(ctx: Ctx) -> Reply:
    exclude = q_bool(ctx, "exclude_params") or False
    with ctx.em.lock:
        job = _job(ctx)
        ctx.em.poll_job(ctx.instance, job)
        return json_reply(job_view(ctx, job, exclude_params=exclude))


def delete_job(ctx: Ctx) -> Reply:
    with ctx.em.lock:
        ctx.em.delete_job(ctx.instance, _job(ctx))
    return no_content()


def cancel_job(ctx: Ctx) -> Reply:
    with ctx.em.lock:
        ctx.em.cancel_job(ctx.instance, _job(ctx))
    return no_content()


def job_results(ctx: Ctx) -> Reply:
    with ctx.em.lock:
        job = _job(ctx)
        status, reason, program, result = job.status, job.reason, job.program_id, job.result
    if status == "Completed":
        # A body the test configured for the program wins; else the simulation; else the fixture.
        body = ctx.em.config.results.get(program) or result or fixture_bytes("sampler_v2_result.json")
        return Reply(200, body, "application/json")
    if status == "Failed":
        return text_reply(reason or "Job failed.")
    return no_content()


def job_metrics(ctx: Ctx) -> Reply:
    with ctx.em.lock:
        job = _job(ctx)
        timestamps = {
            "created": iso(job.created),
            "running": iso(job.running_at),
            "finished": iso(job.finished_at),
        }
        out: dict[str, Any] = {
            "timestamps": timestamps,
            "usage": job_usage(ctx, job),
            "caller": job.caller or "unknown",
            "qiskit_version": "qiskit_ibm_runtime-0.51.0,qiskit-2.6.2*",
        }
        if at_least(ctx, "2026-04-15"):
            out["circuits_execution_time_ns"] = int(job.usage_seconds * 1e9 * 0.8)
        if not at_least(ctx, "2026-03-15"):
            out["bss"] = {"seconds": job.usage_seconds}
            out["executions"] = 1 if job.finished_at else 0
            out["position_in_queue"] = 0
            out["estimated_start_time"] = iso(job.running_at or job.created)
            out["estimated_completion_time"] = iso(job.finished_at or job.created + timedelta(seconds=2))
    return json_reply(out)


def job_logs(ctx: Ctx) -> Reply:
    with ctx.em.lock:
        job = _job(ctx)
        lines = []
        if job.running_at:
            lines.append(f"{iso(job.running_at)} INFO job {job.id} started on {job.backend}")
        if job.finished_at:
            lines.append(f"{iso(job.finished_at)} INFO job {job.id} finished: {job.status}")
    return text_reply("".join(line + "\n" for line in lines))


def job_tags(ctx: Ctx) -> Reply:
    body = body_object(ctx)
    if "tags" not in body:
        raise invalid("'tags' is required.")
    tags = valid_tags(body["tags"])
    with ctx.em.lock:
        _job(ctx).tags = tags
    return no_content()


def job_interim_results(ctx: Ctx) -> Reply:
    with ctx.em.lock:
        _job(ctx)
    return text_reply("")


def job_transpiled_circuits(ctx: Ctx) -> Reply:
    with ctx.em.lock:
        job = _job(ctx)
    if at_least(ctx, "2026-02-01"):
        # Dropped from the API in version 2026-02-01 (IBM changelog).
        raise ApiError(
            404, "not_found", f"Not found: transpiled_circuits is not available in API version {ctx.api_version}."
        )
    return json_reply({"url": f"{ctx.base_url}/__emulator__/objects/{job.id}/transpiled_circuits.json"})


# ---------------------------------------------------------------------------- sessions
def create_session(ctx: Ctx) -> Reply:
    em, inst = ctx.em, ctx.instance
    body = body_object(ctx)
    check_fields(ctx, body, SESSION_FIELDS)
    mode = body.get("mode")
    if mode not in ("batch", "dedicated"):
        raise invalid("'mode' is required and must be 'batch' or 'dedicated'.")
    backend = opt_str(body, "backend") or opt_str(body, "backend_name")
    if not backend:
        raise invalid("'backend' is required.")
    em.backend(backend)
    instance = body.get("instance")
    if instance is not None and instance != inst.crn:
        raise invalid(f"'instance' must be the CRN given in Service-CRN, got {instance!r}.")
    max_ttl = opt_int(body, "max_ttl", 1, MAX_SESSION_TTL) or MAX_SESSION_TTL
    interactive_ttl = opt_int(body, "interactive_ttl", 1, MAX_SESSION_TTL) or (1 if mode == "batch" else 60)
    active_ttl = opt_int(body, "active_ttl", 1, MAX_SESSION_TTL) or max_ttl
    sess = em.add_session(
        inst,
        backend=backend,
        mode=mode,
        max_ttl=max_ttl,
        interactive_ttl=interactive_ttl,
        active_ttl=active_ttl,
        user_id=ctx.user_id,
    )
    return json_reply(session_view(sess))


def _session(ctx: Ctx) -> Session:
    return ctx.em.get_session(ctx.instance, ctx.params["id"])


def get_session(ctx: Ctx) -> Reply:
    with ctx.em.lock:
        return json_reply(session_view(_session(ctx)))


def update_session(ctx: Ctx) -> Reply:
    body = body_object(ctx)
    check_fields(ctx, body, {"accepting_jobs"})
    accepting = body.get("accepting_jobs")
    if not isinstance(accepting, bool):
        raise invalid("'accepting_jobs' is required and must be a boolean.")
    with ctx.em.lock:
        sess = _session(ctx)
        if accepting:
            if sess.state == "closed":
                raise ApiError(409, "conflict", f"Session {sess.id} is closed.")
            sess.accepting_jobs = True
        else:
            ctx.em.stop_accepting(ctx.instance, sess)
    return no_content()


def close_session(ctx: Ctx) -> Reply:
    with ctx.em.lock:
        ctx.em.close_session(ctx.instance, _session(ctx))
    return no_content()


# ---------------------------------------------------------------------------- workloads & tags
_WORKLOAD_STATUS = {
    "Queued": "pending",
    "Running": "in_progress",
    "Completed": "completed",
    "Cancelled": "canceled",
    "Cancelled - Ran too long": "canceled",
    "Failed": "failed",
}


def _workloads(ctx: Ctx) -> list[tuple[int, dict[str, Any], list[str]]]:
    inst = ctx.instance
    out: list[tuple[int, dict[str, Any], list[str]]] = []
    for s in inst.sessions.values():
        jobs = ctx.em.session_jobs(inst, s)
        if s.state == "closed":
            status = "canceled" if s.state_reason == "cancelled by user" else "completed"
        else:
            status = "in_progress" if s.state == "active" else "pending"
        tags = sorted({t for j in jobs for t in j.tags})
        item = {
            "id": s.id,
            "created": iso(s.created),
            "ended": iso(s.closed_at),
            "backend": s.backend,
            "instance": inst.crn,
            "user_id": s.user_id,
            "accepting_jobs": s.accepting_jobs,
            "mode": "batch" if s.mode == "batch" else "session",
            "status": status,
            "tags": tags,
            "usage_seconds": sum(j.usage_seconds for j in jobs),
        }
        out.append((s.seq, item, tags))
    for j in inst.jobs.values():
        if j.session_id:
            continue
        item = {
            "id": j.id,
            "created": iso(j.created),
            "ended": iso(j.finished_at),
            "backend": j.backend,
            "instance": inst.crn,
            "user_id": j.user_id,
            "accepting_jobs": None,
            "mode": "job",
            "status": _WORKLOAD_STATUS[j.status],
            "tags": list(j.tags),
            "usage_seconds": j.usage_seconds,
        }
        out.append((j.seq, item, j.tags))
    return out


def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode().rstrip("=")


def _uncursor(raw: str) -> int:
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
        if not text.startswith("o:"):
            raise ValueError(text)
        return max(0, int(text[2:]))
    except ValueError:
        raise invalid("Invalid pagination cursor.") from None


def list_workloads(ctx: Ctx) -> Reply:
    user = q_one(ctx, "user")
    if user not in (None, "me"):
        raise invalid("Query parameter 'user' can only be 'me'.")
    sort = q_one(ctx, "sort") or "-createdAt"
    if sort not in ("createdAt", "-createdAt"):
        raise invalid("Query parameter 'sort' must be 'createdAt' or '-createdAt'.")
    limit = q_int(ctx, "limit", 10, 1, 100)
    mode = q_one(ctx, "mode")
    if mode not in (None, "job", "session", "batch"):
        raise invalid("Query parameter 'mode' must be job, session or batch.")
    statuses = set(ctx.query.get("status", []))
    if statuses - {"pending", "in_progress", "failed", "completed", "canceled"}:
        raise invalid("Query parameter 'status' must be pending, in_progress, failed, completed or canceled.")
    backend, search = q_one(ctx, "backend"), q_one(ctx, "search")
    tags = [t for t in ctx.query.get("tags", []) if t]
    after, before = q_dt(ctx, "created_after"), q_dt(ctx, "created_before")
    nxt, prev = q_one(ctx, "next"), q_one(ctx, "previous")
    offset = _uncursor(nxt) if nxt else _uncursor(prev) if prev else 0
    with ctx.em.lock:
        items = _workloads(ctx)
    selected = [
        (seq, w)
        for seq, w, wtags in items
        if (mode is None or w["mode"] == mode)
        and (not statuses or w["status"] in statuses)
        and (backend is None or w["backend"] == backend)
        and all(t in wtags for t in tags)
        and (search is None or search in w["id"] or any(search in t for t in wtags))
        and (after is None or parse_dt(w["created"], "created") > after)
        and (before is None or parse_dt(w["created"], "created") < before)
    ]
    selected.sort(key=lambda x: x[0], reverse=sort.startswith("-"))
    page = [w for _, w in selected[offset : offset + limit]]
    out: dict[str, Any] = {"workloads": page, "total_count": len(selected), "limit": limit}
    base = f"{ctx.base_url}/api/v1/workloads?limit={limit}&sort={sort}"
    if offset + limit < len(selected):
        out["next"] = {"href": f"{base}&next={_cursor(offset + limit)}"}
    if offset > 0:
        out["previous"] = {"href": f"{base}&previous={_cursor(max(0, offset - limit))}"}
    return json_reply(out)


def list_tags(ctx: Ctx) -> Reply:
    kind, search = q_one(ctx, "type"), q_one(ctx, "search")
    if kind is None or search is None:
        raise invalid("Query parameters 'type' and 'search' are required.")
    if kind != "job":
        raise invalid("Query parameter 'type' must be 'job'.")
    if not 3 <= len(search) <= 100:
        raise invalid("Query parameter 'search' must be 3 to 100 characters long.")
    needle = search.lower()
    with ctx.em.lock:
        tags = sorted({t for j in ctx.instance.jobs.values() for t in j.tags if needle in t.lower()})
    return json_reply({"tags": tags})


# ---------------------------------------------------------------------------- instances & accounts
def _usage_period() -> tuple[datetime, datetime]:
    now = now_utc()
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + timedelta(days=32)).replace(day=1) - timedelta(milliseconds=1)
    return start, end


def get_instance(ctx: Ctx) -> Reply:
    return json_reply({"qctrl_enabled": False})


def instance_usage(ctx: Ctx) -> Reply:
    inst = ctx.instance
    start, end = _usage_period()
    with ctx.em.lock:
        consumed = round(inst.consumed_seconds, 3)
        limit = inst.instance_limit
    plan_limit = ctx.em.config.usage_limit_seconds
    effective = plan_limit if limit is None else min(plan_limit, float(limit))
    return json_reply(
        {
            "instance_id": inst.crn,
            "plan_id": PLAN_ID,
            "usage_period": {"start_time": iso(start), "end_time": iso(end)},
            "usage_consumed_seconds": consumed,
            "usage_limit_seconds": effective,
            "usage_allocation_seconds": plan_limit,
            "usage_limit_reached": consumed >= effective,
        }
    )


def get_instance_configuration(ctx: Ctx) -> Reply:
    return json_reply({"instance_limit": ctx.instance.instance_limit})


def put_instance_configuration(ctx: Ctx) -> Reply:
    body = body_object(ctx)
    check_fields(ctx, body, {"instance_limit"})
    if "instance_limit" not in body:
        raise invalid("'instance_limit' is required (an integer number of seconds, or null).")
    limit = opt_int(body, "instance_limit", 0)
    with ctx.em.lock:
        ctx.instance.instance_limit = limit
    return no_content()


def get_account(ctx: Ctx) -> Reply:
    plan_id = q_one(ctx, "plan_id")
    start, end = _usage_period()
    alloc = ctx.em.config.usage_limit_seconds
    plan = {
        "plan_id": PLAN_ID,
        "usage_allocation_seconds": int(alloc),
        "usage_limit_seconds": int(alloc),
        "backends": list(ctx.em.backends),
        "max_ttl": MAX_SESSION_TTL,
        "active_ttl": MAX_SESSION_TTL,
        "interactive_ttl": 60,
        "start_time": iso(start),
        "end_time": iso(end),
        "unallocated_usage_seconds": 0,
    }
    # "If no account information is found, returns the default configuration" (spec): same answer.
    return json_reply({"plans": [] if plan_id not in (None, PLAN_ID) else [plan]})


def get_versions(ctx: Ctx) -> Reply:
    versions = []
    for version, status, sunset in KNOWN_API_VERSIONS:
        item: dict[str, Any] = {"version": version, "status": status}
        if sunset:
            item["sunset_date"] = sunset
        versions.append(item)
    return json_reply({"versions": versions})


def logout(ctx: Ctx) -> Reply:
    return no_content()


# ---------------------------------------------------------------------------- analytics
_STAT_KEYS = (
    "usage", "jobs", "sessions", "sessions_usage", "avg_sessions_usage", "max_sessions_usage",
    "batch_sessions", "batch_sessions_usage", "avg_batch_sessions_usage", "max_batch_sessions_usage",
    "dedicated_sessions", "dedicated_sessions_usage", "avg_dedicated_sessions_usage",
    "max_dedicated_sessions_usage", "individual_jobs", "individual_jobs_usage",
    "avg_individual_jobs_usage", "max_individual_jobs_usage", "queue_time", "avg_queue_time",
    "max_queue_time",
)  # fmt: skip
GROUP_BY = ("backend", "instance", "user", "plan")


def _analytics_scope(ctx: Ctx) -> tuple[list[Job], dict[str, Session], datetime | None, datetime | None]:
    em = ctx.em
    crns = ctx.query.get("instance") or list(em.instances)
    unknown = [c for c in crns if c not in em.instances]
    if unknown:
        raise invalid(f"Query parameter 'instance': unknown instance {unknown[0]!r}.")
    start, end = q_dt(ctx, "interval_start"), q_dt(ctx, "interval_end")
    if start and end and end < start:
        raise invalid("'interval_end' is earlier than 'interval_start'.")
    backends = set(ctx.query.get("backend", []))
    users = set(ctx.query.get("user_id", []))
    plans = set(ctx.query.get("plan", []))
    simulators = q_bool(ctx, "simulators")
    jobs: list[Job] = []
    sessions: dict[str, Session] = {}
    if plans and PLAN_NAME not in plans and PLAN_ID not in plans:
        return jobs, sessions, start, end
    for crn in crns:
        inst = em.instances[crn]
        sessions.update(inst.sessions)
        for j in inst.jobs.values():
            b = em.backends.get(j.backend)
            if backends and j.backend not in backends:
                continue
            if users and j.user_id not in users:
                continue
            if simulators is False and b is not None and b.is_simulator:
                continue
            if (start and j.created < start) or (end and j.created > end):
                continue
            jobs.append(j)
    return jobs, sessions, start, end


def _stats(jobs: list[Job], sessions: dict[str, Session]) -> dict[str, float]:
    per_session: dict[str, float] = {}
    individual: list[float] = []
    for j in jobs:
        if j.session_id and j.session_id in sessions:
            per_session[j.session_id] = per_session.get(j.session_id, 0.0) + j.usage_seconds
        else:
            individual.append(j.usage_seconds)

    def agg(values: list[float]) -> tuple[float, float, float, float]:
        total = sum(values)
        return float(len(values)), total, (total / len(values) if values else 0.0), max(values, default=0.0)

    batch = [u for sid, u in per_session.items() if sessions[sid].mode == "batch"]
    dedicated = [u for sid, u in per_session.items() if sessions[sid].mode == "dedicated"]
    queue = [(j.running_at - j.created).total_seconds() for j in jobs if j.running_at]
    s_n, s_u, s_a, s_m = agg(list(per_session.values()))
    b_n, b_u, b_a, b_m = agg(batch)
    d_n, d_u, d_a, d_m = agg(dedicated)
    i_n, i_u, i_a, i_m = agg(individual)
    _, q_t, q_a, q_m = agg(queue)
    values = (
        sum(j.usage_seconds for j in jobs), float(len(jobs)), s_n, s_u, s_a, s_m, b_n, b_u, b_a, b_m,
        d_n, d_u, d_a, d_m, i_n, i_u, i_a, i_m, q_t, q_a, q_m,
    )  # fmt: skip
    return {k: round(v, 6) for k, v in zip(_STAT_KEYS, values, strict=True)}


def _group_key(j: Job, group_by: str) -> str:
    return {"backend": j.backend, "instance": j.crn, "user": j.user_id, "plan": PLAN_NAME}[group_by]


def _group_by(ctx: Ctx) -> str:
    group_by = q_one(ctx, "group_by")
    if group_by is None:
        raise invalid("Query parameter 'group_by' is required.")
    if group_by not in GROUP_BY:
        raise invalid(f"Query parameter 'group_by' must be one of {', '.join(GROUP_BY)}.")
    return group_by


def analytics_filters(ctx: Ctx) -> Reply:
    em = ctx.em
    crns = ctx.query.get("instance") or list(em.instances)
    with em.lock:
        users = sorted({j.user_id for c in crns if c in em.instances for j in em.instances[c].jobs.values()})
    return json_reply(
        {
            "backends": [{"name": n} for n in em.backends],
            "instances": [{"id": c, "deleted": False} for c in crns if c in em.instances],
            "users": [{"id": u} for u in users or [ctx.user_id]],
            "plans": [{"name": PLAN_NAME}],
        }
    )


def analytics_usage(ctx: Ctx) -> Reply:
    with ctx.em.lock:
        jobs, sessions, _, _ = _analytics_scope(ctx)
        return json_reply(_stats(jobs, sessions))


def analytics_usage_grouped(ctx: Ctx) -> Reply:
    group_by = _group_by(ctx)
    with ctx.em.lock:
        jobs, sessions, _, _ = _analytics_scope(ctx)
        groups: dict[str, list[Job]] = {}
        for j in jobs:
            groups.setdefault(_group_key(j, group_by), []).append(j)
        data = [{"key": k, **_stats(v, sessions)} for k, v in sorted(groups.items())]
    return json_reply({"data": data})


def analytics_usage_grouped_by_date(ctx: Ctx) -> Reply:
    group_by = _group_by(ctx)
    with ctx.em.lock:
        jobs, sessions, start, end = _analytics_scope(ctx)
        groups: dict[tuple[str, str], list[Job]] = {}
        for j in jobs:
            groups.setdefault((_group_key(j, group_by), j.created.date().isoformat()), []).append(j)
        data = []
        for (key, day), group in sorted(groups.items()):
            d0 = datetime.fromisoformat(day).replace(tzinfo=timezone.utc)
            data.append(
                {
                    "key": key,
                    "interval_start": iso(d0),
                    "interval_end": iso(d0 + timedelta(days=1) - timedelta(milliseconds=1)),
                    **_stats(group, sessions),
                }
            )
    p_start, p_end = _usage_period()
    return json_reply({"interval_start": iso(start or p_start), "interval_end": iso(end or p_end), "data": data})


# ---------------------------------------------------------------------------- the table
def _r(method: str, template: str, handler: Handler, **kw: Any) -> Route:
    pattern = "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template)) + "$"
    return Route(method, template, handler, regex=re.compile(pattern), **kw)


ROUTES: tuple[Route, ...] = (
    _r("GET", "/v1/backends", list_backends),
    _r("GET", "/v1/backends/{id}/configuration", backend_configuration),
    _r("GET", "/v1/backends/{id}/properties", backend_properties),
    _r("GET", "/v1/backends/{id}/defaults", backend_defaults),
    _r("GET", "/v1/backends/{id}/status", backend_status),
    _r("POST", "/v1/jobs", create_job, body=True),
    _r("GET", "/v1/jobs", list_jobs),
    _r("GET", "/v1/jobs/{id}", get_job),
    _r("DELETE", "/v1/jobs/{id}", delete_job),
    _r("GET", "/v1/jobs/{id}/results", job_results),
    _r("GET", "/v1/jobs/{id}/metrics", job_metrics),
    _r("GET", "/v1/jobs/{id}/logs", job_logs),
    _r("POST", "/v1/jobs/{id}/cancel", cancel_job),
    _r("PUT", "/v1/jobs/{id}/tags", job_tags, body=True),
    _r("GET", "/v1/jobs/{id}/interim_results", job_interim_results),
    _r("GET", "/v1/jobs/{id}/transpiled_circuits", job_transpiled_circuits),
    _r("POST", "/v1/sessions", create_session, body=True),
    _r("GET", "/v1/sessions/{id}", get_session),
    _r("PATCH", "/v1/sessions/{id}", update_session, body=True),
    _r("DELETE", "/v1/sessions/{id}/close", close_session),
    _r("GET", "/v1/workloads", list_workloads),
    _r("GET", "/v1/tags", list_tags),
    _r("GET", "/v1/instance", get_instance),
    _r("GET", "/v1/instances/usage", instance_usage),
    _r("GET", "/v1/instances/configuration", get_instance_configuration),
    _r("PUT", "/v1/instances/configuration", put_instance_configuration, body=True),
    _r("GET", "/v1/accounts/{id}", get_account),
    _r("GET", "/v1/versions", get_versions, auth=False, crn=False),
    _r("POST", "/v1/logout", logout, crn=False),
    _r("GET", "/v1/analytics/filters", analytics_filters),
    _r("GET", "/v1/analytics/usage", analytics_usage),
    _r("GET", "/v1/analytics/usage_grouped", analytics_usage_grouped),
    _r("GET", "/v1/analytics/usage-grouped", analytics_usage_grouped),
    _r("GET", "/v1/analytics/usage_grouped_by_date", analytics_usage_grouped_by_date),
    _r("GET", "/v1/analytics/usage-grouped-by-date", analytics_usage_grouped_by_date),
)


class Router:
    """Static paths by dict lookup, templated ones by regex (grouped by segment count)."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.static: dict[str, dict[str, Route]] = {}
        self.dynamic: dict[int, list[Route]] = {}
        for r in routes:
            if "{" in r.template:
                self.dynamic.setdefault(r.template.count("/"), []).append(r)
            else:
                self.static.setdefault(r.template, {})[r.method] = r

    def match(self, method: str, path: str) -> tuple[Route | None, dict[str, str], list[str]]:
        """(route, path params, allowed methods); route None with methods = 405, without = 404."""
        by_method = self.static.get(path)
        if by_method is not None:
            return by_method.get(method), {}, sorted(by_method)
        allowed: list[str] = []
        for r in self.dynamic.get(path.count("/"), ()):
            m = r.regex.match(path)
            if m is None:
                continue
            if r.method == method:
                return r, m.groupdict(), [method]
            allowed.append(r.method)
        return None, {}, sorted(allowed)


ROUTER = Router(ROUTES)
