#!/usr/bin/env python3
"""Drive qiskit-ibm-runtime 0.40.1 / 0.30.0 / 0.23.0 (ibm_quantum or ibm_cloud) through a Classic-API server.

Runs inside the legacy venvs made by tests/legacy/setup_venvs.sh, e.g.

    ~/.cache/qiskit-classic-proxy/legacy-venvs/runtime-0.40.1/bin/python \
        tests/legacy/drive_runtime.py --url http://127.0.0.1:8000/api --token TOKEN --out r40.json

The only difference from ordinary SDK usage is url= and token= (no other patching). With
`--url-mode none` not even url= is given: the caller's environment (HTTPS_PROXY + REQUESTS_CA_BUNDLE,
the proxy's intercepting mode) does the rest. `--channel ibm_cloud` takes `--instance CRN`;
`--url-mode experimental` passes `http://experimental@host:port` (every release keeps such a URL as
is), `--url-mode resolver` passes `url_resolver=` (0.30+). Every step is
recorded as {"step", "ok", "optional", "detail"|"error"}; the exit code is 0 only if all
required steps passed. Imports nothing from the proxy package.
"""

from __future__ import annotations

import inspect
import os
import sys
import uuid
import warnings
from datetime import datetime, timedelta, timezone

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _driver_common import Runner, Skip, backend_status_and_defaults_steps, base_parser, check, counts_check

warnings.filterwarnings("ignore", category=DeprecationWarning)

import qiskit  # noqa: E402
import qiskit_ibm_runtime  # noqa: E402
from qiskit import QuantumCircuit  # noqa: E402
from qiskit_ibm_runtime import Batch, QiskitRuntimeService, SamplerV2, Session  # noqa: E402
from qiskit_ibm_runtime.exceptions import RuntimeInvalidStateError, RuntimeJobNotFound  # noqa: E402

try:  # qiskit >= 1.3
    from qiskit.transpiler import generate_preset_pass_manager
except ImportError:  # qiskit 1.0.x
    from qiskit.transpiler.preset_passmanagers import generate_preset_pass_manager

VERSION = tuple(int(x) for x in qiskit_ibm_runtime.__version__.split(".")[:2])
FINAL = {"DONE", "CANCELLED", "ERROR"}
SHOTS = 100
OPT_SHOTS = 64


def main() -> int:
    parser = base_parser(__doc__.splitlines()[1])
    parser.add_argument("--channel", choices=["ibm_quantum", "ibm_cloud"], default="ibm_quantum")
    parser.add_argument(
        "--url-mode", choices=["given", "none", "experimental", "resolver"], default="given",
        help="how --url reaches the SDK: url=, not at all (intercepting mode), experimental@ URL, url_resolver=",
    )
    args = parser.parse_args()
    run = Runner(
        args,
        "drive_runtime",
        {"qiskit-ibm-runtime": qiskit_ibm_runtime.__version__, "qiskit": qiskit.__version__},
    )
    ctx: dict = {}
    run_tag = f"qcp-{uuid.uuid4().hex[:10]}"
    t_start = datetime.now(timezone.utc) - timedelta(minutes=2)
    run.extra["run_tag"] = run_tag
    run.extra["job_ids"] = job_ids = {}
    run.extra["session_ids"] = session_ids = {}
    jt = args.job_timeout

    # -- helpers -------------------------------------------------------------------------------
    def sampler_for(mode):
        params = inspect.signature(SamplerV2.__init__).parameters
        if "mode" in params:  # 0.40.x
            return SamplerV2(mode=mode)
        if isinstance(mode, (Session, Batch)):  # 0.23.x
            return SamplerV2(session=mode)
        return SamplerV2(backend=mode)

    def check_result(job, shots=SHOTS):
        """Decode result(); a sane 2-bit BitArray whose counts add up. shots=None: any shot count."""
        res = job.result(timeout=jt)
        check(res is not None, "result() returned None")
        check(len(res) == 1, f"expected 1 pub result, got {len(res)}")
        pub = res[0]
        data = pub.data
        bits = getattr(data, "meas", None)
        check(bits is not None, f"no 'meas' field in DataBin: {data!r}")
        ctx.setdefault("num_shots", {})[job.job_id()] = bits.num_shots
        if shots is not None:
            check(bits.num_shots == shots, f"BitArray num_shots={bits.num_shots}, expected {shots}")
        check(bits.num_bits == 2, f"BitArray num_bits={bits.num_bits}, expected 2")
        return f"{type(pub).__name__}: " + counts_check(bits.get_counts(), bits.num_shots, 2)

    def final_status(job):
        job.wait_for_final_state(timeout=jt)
        st = job.status()
        return getattr(st, "name", st)  # a JobStatus enum on some versions

    # -- service + backend ---------------------------------------------------------------------
    def s_service():
        kw = {"channel": args.channel, "token": args.token}
        if args.url_mode == "given":
            kw["url"] = args.url
        elif args.url_mode == "experimental":
            scheme, _, rest = args.url.partition("://")
            kw["url"] = f"{scheme}://experimental@{rest}"
        elif args.url_mode == "resolver":
            kw["url_resolver"] = lambda *_a, **_k: args.url
        if args.instance:
            kw["instance"] = args.instance
        ctx["service"] = svc = QiskitRuntimeService(**kw)
        return f"channel={svc.channel} active instance={svc.active_account().get('instance')}"

    run.step("service_init", s_service, timeout=120)
    svc = lambda: ctx["service"]  # noqa: E731

    def s_instances():
        inst = svc().instances()
        check(isinstance(inst, list) and inst, f"no instances: {inst!r}")
        if args.channel == "ibm_quantum":
            check(all(i.count("/") == 2 for i in inst), f"not h/g/p: {inst}")
        return f"instances={inst}"

    # ibm_cloud callers list instances through IBM Cloud's resource search, not this API.
    run.step("service_instances", s_instances, needs=("service_init",), optional=args.channel == "ibm_cloud")

    def s_active_account():
        acct = svc().active_account()
        check(acct and acct.get("channel") == args.channel, f"active_account={acct!r}")
        if args.url_mode == "given":
            check(acct.get("url") == args.url, f"url {acct.get('url')!r} != {args.url!r}")
        if args.channel == "ibm_cloud" and args.instance:
            if args.instance.startswith("crn:"):
                check(acct.get("instance") == args.instance, f"instance {acct.get('instance')!r} != {args.instance!r}")
            else:  # an instance name, resolved through IBM Cloud's resource search
                check(str(acct.get("instance")).startswith("crn:"), f"{args.instance!r} -> {acct.get('instance')!r}")
        return f"channel={acct.get('channel')} url={acct.get('url')} instance={acct.get('instance')}"

    run.step("service_active_account", s_active_account, needs=("service_init",))

    def s_backends():
        names = [b.name for b in svc().backends()]
        check(args.backend in names, f"{args.backend} not in backends(): {names}")
        return f"backends={names}"

    run.step("service_backends", s_backends, needs=("service_init",), timeout=120)

    def s_backend():
        ctx["backend"] = b = svc().backend(args.backend)
        check(b.name == args.backend, f"backend name {b.name!r}")
        return f"{b.name} num_qubits={b.num_qubits} instance={getattr(b, '_instance', None)}"

    run.step("service_backend", s_backend, needs=("service_init",))
    be = lambda: ctx["backend"]  # noqa: E731
    nb = ("service_backend",)

    def s_configuration():
        conf = be().configuration()
        check(conf.backend_name == args.backend, f"configuration backend_name={conf.backend_name!r}")
        check(conf.n_qubits >= 2, f"n_qubits={conf.n_qubits}")
        return (
            f"n_qubits={conf.n_qubits} basis_gates={conf.basis_gates} "
            f"simulator={conf.simulator} max_shots={conf.max_shots}"
        )

    run.step("backend_configuration", s_configuration, needs=nb)

    def s_properties():
        props = be().properties()
        check(props is not None, "properties() returned None")
        check(len(props.qubits) == be().num_qubits, f"{len(props.qubits)} qubits in properties")
        return f"backend_name={props.backend_name} last_update={props.last_update_date} t1(q0)={props.t1(0)}"

    run.step("backend_properties", s_properties, needs=nb)

    backend_status_and_defaults_steps(run, be, nb)

    def s_target():
        t = be().target
        check(t.num_qubits == be().num_qubits, f"target.num_qubits={t.num_qubits}")
        check("measure" in t.operation_names, f"no measure in target: {t.operation_names}")
        return f"num_qubits={t.num_qubits} operations={sorted(t.operation_names)}"

    run.step("backend_target", s_target, needs=nb)

    def s_least_busy():
        b = svc().least_busy()
        return f"least_busy={b.name}"

    run.step("service_least_busy", s_least_busy, optional=True, needs=("service_init",), timeout=120)

    def s_transpile():
        qc = QuantumCircuit(2)
        qc.h(0)
        qc.cx(0, 1)
        qc.measure_all()
        pm = generate_preset_pass_manager(backend=be(), optimization_level=1)
        ctx["isa"] = isa = pm.run(qc)
        check(isa.num_qubits == be().num_qubits, f"isa num_qubits={isa.num_qubits}")
        return f"ops={dict(isa.count_ops())}"

    run.step("transpile", s_transpile, needs=("backend_target",))
    isa = lambda: ctx["isa"]  # noqa: E731

    # -- job mode ------------------------------------------------------------------------------
    def s_run():
        ctx["job"] = job = sampler_for(be()).run([isa()], shots=SHOTS)
        job_ids["job"] = job.job_id()
        check(job.job_id(), "no job id")
        return f"job_id={job.job_id()} backend={job.backend().name}"

    run.step("sampler_run", s_run, needs=("transpile",))
    job = lambda: ctx["job"]  # noqa: E731
    nj = ("sampler_run",)

    def s_job_status():
        st = job().status()
        st = getattr(st, "name", st)  # 0.23 may return a JobStatus enum
        check(st in {"INITIALIZING", "QUEUED", "RUNNING", "VALIDATING", *FINAL}, f"status={st!r}")
        return f"status={st}"

    run.step("job_status", s_job_status, needs=nj)

    def s_final():
        st = final_status(job())
        check(st == "DONE", f"final status={st!r}")
        return f"status={st}"

    run.step("job_final", s_final, needs=nj)
    run.step("job_result", lambda: check_result(job()), needs=nj)

    def s_usage_est():
        return f"usage_estimation={job().usage_estimation}"

    run.step("job_usage_estimation", s_usage_est, optional=True, needs=nj)

    def s_metrics():
        m = job().metrics()
        check(isinstance(m, dict) and m, f"metrics={m!r}")
        return f"keys={sorted(m)} usage={m.get('usage')} timestamps={m.get('timestamps')}"

    run.step("job_metrics", s_metrics, needs=nj)

    if VERSION >= (0, 30):

        def s_job_usage():
            u = job().usage()
            check(isinstance(u, (int, float)), f"job.usage() = {u!r} (metrics usage.quantum_seconds missing?)")
            return f"usage={u}"

        run.step("job_usage", s_job_usage, needs=nj)

    def s_tags():
        tags = job().update_tags(["tag-a", run_tag])
        check(set(tags) == {"tag-a", run_tag}, f"tags after update={tags}")
        return f"tags={tags}"

    run.step("job_update_tags", s_tags, needs=nj)

    def s_logs():
        logs = job().logs()
        check(isinstance(logs, str), f"logs type {type(logs).__name__}")
        return f"logs={logs[:120]!r}"

    run.step("job_logs", s_logs, needs=nj)

    def s_inputs():
        inputs = job().inputs
        check(isinstance(inputs, dict) and "pubs" in inputs, f"inputs keys={list(inputs or {})}")
        return f"inputs keys={sorted(inputs)}"

    run.step("job_inputs", s_inputs, needs=nj)

    def s_options_job():
        sampler = sampler_for(be())
        sampler.options.default_shots = OPT_SHOTS
        sampler.options.environment.job_tags = ["opts", run_tag + "-opts"]
        sampler.options.max_execution_time = 300
        if VERSION >= (0, 30):
            sampler.options.environment.private = True
        j = sampler.run([isa()])
        job_ids["options_job"] = j.job_id()
        detail = check_result(j, shots=None)  # shot count checked in the next (optional) step
        tags = svc().job(j.job_id()).tags  # as stored by the server
        check(set(tags or []) >= {"opts", run_tag + "-opts"}, f"server-side job.tags={tags}")
        return f"job_id={j.job_id()} tags={tags} {detail}"

    run.step("sampler_run_with_options", s_options_job, needs=("transpile",))

    def s_default_shots():
        got = ctx["num_shots"][job_ids["options_job"]]
        check(got == OPT_SHOTS, f"BitArray num_shots={got}, expected options.default_shots={OPT_SHOTS}")
        return f"num_shots={got}"

    run.step("options_default_shots_honoured", s_default_shots, optional=True, needs=("sampler_run_with_options",))

    # -- listing -------------------------------------------------------------------------------
    def s_jobs_limit():
        jobs = svc().jobs(limit=5)
        check(isinstance(jobs, list) and 0 < len(jobs) <= 5, f"jobs(limit=5) returned {len(jobs)}")
        ids = [j.job_id() for j in jobs]
        return f"{len(jobs)} jobs, ours in list: {job_ids.get('job') in ids}"

    run.step("service_jobs_limit", s_jobs_limit, needs=("service_init", "sampler_run"))

    def s_jobs_tag():
        jobs = svc().jobs(limit=10, job_tags=[run_tag])
        ids = [j.job_id() for j in jobs]
        check(ids == [job_ids["job"]], f"jobs(job_tags=[{run_tag}]) -> {ids}, expected [{job_ids['job']}]")
        return f"ids={ids}"

    run.step("service_jobs_filter_tags", s_jobs_tag, needs=("job_update_tags",))

    def s_jobs_backend_pending():
        jobs = svc().jobs(limit=10, backend_name=args.backend, pending=False, program_id="sampler")
        check(jobs, "no jobs for backend/pending=False/program_id=sampler")
        names = {j.backend().name for j in jobs}
        check(names == {args.backend}, f"backends in result: {names}")
        sts = {getattr(s, "name", s) for s in (j.status() for j in jobs[:3])}
        check(sts <= FINAL, f"pending=False returned statuses {sts}")
        return f"{len(jobs)} jobs, backends={names}, sample statuses={sts}"

    run.step("service_jobs_filter_backend_pending", s_jobs_backend_pending, needs=("job_final",))

    def s_jobs_created_asc():
        jobs = svc().jobs(limit=50, created_after=t_start, descending=False)
        ids = [j.job_id() for j in jobs]
        check(job_ids["job"] in ids, f"our job not in jobs(created_after={t_start.isoformat()}) {ids}")
        dates = [j.creation_date for j in jobs if j.creation_date]
        check(dates == sorted(dates), "descending=False did not return ascending creation dates")
        return f"{len(jobs)} jobs since {t_start.isoformat()}, ascending"

    run.step("service_jobs_filter_created_after_asc", s_jobs_created_asc, needs=nj)

    def s_service_job():
        j = svc().job(job_ids["job"])
        check(j.job_id() == job_ids["job"], f"job_id {j.job_id()}")
        st = getattr(j.status(), "name", j.status())
        check(st == "DONE", f"status={st}")
        check(run_tag in (j.tags or []), f"tags={j.tags}")
        return f"{type(j).__name__} status={st} backend={j.backend().name} tags={j.tags}"

    run.step("service_job", s_service_job, needs=("job_final", "job_update_tags"))

    # -- session -------------------------------------------------------------------------------
    def s_session_open():
        ctx["session"] = s = Session(backend=be(), max_time="1h")
        check(s.session_id, "Session() created no server session (backend configuration simulator=true?)")
        session_ids["session"] = s.session_id
        return f"session_id={s.session_id}"

    run.step("session_open", s_session_open, needs=nb)
    ses = lambda: ctx["session"]  # noqa: E731
    ns = ("session_open", "transpile")

    def s_session_run():
        ctx["sjob"] = j = sampler_for(ses()).run([isa()], shots=SHOTS)
        job_ids["session_job"] = j.job_id()
        check(j.session_id == ses().session_id, f"job.session_id={j.session_id} != {ses().session_id}")
        st = final_status(j)
        check(st == "DONE", f"final status={st}")
        return f"job_id={j.job_id()} session_id={j.session_id} status={st}"

    run.step("session_run", s_session_run, needs=ns)
    run.step("session_job_result", lambda: check_result(ctx["sjob"]), needs=("session_run",))

    def s_session_details():
        d = ses().details()
        check(d and d.get("id") == ses().session_id, f"details={d!r}")
        ctx["session_details"] = d
        return (
            f"state={d.get('state')} mode={d.get('mode')} max_time={d.get('max_time')} backend={d.get('backend_name')}"
        )

    run.step("session_details", s_session_details, needs=("session_open",))

    def s_session_max_time():
        d = ctx["session_details"]
        check(d.get("max_time") == 3600, f"details max_time={d.get('max_time')!r}, expected 3600 (max_time='1h')")
        return "max_time=3600"

    run.step("session_max_time_honoured", s_session_max_time, optional=True, needs=("session_details",))

    def s_session_status():
        st = ses().status()
        check(isinstance(st, str) and st, f"status={st!r}")
        return f"status={st}"

    run.step("session_status", s_session_status, needs=("session_open",))

    def s_jobs_session():
        ids = [j.job_id() for j in svc().jobs(limit=10, session_id=ses().session_id)]
        check(job_ids["session_job"] in ids, f"jobs(session_id=...) -> {ids}")
        return f"ids={ids}"

    run.step("service_jobs_filter_session", s_jobs_session, needs=("session_run",))

    def s_cancel():
        j = sampler_for(ses()).run([isa()], shots=SHOTS)
        job_ids["cancel_job"] = j.job_id()
        try:
            j.cancel()
            outcome = "cancel accepted"
        except RuntimeInvalidStateError as exc:
            outcome = f"cancel refused as invalid state (job already final?): {exc}"
        st = final_status(j)
        check(st in FINAL, f"status after cancel={st}")
        if outcome == "cancel accepted":
            check(st in {"CANCELLED", "DONE"}, f"status after accepted cancel={st}")
        return f"job_id={j.job_id()} {outcome}; final status={st}"

    run.step("job_cancel", s_cancel, optional=True, needs=ns)

    def s_session_close():
        ses().close()
        return "closed"

    run.step("session_close", s_session_close, needs=("session_open",))

    def s_session_after_close():
        d = ses().details()
        check(d is not None, "details() None after close")
        check(d.get("accepting_jobs") is False or d.get("state") == "closed", f"after close: {d}")
        return f"state={d.get('state')} accepting_jobs={d.get('accepting_jobs')} status={ses().status()}"

    run.step("session_state_after_close", s_session_after_close, optional=True, needs=("session_close",))

    def s_session2_cancel():
        s = Session(backend=be(), max_time=600)
        check(s.session_id, "no session id")
        session_ids["session2"] = s.session_id
        s.cancel()
        return f"session_id={s.session_id} cancelled"

    run.step("session2_open_cancel", s_session2_cancel, needs=nb)

    # -- batch ---------------------------------------------------------------------------------
    def s_batch():
        b = Batch(backend=be())
        check(b.session_id, "Batch() created no server session")
        session_ids["batch"] = b.session_id
        try:
            j = sampler_for(b).run([isa()], shots=SHOTS)
            job_ids["batch_job"] = j.job_id()
            detail = check_result(j)
            check(j.session_id == b.session_id, f"job.session_id={j.session_id}")
            d = b.details()
            check(d and d.get("mode") == "batch", f"batch details mode={d and d.get('mode')!r}")
        finally:
            b.close()
        return f"batch_id={b.session_id} job_id={j.job_id()} mode={d.get('mode')} {detail}"

    run.step("batch_run_close", s_batch, needs=("transpile",), timeout=120)

    # -- delete --------------------------------------------------------------------------------
    def s_delete():
        jid = job_ids.get("cancel_job") or job_ids.get("options_job")
        if not jid:
            raise Skip("no job to delete")
        svc().delete_job(jid)
        ctx["deleted"] = jid
        return f"deleted {jid}"

    run.step("service_delete_job", s_delete, needs=("service_init",))

    def s_deleted_gone():
        try:
            j = svc().job(ctx["deleted"])
        except RuntimeJobNotFound as exc:
            return f"RuntimeJobNotFound: {exc}"
        raise AssertionError(f"deleted job still retrievable: status={j.status()}")

    run.step("deleted_job_not_found", s_deleted_gone, optional=True, needs=("service_delete_job",))

    if VERSION >= (0, 30):

        def s_service_usage():
            u = svc().usage()
            return f"usage={u}"

        run.step("service_usage", s_service_usage, optional=True, needs=("service_init",))

    return run.finish()


if __name__ == "__main__":
    sys.exit(main())
