#!/usr/bin/env python3
"""Drive qiskit-ibm-provider 0.11.0 (IBMProvider) through a Classic-API server.

Runs inside the provider venv made by tests/legacy/setup_venvs.sh, e.g.

    ~/.cache/qiskit-classic-proxy/legacy-venvs/provider-0.11.0/bin/python \
        tests/legacy/drive_provider.py --url http://127.0.0.1:8000/api --token TOKEN --out prov.json \
        [--runtime-job-id ID]

qiskit-ibm-provider 0.11 has no primitives: it can only submit `circuit-runner` / `qasm3-runner`
jobs (backend.run), which the new platform no longer has; the proxy translates them into SamplerV2
jobs (issue #12) and rebuilds a qiskit Result. So backend.run([bell, ghz3, regs], shots=1000) must
give only 00/11 and 000/111 summing to 1000, the two-register circuit "10 1", memory=True gives
get_memory(), and retrieve_job / provider.jobs() find those jobs. Everything else it can do is
exercised too: init, instances, backends, backend configuration/properties/status/defaults/target,
sessions (open/close/cancel, max_time as int and as "1h", a run inside one), job listing with
filters, and retrieve_job of a job submitted through the runtime path (--runtime-job-id, e.g. one
from drive_runtime.py's JSON "job_ids"). Only url= and token= differ from ordinary SDK usage.
Imports nothing from the proxy package.
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
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister, transpile  # noqa: E402
from qiskit_ibm_provider import IBMProvider  # noqa: E402
from qiskit_ibm_provider.exceptions import IBMInputValueError  # noqa: E402
from qiskit_ibm_provider.job.exceptions import IBMJobNotFoundError  # noqa: E402

SHOTS = 1000


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
    run.extra["job_ids"] = job_ids = {}
    jt = args.job_timeout
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
        bell = QuantumCircuit(2, 2, name="bell")
        bell.h(0)
        bell.cx(0, 1)
        bell.measure([0, 1], [0, 1])
        ghz = QuantumCircuit(3, 3, name="ghz3")
        ghz.h(0)
        ghz.cx(0, 1)
        ghz.cx(1, 2)
        ghz.measure([0, 1, 2], [0, 1, 2])
        # Two registers: later registers are the higher bits of a count key ("b a" = "10 1").
        q, a, b = QuantumRegister(3, "q"), ClassicalRegister(1, "a"), ClassicalRegister(2, "b")
        regs = QuantumCircuit(q, a, b, name="regs")
        regs.x(0)
        regs.x(2)
        regs.measure(q[0], a[0])
        regs.measure([q[1], q[2]], [b[0], b[1]])
        isa = transpile([bell, ghz, regs], backend=be(), optimization_level=1)
        ctx["isa"], ctx["isa_ghz"], ctx["isa_regs"] = isa
        return f"ops={dict(isa[0].count_ops())}"

    run.step("transpile", s_transpile, needs=("backend_target",))
    nt = ("transpile",)

    def s_run_counts():
        job = be().run([ctx["isa"], ctx["isa_ghz"], ctx["isa_regs"]], shots=SHOTS)
        job_ids["run"] = job.job_id()
        res = job.result(timeout=jt)
        check(res.success, f"result not successful: {res.status}")
        c_bell, c_ghz, c_regs = (res.get_counts(i) for i in range(3))
        check(set(c_bell) == {"00", "11"}, f"Bell counts {c_bell}: only (and both) 00 and 11 expected")
        check(set(c_ghz) == {"000", "111"}, f"GHZ counts {c_ghz}: only (and both) 000 and 111 expected")
        check(c_regs == {"10 1": SHOTS}, f"two-register counts {c_regs}, expected {{'10 1': {SHOTS}}}")
        for c in (c_bell, c_ghz):
            check(sum(c.values()) == SHOTS, f"counts {c} sum to {sum(c.values())}, not {SHOTS}")
            check(min(c.values()) > SHOTS * 0.35, f"counts {c}: far from 50/50")
        names = [r.header.name for r in res.results]
        check(names == ["bell", "ghz3", "regs"], f"experiment names {names}")
        check(res.get_counts("ghz3") == c_ghz, "get_counts by circuit name differs")
        check(job.status().name == "DONE", f"status {job.status()}")
        return f"bell={c_bell} ghz3={c_ghz} regs={c_regs}"

    run.step("backend_run_counts", s_run_counts, needs=nt)

    def s_run_memory():
        job = be().run(ctx["isa"], shots=50, memory=True)
        job_ids["memory"] = job.job_id()
        res = job.result(timeout=jt)
        mem = res.get_memory(0)
        check(len(mem) == 50 and set(mem) <= {"00", "11"}, f"get_memory() = {mem}")
        counts = res.get_counts(0)
        check({k: mem.count(k) for k in set(mem)} == counts, f"memory {mem} does not match counts {counts}")
        return f"{len(mem)} shots, first {mem[:6]}, counts {counts}"

    run.step("backend_run_memory", s_run_memory, needs=nt)

    def s_run_dynamic():
        job = be().run(ctx["isa"], shots=100, dynamic=True)
        job_ids["dynamic"] = job.job_id()
        counts = job.result(timeout=jt).get_counts(0)
        check(set(counts) == {"00", "11"} and sum(counts.values()) == 100, f"counts {counts}")
        return f"qasm3-runner: {counts}"

    run.step("backend_run_dynamic", s_run_dynamic, optional=True, needs=nt)

    def s_retrieve():
        job = prov().retrieve_job(job_ids["run"])
        check(job.job_id() == job_ids["run"], f"retrieved {job.job_id()}")
        res = job.result(timeout=jt)
        counts = res.get_counts(1)
        check(set(counts) == {"000", "111"} and sum(counts.values()) == SHOTS, f"retrieved GHZ counts {counts}")
        return f"retrieved {type(job).__name__} backend={job.backend().name} ghz3={counts}"

    run.step("provider_retrieve_job", s_retrieve, needs=("backend_run_counts",))

    def s_jobs_list():
        listed = [j.job_id() for j in prov().jobs(limit=20)]
        missing = [j for k, j in job_ids.items() if k in ("run", "memory") and j not in listed]
        check(not missing, f"provider.jobs() misses {missing}; lists {listed}")
        return f"provider.jobs() lists {len(listed)} jobs incl. {sorted(job_ids.values())}"

    run.step("provider_jobs_lists_run_jobs", s_jobs_list, needs=("backend_run_counts", "backend_run_memory"))

    # -- sessions ------------------------------------------------------------------------------
    def s_open_session():
        ses = be().open_session(max_time=600)
        check(ses.session_id, "open_session() created no server session (configuration simulator=true?)")
        session_ids["session"] = ses.session_id
        return f"session_id={ses.session_id}"

    run.step("backend_open_session", s_open_session, needs=nb)

    def s_session_run():
        job = be().run(ctx["isa"], shots=100)
        job_ids["session"] = job.job_id()
        counts = job.result(timeout=jt).get_counts(0)
        check(set(counts) == {"00", "11"} and sum(counts.values()) == 100, f"counts {counts}")
        return f"job {job.job_id()} in session {session_ids['session']}: {counts}"

    run.step("session_backend_run", s_session_run, needs=("backend_open_session", "transpile"))

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
