#!/usr/bin/env python3
"""Drive qiskit-ibm-provider 0.11.0 (IBMProvider) through a Classic-API server.

Runs inside the provider venv made by tests/legacy/setup_venvs.sh, e.g.

    ~/.cache/qiskit-classic-proxy/legacy-venvs/provider-0.11.0/bin/python \
        tests/legacy/drive_provider.py --url http://127.0.0.1:8000/api --token TOKEN --out prov.json \
        [--runtime-job-id ID]

qiskit-ibm-provider 0.11 has no primitives: it can only submit `circuit-runner` / `qasm3-runner`
jobs (backend.run), which the new platform no longer has, so backend.run() MUST fail with a
clear 4xx error. Everything else it can do is exercised: init, instances, backends, backend
configuration/properties/status/defaults/target, sessions (open/close/cancel, max_time as int and
as "1h"), job listing with filters, and retrieve_job of a job submitted through the runtime path
(--runtime-job-id, e.g. one from drive_runtime.py's JSON "job_ids"). Only url= and token= differ
from ordinary SDK usage. Imports nothing from the proxy package.
"""

from __future__ import annotations

import os
import sys
import warnings
from datetime import datetime, timedelta

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _driver_common import Runner, Skip, backend_status_and_defaults_steps, base_parser, check

warnings.filterwarnings("ignore", category=DeprecationWarning)

import qiskit  # noqa: E402
import qiskit_ibm_provider  # noqa: E402
from qiskit import QuantumCircuit, transpile  # noqa: E402
from qiskit_ibm_provider import IBMProvider  # noqa: E402
from qiskit_ibm_provider.exceptions import IBMInputValueError  # noqa: E402
from qiskit_ibm_provider.job.exceptions import IBMJobNotFoundError  # noqa: E402

RETIRED_HINTS = ("circuit-runner", "qasm3-runner", "retired", "no longer", "sampler", "gone", "410")


def _status_codes(exc: BaseException) -> list[int]:
    out, cur, depth = [], exc, 0
    while cur is not None and depth < 5:
        code = getattr(cur, "status_code", None)
        if isinstance(code, int):
            out.append(code)
        cur = cur.__cause__ or cur.__context__
        depth += 1
    return out


def main() -> int:
    p = base_parser(__doc__.splitlines()[1])
    p.add_argument("--runtime-job-id", default=None, help="a job submitted via qiskit-ibm-runtime (SamplerV2)")
    args = p.parse_args()
    run = Runner(
        args,
        "drive_provider",
        {"qiskit-ibm-provider": qiskit_ibm_provider.__version__, "qiskit": qiskit.__version__},
    )
    ctx: dict = {}
    run.extra["session_ids"] = session_ids = {}
    run.extra["retired_errors"] = retired_errors = {}
    t_start = datetime.now() - timedelta(days=1)

    def s_init():
        kw = {"url": args.url, "token": args.token}
        if args.instance:
            kw["instance"] = args.instance
        ctx["provider"] = prov = IBMProvider(**kw)
        return f"active instance={prov.active_account().get('instance')}"

    run.step("provider_init", s_init, timeout=120)
    prov = lambda: ctx["provider"]  # noqa: E731
    npv = ("provider_init",)

    def s_instances():
        inst = prov().instances()
        check(isinstance(inst, list) and inst and all(i.count("/") == 2 for i in inst), f"instances={inst!r}")
        return f"instances={inst}"

    run.step("provider_instances", s_instances, needs=npv)

    def s_active_account():
        acct = prov().active_account()
        check(acct and acct.get("url") == args.url, f"active_account={acct!r}")
        return f"channel={acct.get('channel')} instance={acct.get('instance')}"

    run.step("provider_active_account", s_active_account, needs=npv)

    def s_backends():
        names = [b.name for b in prov().backends()]
        check(args.backend in names, f"{args.backend} not in provider.backends(): {names}")
        return f"backends={names}"

    run.step("provider_backends", s_backends, needs=npv, timeout=120)

    def s_get_backend():
        ctx["backend"] = b = prov().get_backend(args.backend)
        check(b.name == args.backend, f"name={b.name!r}")
        return f"{b.name} num_qubits={b.num_qubits} instance={b._instance}"

    run.step("provider_get_backend", s_get_backend, needs=npv)
    be = lambda: ctx["backend"]  # noqa: E731
    nb = ("provider_get_backend",)

    def s_configuration():
        conf = be().configuration()
        check(conf.backend_name == args.backend, f"backend_name={conf.backend_name!r}")
        return f"n_qubits={conf.n_qubits} basis_gates={conf.basis_gates} simulator={conf.simulator}"

    run.step("backend_configuration", s_configuration, needs=nb)

    def s_properties():
        props = be().properties()
        check(props is not None and len(props.qubits) == be().num_qubits, f"properties={props!r}")
        return f"backend_name={props.backend_name} last_update={props.last_update_date}"

    run.step("backend_properties", s_properties, needs=nb)

    backend_status_and_defaults_steps(run, be, nb)

    def s_target():
        t = be().target
        check(t.num_qubits == be().num_qubits, f"target.num_qubits={t.num_qubits}")
        return f"num_qubits={t.num_qubits} operations={sorted(t.operation_names)}"

    run.step("backend_target", s_target, needs=nb)

    def s_transpile():
        qc = QuantumCircuit(2, 2, name="bell")
        qc.h(0)
        qc.cx(0, 1)
        qc.measure([0, 1], [0, 1])
        ctx["isa"] = isa = transpile(qc, backend=be(), optimization_level=1)
        return f"ops={dict(isa.count_ops())}"

    run.step("transpile", s_transpile, needs=("backend_target",))

    def expect_retired(label: str, **run_kwargs):
        def fn():
            try:
                job = be().run(ctx["isa"], shots=100, **run_kwargs)
            except Exception as exc:  # the expected outcome
                msg = f"{type(exc).__name__}: {exc}"
                codes = _status_codes(exc)
                retired_errors[label] = {"message": msg[:1000], "status_codes": codes}
                check(type(exc).__name__.startswith("IBM"), f"not an SDK API error: {msg}")
                check(
                    any(400 <= c < 500 for c in codes),
                    f"expected a 4xx answer to the submit, got status codes {codes}: {msg}",
                )
                check(
                    any(h in msg.lower() for h in RETIRED_HINTS),
                    f"error does not say the program is retired: {msg}",
                )
                return f"status={codes} {msg}"
            raise AssertionError(f"backend.run() was accepted (job {job.job_id()}); expected a 4xx 'retired' error")

        return fn

    run.step("backend_run_retired", expect_retired("backend_run"), needs=("transpile",))
    run.step(
        "backend_run_dynamic_retired",
        expect_retired("backend_run_dynamic", dynamic=True),
        optional=True,
        needs=("transpile",),
    )

    # -- sessions ------------------------------------------------------------------------------
    def s_open_session():
        ses = be().open_session(max_time=600)
        check(ses.session_id, "open_session() created no server session (configuration simulator=true?)")
        session_ids["session"] = ses.session_id
        return f"session_id={ses.session_id}"

    run.step("backend_open_session", s_open_session, needs=nb)

    run.step(
        "session_backend_run_retired",
        expect_retired("session_backend_run"),
        optional=True,
        needs=("backend_open_session", "transpile"),
    )

    def s_close_session():
        be().close_session()
        check(be().session is None, "session still set after close_session()")
        return "closed"

    run.step("backend_close_session", s_close_session, needs=("backend_open_session",))

    def s_open_session_1h():
        ses = be().open_session(max_time="1h")  # provider 0.11 sends the raw string "1h"
        check(ses.session_id, "open_session(max_time='1h') created no server session")
        session_ids["session_1h"] = ses.session_id
        return f"session_id={ses.session_id}"

    run.step("backend_open_session_1h", s_open_session_1h, needs=nb)

    def s_cancel_session():
        be().cancel_session()
        return "cancelled"

    run.step("backend_cancel_session", s_cancel_session, needs=("backend_open_session_1h",))

    # -- jobs ----------------------------------------------------------------------------------
    def s_jobs_limit():
        jobs = prov().jobs(limit=5)
        check(isinstance(jobs, list) and len(jobs) <= 5, f"jobs(limit=5) -> {jobs!r}")
        return f"{len(jobs)} circuit-runner/qasm3-runner jobs (runtime primitive jobs are filtered out client-side)"

    run.step("provider_jobs_limit", s_jobs_limit, needs=npv)

    def s_jobs_filters():
        a = prov().jobs(limit=5, backend_name=args.backend, status="completed", start_datetime=t_start)
        b = prov().jobs(limit=5, job_tags=["tag-a"], descending=False)
        return f"backend/status/start_datetime: {len(a)} jobs; job_tags/ascending: {len(b)} jobs"

    run.step("provider_jobs_filters", s_jobs_filters, needs=npv)

    def s_retrieve_runtime():
        if not args.runtime_job_id:
            raise Skip("no --runtime-job-id given")
        try:
            job = prov().retrieve_job(args.runtime_job_id)
        except IBMInputValueError as exc:
            check("not run with qiskit-ibm-provider" in str(exc), f"IBMInputValueError: {exc}")
            return f"refused as expected for a primitive job: {exc}"
        return f"retrieved {type(job).__name__} status={job.status()}"

    run.step("provider_retrieve_runtime_job", s_retrieve_runtime, optional=True, needs=npv)

    def s_retrieve_missing():
        try:
            job = prov().retrieve_job("qcp-no-such-job-0000")
        except IBMJobNotFoundError as exc:
            return f"IBMJobNotFoundError: {exc}"
        raise AssertionError(f"retrieve_job of a missing id returned {job!r}")

    run.step("provider_retrieve_missing_job", s_retrieve_missing, optional=True, needs=npv)

    return run.finish()


if __name__ == "__main__":
    sys.exit(main())
