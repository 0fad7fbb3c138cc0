"""All mutable emulator state, behind one lock, and the rules that change it.

The server runs on its own thread and event loop while tests read and poke this object from the
test thread, so every mutation and every compound read holds `Emulator.lock`. Nothing here
awaits: handlers are short, synchronous and deterministic (job progress is driven by polls,
never by wall-clock time).

Why one long module: all mutations hold one lock; keeping them in one class keeps that rule
visible and checkable.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .config import EmulatorBackend, EmulatorConfig
from .faults import FaultConfigError, FaultRule, IamFaults, validate_iam_mode
from .tokens import make_jwt

MORE_INFO = "https://cloud.ibm.com/apidocs/quantum-computing#error-handling"
PENDING = frozenset({"Queued", "Running"})
TERMINAL = frozenset({"Completed", "Cancelled", "Cancelled - Ran too long", "Failed"})
JOB_STATUSES = PENDING | TERMINAL


class ApiError(Exception):
    """An error answer in the new API's shape: {"errors":[{code,message,more_info}],"trace",...}."""

    def __init__(
        self,
        status: int,
        code: int | str,
        message: str,
        *,
        solution: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.solution = solution
        self.headers = headers or {}

    def payload(self, trace: str) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.solution:
            err["solution"] = self.solution
        err["more_info"] = MORE_INFO
        return {"errors": [err], "trace": trace, "status_code": self.status}


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def iso(dt: datetime | None) -> str | None:
    """2026-11-25T17:30:00.123Z, the service's timestamp format."""
    if dt is None:
        return None
    return dt.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def job_not_found(job_id: str) -> ApiError:
    return ApiError(
        404,
        1291,
        f"Job not found. Job ID: {job_id}",
        solution="Verify the job ID is correct and that you have the correct access permissions.",
    )


def session_not_found(session_id: str) -> ApiError:
    return ApiError(404, "not_found", f"Session not found. Session ID: {session_id}")


def backend_not_found() -> ApiError:
    # Verbatim live body (Qiskit/documentation#4463): string code, no name in the message.
    return ApiError(404, "not_found", "device not found")


@dataclass
class TokenInfo:
    """An access token the fake IAM issued."""

    token: str
    api_key: str
    user_id: str
    iat: int
    expires_at: float
    revoked: bool = False


@dataclass
class Job:
    id: str
    crn: str
    backend: str
    program_id: str
    user_id: str
    created: datetime
    seq: int
    params: Any = None
    tags: list[str] = field(default_factory=list)
    session_id: str | None = None
    log_level: str | None = None
    cost: int = 600
    runtime: str = ""
    private: bool = False
    calibration_id: str | None = None
    remote_storage: Any = None
    caller: str | None = None
    status: str = "Queued"
    reason: str | None = None
    reason_code: int | None = None
    reason_solution: str | None = None
    polls: int = 0
    running_at: datetime | None = None
    finished_at: datetime | None = None
    #: The final status this job reaches when it runs to the end.
    outcome: str = "Completed"
    usage_seconds: float = 0.0
    #: The simulated result body (simulate.py); None = the packaged fixture.
    result: bytes | None = None
    #: Why the pubs could not run: the job ends Failed with this reason, like the real service's.
    failure: str | None = None

    @property
    def pending(self) -> bool:
        return self.status in PENDING


@dataclass
class Session:
    id: str
    crn: str
    backend: str
    mode: str
    max_ttl: int
    interactive_ttl: int
    active_ttl: int
    user_id: str
    created: datetime
    seq: int
    state: str = "open"
    state_reason: str | None = None
    accepting_jobs: bool = True
    started_at: datetime | None = None
    activated_at: datetime | None = None
    closed_at: datetime | None = None
    last_job_started: datetime | None = None
    last_job_completed: datetime | None = None
    timestamps: list[tuple[str, datetime]] = field(default_factory=list)


@dataclass
class InstanceState:
    """One service instance (Service-CRN): its jobs and sessions are invisible to other CRNs."""

    crn: str
    jobs: dict[str, Job] = field(default_factory=dict)
    sessions: dict[str, Session] = field(default_factory=dict)
    instance_limit: int | None = None
    consumed_seconds: float = 0.0


def user_id_for(api_key: str) -> str:
    return "IBMid-" + hashlib.sha256(api_key.encode()).hexdigest()[:10].upper()


def account_of(crn: str) -> str:
    """The account id of a CRN (`a/<id>` field, without `a/`)."""
    parts = crn.split(":")
    acct = parts[6] if len(parts) > 6 else ""
    return acct[2:] if acct.startswith("a/") else acct


class Emulator:
    """The fake service's state: tokens, instances, jobs, sessions, recorded requests, faults."""

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config if config is not None else EmulatorConfig()
        self.lock = threading.RLock()
        self.backends: dict[str, EmulatorBackend] = {b.name: b for b in self.config.backends}
        self.requests: list[dict[str, Any]] = []
        self.iam_requests: list[dict[str, Any]] = []
        self.iam_calls = 0
        self.tokens: dict[str, TokenInfo] = {}
        self.instances: dict[str, InstanceState] = {}
        self.iam_faults = IamFaults()
        self.rules: list[FaultRule] = []
        self._initial_token_ttl = self.config.token_ttl
        self._ids = itertools.count(1)
        self._seq = itertools.count(1)
        self._rate: dict[str, list[float]] = {}
        #: backend -> number of Queued/Running jobs, so status/list calls stay O(1) with many jobs.
        self._pending: dict[str, int] = {}
        self._reset_instances()

    # ------------------------------------------------------------------ bookkeeping
    def _reset_instances(self) -> None:
        self.instances = {crn: InstanceState(crn) for crn in self.config.crns}
        self._pending = {}

    def reset(self, *, tokens: bool = False) -> None:
        """Forget jobs, sessions, recorded requests, counters and faults (token_ttl included);
        `tokens=True` also invalidates every issued token. Ids keep counting so they never repeat."""
        with self.lock:
            self._reset_instances()
            self.requests.clear()
            self.iam_requests.clear()
            self.iam_calls = 0
            self._rate.clear()
            self.iam_faults = IamFaults()
            self.rules = []
            self.config.token_ttl = self._initial_token_ttl
            if tokens:
                self.tokens.clear()

    def clear_requests(self) -> None:
        with self.lock:
            self.requests.clear()

    def find_requests(self, method: str | None = None, path: str | None = None) -> list[dict[str, Any]]:
        """Recorded requests, optionally only METHOD and/or exact path (with or without /api)."""
        with self.lock:
            out = list(self.requests)
        if method:
            out = [r for r in out if r["method"] == method.upper()]
        if path:
            full = path if path.startswith("/api/") else "/api" + path
            out = [r for r in out if r["path"] == full]
        return out

    def record(self, entry: dict[str, Any]) -> None:
        if not self.config.record_requests:
            return
        with self.lock:
            self.requests.append(entry)
            cap = self.config.max_recorded_requests
            if cap is not None and len(self.requests) > cap:
                del self.requests[: len(self.requests) - cap]

    def next_id(self, kind: str) -> str:
        """Deterministic, realistic-looking 20-char ids (job: d…, session: s…)."""
        n = next(self._ids)
        prefix = {"job": "d", "session": "s"}.get(kind, kind[0])
        return prefix + hashlib.sha256(f"{kind}:{n}".encode()).hexdigest()[:19]

    def state(self) -> dict[str, Any]:
        """Counts for tests and the admin endpoint."""
        with self.lock:
            return {
                "iam_calls": self.iam_calls,
                "tokens_issued": len(self.tokens),
                "requests": len(self.requests),
                "jobs": {crn: len(i.jobs) for crn, i in self.instances.items()},
                "sessions": {crn: len(i.sessions) for crn, i in self.instances.items()},
                "faults": self.faults(),
            }

    # ------------------------------------------------------------------ faults
    def faults(self) -> dict[str, Any]:
        with self.lock:
            return {
                "iam_mode": self.iam_faults.mode,
                "iam_delay": self.iam_faults.delay,
                "iam_times": self.iam_faults.times,
                "token_ttl": self.config.token_ttl,
                "rules": [r.to_dict() for r in self.rules],
            }

    def set_faults(
        self,
        *,
        iam_mode: str | None = None,
        iam_delay: float | None = None,
        iam_times: int | None = None,
        token_ttl: int | None = None,
        rules: list[FaultRule | dict[str, Any]] | None = None,
        add_rules: list[FaultRule | dict[str, Any]] | None = None,
        clear: bool = False,
    ) -> dict[str, Any]:
        """Change fault settings; arguments left None stay as they are. `rules` replaces the list,
        `add_rules` appends, `clear` first resets everything to healthy (and token_ttl to its
        configured value). Returns `faults()`."""
        new_rules = [r if isinstance(r, FaultRule) else FaultRule.from_dict(r) for r in rules or []]
        more_rules = [r if isinstance(r, FaultRule) else FaultRule.from_dict(r) for r in add_rules or []]
        if iam_mode is not None:
            validate_iam_mode(iam_mode)
        if iam_delay is not None and (not isinstance(iam_delay, (int, float)) or iam_delay < 0):
            raise FaultConfigError("iam_delay: must be a number >= 0")
        if iam_times is not None and (not isinstance(iam_times, int) or iam_times < 0):
            raise FaultConfigError("iam_times: must be an integer >= 0 or null")
        if token_ttl is not None and (not isinstance(token_ttl, int) or token_ttl < 1):
            raise FaultConfigError("token_ttl: must be an integer >= 1")
        with self.lock:
            if clear:
                self.iam_faults = IamFaults()
                self.rules = []
                self.config.token_ttl = self._initial_token_ttl
            if iam_mode is not None:
                self.iam_faults.mode = iam_mode
                self.iam_faults.times = iam_times
            elif iam_times is not None:
                self.iam_faults.times = iam_times
            if iam_delay is not None:
                self.iam_faults.delay = float(iam_delay)
            if token_ttl is not None:
                self.config.token_ttl = token_ttl
            if rules is not None:
                self.rules = new_rules
            self.rules.extend(more_rules)
            return self.faults()

    def set_faults_from_json(self, data: Any) -> dict[str, Any]:
        """`set_faults` from the admin endpoint's JSON object."""
        if not isinstance(data, dict):
            raise FaultConfigError("faults: body must be a JSON object")
        allowed = {"iam_mode", "iam_delay", "iam_times", "token_ttl", "rules", "add_rules", "clear"}
        unknown = set(data) - allowed
        if unknown:
            raise FaultConfigError(f"faults: unknown key(s) {', '.join(sorted(unknown))}")
        for key in ("rules", "add_rules"):
            if key in data and data[key] is not None and not isinstance(data[key], list):
                raise FaultConfigError(f"{key}: must be a list of rule objects")
        return self.set_faults(**data)

    def add_fault(
        self,
        match: str = "*",
        action: str = "status",
        *,
        status: int = 503,
        delay: float | None = None,
        times: int | None = None,
        headers: dict[str, str] | None = None,
        body: Any = None,
        every: int = 1,
    ) -> FaultRule:
        """Append one rule and return it (its `hits`/`times` are live). `times=None` = forever,
        as in the JSON form: pass `times=1` for a one-off; `every=10` fires on every 10th match."""
        rule = FaultRule(match, action, status, delay, times, headers, body, every)
        with self.lock:
            self.rules.append(rule)
        return rule

    def clear_faults(self) -> None:
        self.set_faults(clear=True)

    def take_rule(self, method: str, template: str, path: str, *, iam: bool = False) -> FaultRule | None:
        """The first active rule matching this request, with one of its `times` consumed."""
        if not self.rules:
            return None
        with self.lock:
            for rule in self.rules:
                if rule.active and rule.matches(method, template, path, iam=iam):
                    rule.seen += 1
                    if rule.seen % rule.every:
                        continue  # not this one: every Nth match only
                    if rule.times is not None:
                        rule.times -= 1
                    rule.hits += 1
                    return rule
        return None

    # ------------------------------------------------------------------ IAM
    def issue_token(self, api_key: str) -> dict[str, Any]:
        """Mint an access token for a known key (no checks: the HTTP layer validates the key)."""
        with self.lock:
            ttl = self.config.token_ttl
            now = time.time()
            iat = int(now)
            user = user_id_for(api_key)
            claims = {
                "iam_id": user,
                "id": user,
                "realmid": "IBMid",
                "jti": uuid.uuid4().hex,
                "identifier": user[6:],
                "sub": f"{user[6:].lower()}@example.invalid",
                "sub_type": "ServiceId",
                "account": {"valid": True, "bss": next(iter(sorted({account_of(c) for c in self.config.crns})), "")},
                "iat": iat,
                "exp": iat + ttl,
                "iss": "https://iam.cloud.ibm.com/identity",
                "grant_type": "urn:ibm:params:oauth:grant-type:apikey",
                "scope": "ibm openid",
                "client_id": "default",
            }
            token = make_jwt(claims)
            # Validity is measured from the exact issue time, so a 1 s token lives a full second.
            self.tokens[token] = TokenInfo(token, api_key, user, iat, now + ttl)
            return {
                "access_token": token,
                "refresh_token": "not_supported",
                "token_type": "Bearer",
                "expires_in": ttl,
                "expiration": iat + ttl,
                "scope": "ibm openid",
            }

    def auth_headers(self, crn: str | None = None, *, api_version: str = "2026-04-15") -> dict[str, str]:
        """Headers a correct new-API client sends (mints a fresh token): handy in tests."""
        token = self.issue_token(next(iter(sorted(self.config.api_keys))))["access_token"]
        return {
            "Authorization": f"Bearer {token}",
            "Service-CRN": crn or self.config.crns[0],
            "IBM-API-Version": api_version,
        }

    def revoke_tokens(self) -> None:
        """Make every issued token invalid (401 on next use), like a revocation at IAM."""
        with self.lock:
            for info in self.tokens.values():
                info.revoked = True

    def check_bearer(self, authorization: str | None) -> TokenInfo:
        """The token behind an Authorization header, or a 401 ApiError saying why not."""
        if not authorization:
            raise _unauthorized("Missing Authorization header.")
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            raise _unauthorized(f"Unsupported authorization scheme {scheme!r}: a bearer token is required.")
        token = value.strip()
        with self.lock:
            info = self.tokens.get(token)
        if info is None:
            raise _unauthorized("The bearer token was not issued by IAM.")
        if info.revoked:
            raise _unauthorized("The bearer token was revoked.")
        if time.time() >= info.expires_at:
            raise _unauthorized("The bearer token is expired.")
        return info

    # ------------------------------------------------------------------ instances
    def instance(self, crn: str | None) -> InstanceState:
        """The instance for a Service-CRN header (400 if absent, 404 if unknown)."""
        if not crn:
            raise ApiError(400, "bad_request", "Missing required header: Service-CRN.")
        inst = self.instances.get(crn.strip())
        if inst is None:
            raise ApiError(404, 1279, "Instance not found", solution="Check the Service-CRN header.")
        return inst

    def backend(self, name: str) -> EmulatorBackend:
        b = self.backends.get(name)
        if b is None:
            raise backend_not_found()
        return b

    def queue_length(self, backend: str) -> int:
        """Pending jobs on this backend across all instances (a device's queue is shared)."""
        b = self.backends.get(backend)
        return self._pending.get(backend, 0) + (b.base_queue_length if b else 0)

    # ------------------------------------------------------------------ jobs
    def check_rate(self, user_id: str) -> None:
        limit = self.config.job_rate_limit_per_minute
        if limit is None:
            return
        now = time.monotonic()
        recent = [t for t in self._rate.get(user_id, []) if now - t < 60.0]
        if len(recent) >= limit:
            self._rate[user_id] = recent
            raise ApiError(
                429, "rate_limited", f"Too many jobs: at most {limit} per minute.", headers={"Retry-After": "60"}
            )
        recent.append(now)
        self._rate[user_id] = recent

    def add_job(self, inst: InstanceState, **fields: Any) -> Job:
        with self.lock:
            job = Job(id=self.next_id("job"), crn=inst.crn, created=now_utc(), seq=next(self._seq), **fields)
            tags = job.tags
            if self.config.fail_tag in tags or job.failure:
                job.outcome = "Failed"
            elif self.config.timeout_tag in tags:
                job.outcome = "Cancelled - Ran too long"
            inst.jobs[job.id] = job
            self._pending[job.backend] = self._pending.get(job.backend, 0) + 1
            if self.config.job_polls_to_complete <= 0:
                self._finish(inst, job)
            return job

    def get_job(self, inst: InstanceState, job_id: str) -> Job:
        job = inst.jobs.get(job_id)
        if job is None:
            raise job_not_found(job_id)
        return job

    def find_job(self, job_id: str) -> tuple[InstanceState, Job]:
        """A job in any instance (tests/admin only: the API is per-CRN)."""
        with self.lock:
            for inst in self.instances.values():
                if job_id in inst.jobs:
                    return inst, inst.jobs[job_id]
        raise job_not_found(job_id)

    def poll_job(self, inst: InstanceState, job: Job) -> None:
        """One GET /v1/jobs/{id}: the deterministic Queued → Running → final progression."""
        with self.lock:
            if not job.pending:
                return
            job.polls += 1
            n = self.config.job_polls_to_complete
            if job.polls >= n:
                self._finish(inst, job)
            elif job.polls >= n - 1:
                self._start(inst, job)

    def _start(self, inst: InstanceState, job: Job) -> None:
        if job.running_at is not None:
            return
        job.status = "Running"
        job.running_at = now_utc()
        sess = inst.sessions.get(job.session_id or "")
        if sess is not None:
            at = job.running_at
            if sess.state in ("open", "inactive"):
                sess.state = "active"
                sess.timestamps.append(("active", at))
            sess.activated_at = sess.activated_at or at
            sess.started_at = sess.started_at or at
            sess.last_job_started = at

    def _finish(self, inst: InstanceState, job: Job, status: str | None = None, **reason: Any) -> None:
        if not job.pending:
            return
        final = status or job.outcome
        ran = final != "Cancelled" or job.running_at is not None
        if ran:
            self._start(inst, job)
        job.status = final
        job.finished_at = now_utc()
        if final == "Failed":
            job.reason = reason.get("reason") or job.failure or "Error running job (emulated failure)."
            # Pubs that cannot run get a generic code: 1517 reads as an ISA refusal to the proxy.
            job.reason_code = reason.get("reason_code") or (1500 if job.failure else 1517)
            job.reason_solution = reason.get("reason_solution")
        elif final == "Cancelled - Ran too long":
            job.reason = reason.get("reason") or "Ran too long"
            job.reason_code = reason.get("reason_code") or 1305
        elif final == "Cancelled":
            job.reason = reason.get("reason") or "Cancelled by user"
            job.reason_code = reason.get("reason_code")
        self._pending[job.backend] = self._pending.get(job.backend, 1) - 1
        if job.usage_seconds == 0 and final != "Cancelled":  # a cancelled job is not charged
            job.usage_seconds = self.config.job_usage_seconds
            inst.consumed_seconds += job.usage_seconds
        sess = inst.sessions.get(job.session_id or "")
        if sess is not None:
            if ran:
                sess.last_job_completed = job.finished_at
            self._maybe_close_session(inst, sess)

    def cancel_job(self, inst: InstanceState, job: Job) -> None:
        with self.lock:
            if not job.pending:
                raise ApiError(409, 1293, "Job is in a non cancellable status.")
            self._finish(inst, job, "Cancelled")

    def delete_job(self, inst: InstanceState, job: Job) -> None:
        with self.lock:
            if job.pending:
                raise ApiError(409, 1293, "Job is in a non deletable status: only final jobs can be deleted.")
            inst.jobs.pop(job.id, None)

    def set_job_status(
        self,
        job_id: str,
        status: str,
        *,
        reason: str | None = None,
        reason_code: int | None = None,
        reason_solution: str | None = None,
    ) -> Job:
        """Force a job (in any instance) into a status, e.g. Failed with a reason, for tests."""
        if status not in JOB_STATUSES:
            raise ValueError(f"status must be one of {sorted(JOB_STATUSES)}")
        with self.lock:
            inst, job = self.find_job(job_id)
            if status in PENDING:
                if not job.pending:
                    self._pending[job.backend] = self._pending.get(job.backend, 0) + 1
                job.status, job.running_at, job.finished_at = "Queued", None, None
                job.reason = job.reason_code = job.reason_solution = None
                if status == "Running":
                    self._start(inst, job)
            else:
                if not job.pending:
                    job.status = "Running"
                    self._pending[job.backend] = self._pending.get(job.backend, 0) + 1
                self._finish(inst, job, status, reason=reason, reason_code=reason_code, reason_solution=reason_solution)
            return job

    # ------------------------------------------------------------------ sessions
    def add_session(self, inst: InstanceState, **fields: Any) -> Session:
        with self.lock:
            sess = Session(id=self.next_id("session"), crn=inst.crn, created=now_utc(), seq=next(self._seq), **fields)
            sess.timestamps.append(("open", sess.created))
            inst.sessions[sess.id] = sess
            return sess

    def get_session(self, inst: InstanceState, session_id: str) -> Session:
        sess = inst.sessions.get(session_id)
        if sess is None:
            raise session_not_found(session_id)
        return sess

    def session_jobs(self, inst: InstanceState, sess: Session) -> list[Job]:
        return [j for j in inst.jobs.values() if j.session_id == sess.id]

    def stop_accepting(self, inst: InstanceState, sess: Session) -> None:
        """PATCH accepting_jobs=false: queued jobs still run; the session closes when they are done."""
        with self.lock:
            sess.accepting_jobs = False
            self._maybe_close_session(inst, sess)

    def close_session(self, inst: InstanceState, sess: Session) -> None:
        """DELETE /close: stop at once; jobs that have not finished are cancelled."""
        with self.lock:
            sess.accepting_jobs = False
            for job in self.session_jobs(inst, sess):
                if job.pending:
                    self._finish(inst, job, "Cancelled", reason="Session was closed")
            self._close(sess, "cancelled by user")

    def _maybe_close_session(self, inst: InstanceState, sess: Session) -> None:
        if sess.accepting_jobs or sess.state == "closed":
            return
        if any(j.pending for j in self.session_jobs(inst, sess)):
            return
        self._close(sess, "no longer accepting jobs")

    @staticmethod
    def _close(sess: Session, reason: str) -> None:
        if sess.state == "closed":
            return
        sess.state = "closed"
        sess.state_reason = reason
        sess.closed_at = now_utc()
        sess.timestamps.append(("closed", sess.closed_at))


def _unauthorized(detail: str) -> ApiError:
    return ApiError(401, 1200, f"You are not authorized to perform this action. {detail}")
