"""Old programs on the new platform: V1 Sampler/Estimator and backend.run (circuit-runner,
qasm3-runner) submissions become SamplerV2/EstimatorV2 jobs, and their answers are rebuilt in
the old shape. `translate.py` and `rebuild.py` are pure; `Programs` (here) is what the pipeline
calls by name: `submission`, `transpile` (the optional `[transpile]` extra, isa.py), `answer`,
`headers`, `lookup`, `job_type`.

What a translated job needs for its answer is kept per job id in a bounded memory and is also
recoverable from the job itself (a `qcp-v1:<kind>` tag, plus the pubs in its params), so a
restarted proxy still answers in the old shape.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from cachetools import LRUCache, TTLCache

from ..call import Call, Reply
from ..classic.answers import Answer
from ..classic.routes import PARAM_PATTERNS
from ..errors import Gone, RetiredProgram, UpstreamError
from .encoding import peek_circuit
from .rebuild import RebuildError, rebuild
from .translate import (
    MARKER,
    RUNNERS,
    V1_PRIMITIVES,
    Experiment,
    Translation,
    is_translatable,
    parse_marker,
    translate_submission,
)

__all__ = [
    "ACTION", "MARKER", "RUNNERS", "V1_PRIMITIVES", "Programs", "Translation", "from_job", "is_translatable",
    "may_be_v1", "restore_job", "translate_submission",
]  # fmt: skip

log = logging.getLogger("qiskit_classic_proxy.programs")

#: `call.action` (metrics, usage record) of a request the translation served.
ACTION = "translate_program"
#: Translated jobs remembered in memory (the rest are found again from their tag).
REMEMBER = 20_000
#: qiskit-ibm-runtime releases with V1 primitives; newer ones (and their large bodies) are never V1.
V1_RUNTIME_BELOW = (0, 28)
#: What qiskit-ibm-provider's `job_type()` must read to fetch results from the runtime API.
RUNTIME_JOB_TYPE = "RUNTIME"

#: (status, job document or None) of `GET /v1/jobs/{id}`; `params` says whether to include them.
FetchJob = Callable[[Call, str, bool], Awaitable[tuple[int, dict[str, Any] | None]]]
#: (status, configuration or None) of `GET /v1/backends/{name}/configuration`.
FetchConfiguration = Callable[[Call, str], Awaitable[tuple[int, dict[str, Any] | None]]]
#: Is the `[transpile]` extra (qiskit) installed? Checked without importing it.
TRANSPILE = importlib.util.find_spec("qiskit") is not None


def may_be_v1(call: Call) -> bool:
    """Could this caller send V1 primitive bodies? (Decides whether a large body is parsed.)"""
    if call.sdk.startswith("qiskit_ibm_runtime") and call.sdk_version:
        return call.sdk_version < V1_RUNTIME_BELOW
    return True


#: How the new API says a circuit is not written for the target's instruction set (error 1517).
ISA_SIGNS = re.compile(r"\b(?:1517|ISA)\b|instruction set|not supported by the target|target hardware|transpil", re.I)
ISA_HINT = (
    " [qiskit-classic-proxy: this {kind} job was translated to a V2 primitive job. The new API runs only "
    "circuits written for the backend's instruction set (ISA); old V1 code relied on server-side "
    "transpilation. Transpile the circuits for the backend first (qiskit.transpile(circuits, backend)), or "
    "install the proxy with its transpile extra, pip install 'qiskit-classic-proxy[transpile]', and it "
    "transpiles them before submitting.]"
)


def isa_hint(kind: str, message: Any, code: Any = None) -> str | None:
    """`message` with the hint naming the transpile extra when it is the new API's ISA refusal."""
    text = str(message or "")
    if "qiskit-classic-proxy[transpile]" in text:
        return None
    if str(code) == "1517" or ISA_SIGNS.search(text):
        return text + ISA_HINT.format(kind=kind)
    return None


def restore_job(job: dict[str, Any]) -> dict[str, Any]:
    """A job object as the caller submitted it: its program id back, the proxy's tag hidden, and
    an ISA failure explained."""
    mark = parse_marker(job.get("tags"))
    if mark is None:
        return job
    state = job.get("state")
    if isinstance(state, dict) and state.get("reason"):
        hinted = isa_hint(mark[0], state["reason"], state.get("reason_code"))
        if hinted:
            state["reason"] = hinted
    job["tags"] = [t for t in job["tags"] if not (isinstance(t, str) and t.startswith(MARKER))]
    program = job.get("program")
    if isinstance(program, dict):
        program["id"] = mark[0]
    elif "program" in job or "program_id" not in job:
        job["program"] = {"id": mark[0]}
    if "program_id" in job:
        job["program_id"] = mark[0]
    params = job.get("params")
    if isinstance(params, dict) and isinstance(params.get("pubs"), list) and "circuits" not in params:
        # qiskit-ibm-provider's job.circuits() and V1 job.inputs read params["circuits"].
        params["circuits"] = [p[0] for p in params["pubs"] if isinstance(p, list) and p]
    return job


def from_job(job: dict[str, Any]) -> Translation | None:
    """The record of a translated job, rebuilt from the job object (its tag and its pubs)."""
    mark = parse_marker(job.get("tags"))
    if mark is None:
        return None
    kind, memory = mark
    tr = Translation(kind, "estimator" if kind == "estimator" else "sampler", memory=memory,
                     backend=str(job.get("backend") or ""))  # fmt: skip
    params = job.get("params")
    pubs = params.get("pubs") if isinstance(params, dict) else None
    if isinstance(pubs, list):
        for pub in pubs:
            circuit = pub[0] if isinstance(pub, list) and pub else None
            shots = pub[2] if kind != "estimator" and isinstance(pub, list) and len(pub) > 2 else None
            tr.experiments.append(Experiment(peek_circuit(circuit), shots if isinstance(shots, int) else None))
        options = params.get("options") if isinstance(params, dict) else None
        if isinstance(options, dict) and isinstance(options.get("default_shots"), int):
            tr.shots = options["default_shots"]
    return tr


def _load(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return None


class Programs:
    """The translation as the pipeline uses it; `memory` maps job id -> Translation."""

    def __init__(self, remember: int = REMEMBER, transpile: bool = TRANSPILE) -> None:
        self.memory: LRUCache[str, Translation] = LRUCache(maxsize=remember)
        self.plain: LRUCache[str, bool] = LRUCache(maxsize=remember)  # jobs looked up: not translated
        self.can_transpile = transpile
        self.configurations: TTLCache[str, dict[str, Any]] = TTLCache(maxsize=64, ttl=600)

    # -- submit --------------------------------------------------------------------------------
    def submission(self, call: Call, doc: dict[str, Any], enabled: bool = True) -> dict[str, Any]:
        """The body to send for a job submission: the V2 body when it is a V1 one, else `doc`."""
        if not is_translatable(doc):
            return doc
        program = doc.get("program_id")
        if not enabled:
            if program in RUNNERS:
                raise RetiredProgram(
                    f"program '{program}' is retired on the new IBM Quantum Platform (backend.run and "
                    "circuit-runner/qasm3-runner are gone) and the proxy's translation is switched off "
                    "for this route; submit with SamplerV2 instead",
                    code="program_retired",
                )
            raise RetiredProgram(
                f"the V1 primitive '{program}' is no longer supported by IBM (error code 1513) and the "
                "proxy's translation is switched off for this route; use SamplerV2/EstimatorV2",
                code="v1_primitive_retired",
            )
        body, tr = translate_submission(doc)
        call.program = tr
        call.action = ACTION
        return body

    async def transpile(self, call: Call, doc: dict[str, Any], fetch: FetchConfiguration) -> dict[str, Any]:
        """With the `[transpile]` extra: the translated body with its non-ISA circuits transpiled
        for the backend (isa.py, in a thread: it is CPU work). Without it: `doc` unchanged."""
        tr = call.program
        backend = doc.get("backend")
        if not (self.can_transpile and isinstance(tr, Translation) and isinstance(backend, str) and backend):
            return doc
        if tr.skip_transpilation or not PARAM_PATTERNS["backend"].match(backend):
            return doc  # (a malformed name never goes into an upstream path; the submission is refused upstream)
        conf = self.configurations.get(backend)
        if conf is None:
            status, conf = await fetch(call, backend)
            if status != 200 or conf is None or not conf.get("basis_gates") or not conf.get("n_qubits"):
                return doc  # the new API's own answer to the submission will say what is wrong
            self.configurations[backend] = conf
        await asyncio.to_thread(_transpile, doc, tr, conf)
        return doc

    @staticmethod
    def headers(call: Call) -> list[tuple[bytes, bytes]]:
        """`X-QCP-Transpiled` on the answer to a submission whose circuits the proxy transpiled."""
        tr = call.program
        if not (isinstance(tr, Translation) and tr.transpiled and call.method == "POST"):
            return []
        level = tr.optimization_level if tr.optimization_level in (0, 1, 2, 3) else 1
        text = f"{tr.transpiled} of {len(tr.experiments)} circuits for {tr.backend} (optimization_level {level})"
        return [(b"x-qcp-transpiled", text.encode())]

    # -- answers -------------------------------------------------------------------------------
    def answer(self, call: Call, name: str | None, base: Answer | None) -> Answer | None:
        """The row's fix-up, wrapped where translated jobs need more (ids, program ids, results)."""
        if name == "job_created" and call.program is not None:
            return Answer(self._created(base), _always)
        if name in ("job", "job_list", "job_created"):
            return Answer(self._restored(base), base.when if base else _ok)
        if name == "results" and call.program is not None:
            return Answer(self._results)
        return base

    def _created(self, base: Answer | None) -> Callable[[Call, int, bytes], tuple[int, bytes]]:
        def fix(call: Call, status: int, data: bytes) -> tuple[int, bytes]:
            if status >= 400:
                return status, _isa_error(call.program, data)
            if base is not None:
                status, data = base.fix(call, status, data)
            doc = _load(data)
            if 200 <= status < 300 and isinstance(doc, dict) and isinstance(doc.get("id"), str):
                self.memory[doc["id"]] = call.program
            return status, data

        return fix

    @staticmethod
    def _restored(base: Answer | None) -> Callable[[Call, int, bytes], tuple[int, bytes]]:
        def fix(call: Call, status: int, data: bytes) -> tuple[int, bytes]:
            if base is not None:
                status, data = base.fix(call, status, data)
            if MARKER.encode() not in data:
                return status, data
            doc = _load(data)
            if isinstance(doc, dict) and isinstance(doc.get("jobs"), list):
                doc["jobs"] = [restore_job(j) if isinstance(j, dict) else j for j in doc["jobs"]]
            elif isinstance(doc, dict):
                restore_job(doc)
            return status, json.dumps(doc, separators=(",", ":")).encode()

        return fix

    @staticmethod
    def _results(call: Call, status: int, data: bytes) -> tuple[int, bytes]:
        tr = call.program
        assert isinstance(tr, Translation)
        doc = _load(data) if status != 204 and data.strip() else None
        if not isinstance(doc, dict) or ("pub_results" not in doc and not isinstance(doc.get("__value__"), dict)):
            return status, data  # no result yet, or a failure text: as the new API said it
        call.action = ACTION
        try:
            return status, rebuild(tr, data, call.params.get("job_id", ""))
        except RebuildError as err:
            log.warning("could not rebuild the %s answer of job %s: %s", tr.kind, call.params.get("job_id"), err)
            doc = {"errors": [{"code": err.code, "message": f"{err.message} (a {tr.kind} job translated by the "
                               "proxy to a V2 primitive job)"}]}  # fmt: skip
            return 502, json.dumps(doc).encode()

    # -- which jobs were translated -----------------------------------------------------------------
    async def lookup(self, call: Call, job_id: str, fetch: FetchJob) -> Translation | None:
        """The job's record: from memory, else (for clients that may have submitted V1 jobs) from
        the job itself, one `GET /v1/jobs/{id}` with its params."""
        tr = self.memory.get(job_id)
        if tr is not None or job_id in self.plain or not call.is_legacy_sdk or not may_be_v1(call):
            return tr
        status, job = await fetch(call, job_id, False)  # the tag first: params can be 100 MB
        if status != 200 or not isinstance(job, dict):
            return None
        if parse_marker(job.get("tags")) is None:
            self.plain[job_id] = True
            return None
        status, job = await fetch(call, job_id, True)
        tr = from_job(job) if status == 200 and isinstance(job, dict) else None
        if tr is not None:
            self.memory[job_id] = tr
        return tr

    async def job_type(self, call: Call, fetch: FetchJob) -> Reply:
        """`GET /facade/v1/jobs/{id}/type` (qiskit-ibm-provider 0.11, before results and retrieve_job):
        RUNTIME for jobs the proxy translated; 404 (3250) for unknown jobs; 410 for the others."""
        job_id = call.params.get("job_id", "")
        if job_id in self.memory:
            call.action = ACTION
            return Reply.json({"type": RUNTIME_JOB_TYPE})
        status, job = await fetch(call, job_id, False)
        if status == 200 and isinstance(job, dict) and parse_marker(job.get("tags")) is not None:
            call.action = ACTION
            return Reply.json({"type": RUNTIME_JOB_TYPE})
        if status == 404:
            return Reply.json({"errors": [{"code": 3250, "message": f"Job not found: {job_id}"}],
                               "error": {"code": 3250, "status": 404,
                                         "message": f"Job not found: {job_id}. Error code: 3250."}}, 404)  # fmt: skip
        if status != 200:
            raise UpstreamError(f"the new API answered {status} for job {job_id}", code="upstream_refused")
        raise Gone(
            "GET /facade/v1/jobs/{job_id}/type was removed from the Qiskit Runtime API; the proxy answers "
            "it only for jobs it translated from circuit-runner/qasm3-runner or the V1 primitives",
            code="endpoint_removed", extra={"replacement": "none"},
        )  # fmt: skip


def _ok(call: Call, status: int) -> bool:
    return 200 <= status < 300


def _transpile(doc: dict[str, Any], tr: Translation, conf: dict[str, Any]) -> int:
    """In a worker thread: qiskit's first import takes seconds, transpiling is CPU work."""
    from . import isa

    return isa.transpile_pubs(doc, tr, conf)


def _always(call: Call, status: int) -> bool:
    return True


def _isa_error(tr: Translation, data: bytes) -> bytes:
    """A refused translated submission: name the transpile extra when the refusal is about ISA."""
    doc = _load(data)
    errors = doc.get("errors") if isinstance(doc, dict) else None
    if not (isinstance(errors, list) and errors and isinstance(errors[0], dict)):
        return data
    hinted = isa_hint(tr.kind, errors[0].get("message"), errors[0].get("code"))
    if hinted is None:
        return data
    errors[0]["message"] = hinted
    return json.dumps(doc, separators=(",", ":")).encode()

