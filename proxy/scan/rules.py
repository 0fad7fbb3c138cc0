"""The scan rules, as data: one row per legacy pattern, like ruff's rule table.

Each rule says what the code does, which part of the proxy keeps it working today (`relies_on`,
and the Classic routes it produces, for `report --with-scan`), and the change that retires it.
Codes are stable: never reuse or renumber one; retire a rule by deleting its row.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Pseudo-route: "every route this SDK calls" (account set-up patterns produce all of them).
ANY_ROUTE = "*"

RUNTIME = "qiskit_ibm_runtime"
PROVIDER = "qiskit_ibm_provider"
#: `Rule.sdk` for patterns that only an SDK call produces: the SDKs the file imports.
IMPORTED = "imported"

#: The last qiskit-ibm-runtime release whose `Sampler`/`Estimator` are the V1 primitives.
LAST_V1_RUNTIME = (0, 27)

_LOGIN = ("POST /users/loginWithToken", "GET /users/me", "GET /Network", "GET /version")
_SUBMIT = ("POST /jobs", "GET /jobs/{job_id}", "GET /jobs/{job_id}/results")
DOCS = "https://quantum.cloud.ibm.com/docs/en/migration-guides"


@dataclass(frozen=True)
class Rule:
    code: str
    name: str
    message: str
    relies_on: str
    fix: str
    routes: tuple[str, ...] = ()
    #: The SDK whose traffic this code produces ("" = any caller, IMPORTED = an SDK the file imports).
    sdk: str = ""
    #: Traffic from newer clients than this cannot come from this code (None = any version).
    max_client: tuple[int, ...] | None = None
    level: str = "warning"  # SARIF level: error | warning | note
    help_uri: str = DOCS

    @property
    def family(self) -> str:
        return {"1": "account and channel", "2": "programs", "3": "options and shapes"}[self.code[3]]


RULES: tuple[Rule, ...] = (
    # QCP1xx: account and channel
    Rule(
        "QCP101", "channel-ibm-quantum",
        'channel="ibm_quantum" names the retired IBM Quantum Platform Classic',
        "the synthesized Classic login (POST /users/loginWithToken) and every Classic route",
        'use channel="ibm_quantum_platform" (qiskit-ibm-runtime >= 0.40) with an IBM Cloud API key as token '
        "and the instance CRN as instance",
        routes=(ANY_ROUTE,), sdk=RUNTIME, level="error",
    ),
    Rule(
        "QCP102", "ibm-provider",
        "qiskit-ibm-provider is retired; it speaks only the Classic API",
        "the Classic login, hub/group/project mapping and the backend.run translation",
        "use qiskit_ibm_runtime.QiskitRuntimeService and the V2 primitives (SamplerV2(mode=backend))",
        routes=(ANY_ROUTE,), sdk=PROVIDER, level="error",
    ),
    Rule(
        "QCP103", "ibmq-account",
        "IBMQ.enable_account/load_account/save_account (qiskit-ibmq-provider) is retired",
        "the Classic login and the hub/group/project mapping",
        'use QiskitRuntimeService.save_account(channel="ibm_quantum_platform", token=API_KEY, instance=CRN)',
        routes=_LOGIN, level="error",
    ),
    Rule(
        "QCP104", "hub-group-project",
        "hub/group/project (or instance=\"hub/group/project\") no longer names an instance",
        "the proxy's hub/group/project -> Service-CRN table ([instances] in the config)",
        "pass the instance CRN (crn:v1:bluemix:public:quantum-computing:...) as instance=",
        routes=(ANY_ROUTE,), sdk=IMPORTED,
    ),
    Rule(
        "QCP105", "classic-url",
        "a Classic endpoint URL (quantum-computing.ibm.com) that IBM no longer serves",
        "the proxy's Classic surface at this URL's path",
        "call https://quantum.cloud.ibm.com/api/v1 with an IAM bearer token and Service-CRN (or keep the "
        "proxy's URL while migrating)",
        routes=(ANY_ROUTE,), level="error",
    ),
    # QCP2xx: programs
    Rule(
        "QCP201", "v1-primitive",
        "Sampler/Estimator from qiskit-ibm-runtime <= 0.27 are the V1 primitives, which IBM no longer runs",
        "the proxy's V1 -> SamplerV2/EstimatorV2 job translation",
        "use SamplerV2/EstimatorV2 (mode=backend or session); read result[i].data.<creg>.get_counts() "
        "or result[i].data.evs",
        routes=_SUBMIT, sdk=RUNTIME, max_client=LAST_V1_RUNTIME, level="error",
    ),
    Rule(
        "QCP202", "v1-primitive-alias",
        "SamplerV1/EstimatorV1 are the V1 primitives, which IBM no longer runs",
        "the proxy's V1 -> SamplerV2/EstimatorV2 job translation",
        "use SamplerV2/EstimatorV2",
        routes=_SUBMIT, sdk=RUNTIME, level="error",
    ),
    Rule(
        "QCP203", "backend-run",
        "backend.run() on an IBM backend submits the retired circuit-runner program",
        "the proxy's circuit-runner -> SamplerV2 translation and GET /facade/v1/jobs/{id}/type",
        "use SamplerV2(mode=backend).run([isa_circuit], shots=...) and result[0].data.<creg>.get_counts()",
        routes=(*_SUBMIT, "GET /facade/v1/jobs/{job_id}/type"), level="error",
    ),
    Rule(
        "QCP204", "qiskit-execute",
        "qiskit.execute() was removed in Qiskit 1.0 and calls backend.run() (circuit-runner)",
        "the proxy's circuit-runner -> SamplerV2 translation",
        "transpile for the backend, then SamplerV2(mode=backend).run([circuit])",
        routes=_SUBMIT, level="error",
    ),
    Rule(
        "QCP205", "retired-program",
        "program_id names a program IBM no longer runs",
        "the proxy's translation (circuit-runner, qasm3-runner) or its program_retired refusal",
        'use program_id="sampler" or "estimator" with the V2 primitives',
        routes=("POST /jobs",), level="error",
    ),
    # QCP3xx: options and shapes
    Rule(
        "QCP301", "max-session-ttl",
        "max_session_ttl is max_ttl on the new API",
        "the proxy's max_session_ttl -> max_ttl rewrite",
        "use max_ttl",
        routes=("POST /sessions", "GET /sessions/{session_id}"),
    ),
    Rule(
        "QCP302", "session-max-time",
        "Session(..., max_time=) is the session's max_ttl on the new API; interactive_ttl is separate",
        "the proxy's max_session_ttl -> max_ttl rewrite",
        "keep max_time, and check the session's max_ttl and interactive_ttl in the new API's answer",
        routes=("POST /sessions",), level="note",
    ),
    Rule(
        "QCP303", "quasi-dists",
        ".quasi_dists is the V1 Sampler result, which the new API does not produce",
        "the proxy's V1 answer rebuild (GET /jobs/{id}/results)",
        "read result[i].data.<creg>.get_counts() (SamplerV2)",
        routes=("GET /jobs/{job_id}/results",), sdk=RUNTIME, max_client=LAST_V1_RUNTIME,
    ),
    Rule(
        "QCP304", "runtime-get-counts",
        "job.result().get_counts() reads a circuit-runner Result, which the new API does not produce",
        "the proxy's circuit-runner answer rebuild (GET /jobs/{id}/results)",
        "read result[0].data.<creg>.get_counts() (SamplerV2)",
        routes=("GET /jobs/{job_id}/results",),
    ),
    Rule(
        "QCP305", "service-usage",
        "service.usage() calls GET /usage, which the new API removed",
        "the proxy's local answer for legacy SDKs (410 for other callers)",
        "read usage from GET /v1/instances/usage (service.usage() in qiskit-ibm-runtime >= 0.41)",
        routes=("GET /usage",),
    ),
    Rule(
        "QCP306", "classic-path",
        "a Classic REST path in a string (requests/curl/dashboards)",
        "the proxy's route table for this path",
        "call the new API path shown (https://quantum.cloud.ibm.com/api/v1/...) with an IAM bearer token "
        "and Service-CRN",
        routes=(),  # the matched route, per finding
    ),
)

BY_CODE: dict[str, Rule] = {r.code: r for r in RULES}


def select_rules(select: list[str] | None = None, ignore: list[str] | None = None) -> set[str]:
    """Codes enabled by --select/--ignore; a prefix ("QCP2") selects a family, like ruff."""
    def expand(items: list[str]) -> set[str]:
        out: set[str] = set()
        for item in items:
            item = item.strip().upper()
            if not item:
                continue
            hits = {c for c in BY_CODE if c.startswith(item)}
            if not hits:
                raise ValueError(f"unknown rule code or prefix {item!r} (known: {', '.join(BY_CODE)})")
            out |= hits
        return out

    chosen = expand(select) if select else set(BY_CODE)
    return chosen - expand(ignore or [])
