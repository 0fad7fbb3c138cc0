# ruff: noqa: E501, RUF001, RUF002  (a table of cases: one per line reads better; the signs are typography)
"""The routes legacy SDKs really call, as benchmark cases (used by bench/run.py).

Each case is one Classic request (method, path, body) that the proxy, nginx (doing the same path
rewrite and header injection) and the naive forwarder all receive, plus the new-API path the
upstream nginx serves for it. `MIX` is a legacy SDK session: mostly job polling.

Why the documents look like this: sizes and shapes follow what the new API answers (a 1–2 KB job,
a 10-job list without params, 5 devices), so the proxy's fix-ups do their real work.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

JOB_ID = "d1bench0job0000000000"
BIG_JOB_ID = "d1bench0big0000000000"
MISSING_JOB_ID = "d1missing00000000000"


@dataclass(frozen=True)
class Case:
    key: str
    label: str  # shown in the report: the Classic call
    method: str
    path: str  # on the proxy / nginx proxy / naive forwarder
    upstream: str  # what the upstream nginx serves it from (for the direct runs)
    body: str = ""  # file name in the work dir (POST)
    status: int = 200  # the answer every server should give
    bulk: bool = False  # a large body: throughput-bound, not part of the per-request targets


CASES: tuple[Case, ...] = (
    Case("job", "`GET /jobs/{id}` (1.4 KB job)", "GET", f"/runtime/jobs/{JOB_ID}", f"/api/v1/jobs/{JOB_ID}"),
    Case("job_list", "`GET /jobs?limit=10`", "GET", "/runtime/jobs?limit=10", "/api/v1/jobs?limit=10&exclude_params=true"),
    Case("backends", "`GET /backends` (5 devices)", "GET", "/runtime/backends", "/api/v1/backends"),
    Case("status", "`GET /backends/{name}/status`", "GET", "/runtime/backends/fake_bench/status", "/api/v1/backends/fake_bench/status"),
    Case("results_1k", "`GET /jobs/{id}/results` (1 KB)", "GET", f"/runtime/jobs/{JOB_ID}/results", f"/api/v1/jobs/{JOB_ID}/results"),
    Case("submit_10k", "`POST /jobs` (10 KB, hub/group/project)", "POST", "/runtime/jobs", "/api/v1/jobs", body="submit-10k.json"),
    Case("gone_410", "`GET /health` (410, removed)", "GET", "/runtime/health", "", status=410),
    Case("missing_404", "`GET /jobs/{id}` unknown job (404)", "GET", f"/runtime/jobs/{MISSING_JOB_ID}", f"/api/v1/jobs/{MISSING_JOB_ID}", status=404),
    Case("results_10m", "`GET /jobs/{id}/results` (10 MB)", "GET", f"/runtime/jobs/{BIG_JOB_ID}/results", f"/api/v1/jobs/{BIG_JOB_ID}/results", bulk=True),
    Case("submit_10m", "`POST /jobs` (10 MB, hub/group/project)", "POST", "/runtime/jobs", "/api/v1/jobs", body="submit-10m.json", bulk=True),
)
BY_KEY = {c.key: c for c in CASES}

#: One legacy SDK session, per 20 requests: a submit, then polling (qiskit-ibm-provider's
#: wait_for_final_state / runtime's job.status()), a result, the odd list and backend look-ups.
MIX: tuple[tuple[str, int], ...] = (
    ("job", 14), ("status", 2), ("job_list", 1), ("backends", 1), ("results_1k", 1), ("submit_10k", 1),
)
MIX_LABEL = ", ".join(f"{n}× {BY_KEY[k].label.split(' (')[0].strip('`')}" for k, n in MIX)


def _job(i: int, with_params: bool) -> dict[str, object]:
    doc: dict[str, object] = {
        "id": JOB_ID if i == 0 else f"d1bench0job{i:010d}",
        "backend": "fake_bench",
        "state": {"status": "Completed", "reason": None, "reason_code": None},
        "status": "Completed",
        "program": {"id": "sampler"},
        "created": f"2026-11-{20 + i % 9:02d}T10:{i % 60:02d}:00.123456Z",
        "ended": f"2026-11-{20 + i % 9:02d}T10:{i % 60:02d}:09.654321Z",
        "runtime": "",
        "tags": ["bench", "legacy-sdk"],
        "session_id": None,
        "private": False,
        "user_id": "IBMid-0000000BENCH",
        "cost": 600,
        "usage": {"quantum_seconds": 4, "seconds": 4},
        "estimated_running_time_seconds": 3.2,
        "remote_storage": None,
    }
    if with_params:
        doc["params"] = {
            "version": 2,
            "support_qiskit": True,
            "options": {"default_shots": 4096, "execution": {"init_qubits": True, "rep_delay": 0.00025}},
            "pubs": [[{"__type__": "QuantumCircuit", "__value__": "UUlTS0lUDAEAAAAAAAAAAAABZXEAC2YACAAAAAMAAAAAAAAAAAAAAAIAAAABAAAAAAAAAAZjaXJjdWl0LTE2MAAAAAAAAAAAd" * 4}, None, 4096]],
        }
    return doc


def write_documents(www: Path) -> None:
    """The upstream's answers (static files nginx serves) and the submission bodies."""

    def put(name: str, doc: object) -> None:
        (www / name).write_text(json.dumps(doc, separators=(",", ":")))

    put("job.json", _job(0, with_params=True))
    put("jobs.json", {"jobs": [_job(i, with_params=False) for i in range(10)], "count": 1234, "offset": 0, "limit": 10})
    put(
        "backends.json",
        {"devices": [{"name": n, "status": {"name": "online"}, "qubits": 127} for n in
                     ("ibm_brisbane", "ibm_sherbrooke", "ibm_kyiv", "ibm_torino", "fake_bench")]},
    )
    small = {"id": JOB_ID, "results": [{"__type__": "PrimitiveResult", "__value__": {"pub_results": [], "metadata": {}}}]}
    small["pad"] = "0" * (1024 - len(json.dumps(small, separators=(",", ":"))) - 8)
    put("results-1k.json", small)


def submission(size: int) -> bytes:
    """A SamplerV2 job submission of about `size` bytes, with the legacy hub/group/project/private."""
    head = (
        b'{"hub":"ibm-q","group":"open","project":"main","private":false,"program_id":"sampler",'
        b'"backend":"fake_bench","params":{"version":2,"pubs":[[{"__type__":"QuantumCircuit","__value__":"'
    )
    tail = b'"},null,4096]]}}'
    return head + b"A" * max(0, size - len(head) - len(tail)) + tail


def lua_single(case: Case, work: Path) -> str:
    """A wrk script sending one case (wrk's default is a plain GET: only POSTs need a script)."""
    lines = [f'wrk.method = "{case.method}"']
    if case.body:
        lines += [
            'wrk.headers["Content-Type"] = "application/json"',
            f'local f = assert(io.open("{work / case.body}", "rb")); wrk.body = f:read("*a"); f:close()',
        ]
    return "\n".join(lines) + "\n"


def lua_mix(work: Path) -> str:
    """A wrk script cycling through MIX (one wrk thread: one counter, so the proportions are exact)."""
    pattern = []
    for key, n in MIX:
        c = BY_KEY[key]
        pattern += [f'{{"{c.method}", "{c.path}", {"true" if c.body else "false"}, "{c.body}"}}'] * n
    # Interleave: the submit and the result are not back to back with each other.
    order = ",\n  ".join(pattern[i] for i in sorted(range(len(pattern)), key=lambda i: (i * 7) % len(pattern)))
    return f"""
local pattern = {{
  {order}
}}
local reqs = {{}}
local bodies = {{}}
init = function(args)
  for i, p in ipairs(pattern) do
    local h = {{}}
    for k, v in pairs(wrk.headers) do h[k] = v end
    local body = nil
    if p[3] then
      if not bodies[p[4]] then
        local f = assert(io.open("{work}/" .. p[4], "rb")); bodies[p[4]] = f:read("*a"); f:close()
      end
      body = bodies[p[4]]
      h["Content-Type"] = "application/json"
    end
    reqs[i] = wrk.format(p[1], p[2], h, body)
  end
end
local i = 0
request = function()
  i = i % #reqs + 1
  return reqs[i]
end
"""

#: The mixed scenario, as a pseudo-case for the report tables.
MIXED = Case("mixed", "**mixed legacy SDK session**", "MIX", "", "")
