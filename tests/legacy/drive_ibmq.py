#!/usr/bin/env python3
"""Drive qiskit-ibmq-provider 0.20 (IBMQ.enable_account) through a Classic-API server.

Runs inside the venv made by `QCP_LEGACY_ONLY=ibmq-provider-0.20.2 tests/legacy/setup_venvs.sh`:

    ~/.cache/qiskit-classic-proxy/legacy-venvs/ibmq-provider-0.20.2/bin/python \
        tests/legacy/drive_ibmq.py --url http://127.0.0.1:8000/api --token TOKEN --out ibmq.json

The oldest Classic client: it reads everything under /Network/{hub}/Groups/{group}/Projects/{project}.
Read-only use must work (providers, backends, configuration, properties, status, defaults, job
list); backend.run (a Qobj for the retired service) must fail with a clear 410 naming SamplerV2.
`--url-mode none` gives no url= (intercepting mode: HTTPS_PROXY + REQUESTS_CA_BUNDLE). Imports
nothing from the proxy package.
"""

from __future__ import annotations

import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _driver_common import Runner, backend_status_and_defaults_steps, base_parser, check

warnings.filterwarnings("ignore", category=DeprecationWarning)

import qiskit  # noqa: E402
import qiskit.providers.ibmq as ibmq  # noqa: E402
from qiskit import IBMQ, QuantumCircuit, transpile  # noqa: E402


def main() -> int:
    p = base_parser(__doc__.splitlines()[1])
    p.add_argument("--url-mode", choices=["given", "none"], default="given")
    args = p.parse_args()
    run = Runner(args, "drive_ibmq", {"qiskit-ibmq-provider": ibmq.__version__, "qiskit-terra": qiskit.__version__})
    ctx: dict = {}

    def s_enable():
        kw = {"url": args.url} if args.url_mode == "given" else {}
        IBMQ.enable_account(args.token, **kw)
        names = [f"{p.credentials.hub}/{p.credentials.group}/{p.credentials.project}" for p in IBMQ.providers()]
        check(names, "enable_account found no hub/group/project")
        ctx["names"] = names
        return f"providers={names}"

    run.step("enable_account", s_enable, timeout=120)

    def s_provider():
        hub, group, project = (args.instance or ctx["names"][0]).split("/")
        ctx["provider"] = prov = IBMQ.get_provider(hub=hub, group=group, project=project)
        return f"{prov}"

    run.step("get_provider", s_provider, needs=("enable_account",))

    def s_backends():
        names = [b.name() for b in ctx["provider"].backends()]
        check(args.backend in names, f"{args.backend} not in backends(): {names}")
        return f"backends={names}"

    run.step("provider_backends", s_backends, needs=("get_provider",))

    def s_backend():
        ctx["backend"] = b = ctx["provider"].get_backend(args.backend)
        conf = b.configuration()
        check(conf.backend_name == args.backend and conf.n_qubits >= 2, f"configuration={conf.backend_name}")
        return f"{b.name()} n_qubits={conf.n_qubits} basis_gates={conf.basis_gates}"

    run.step("backend_configuration", s_backend, needs=("get_provider",))
    be = lambda: ctx["backend"]  # noqa: E731
    nb = ("backend_configuration",)

    def s_properties():
        props = be().properties()
        check(props is not None and props.backend_name == args.backend, f"properties={props!r}")
        check(len(props.qubits) == be().configuration().n_qubits, f"{len(props.qubits)} qubits in properties")
        return f"last_update={props.last_update_date} t1(q0)={props.t1(0)}"

    run.step("backend_properties", s_properties, needs=nb)
    backend_status_and_defaults_steps(run, be, nb)

    def s_jobs():
        jobs = be().jobs(limit=5)
        check(isinstance(jobs, list), f"jobs() returned {type(jobs).__name__}")
        return f"{len(jobs)} Qobj jobs"

    run.step("backend_jobs", s_jobs, needs=nb)

    def s_transpile():
        qc = QuantumCircuit(2)
        qc.h(0)
        qc.cx(0, 1)
        qc.measure_all()
        ctx["isa"] = transpile(qc, be())
        return f"ops={dict(ctx['isa'].count_ops())}"

    run.step("transpile", s_transpile, needs=("backend_properties",))

    def s_run_refused():
        try:
            job = be().run(ctx["isa"], shots=10)
        except Exception as exc:  # the SDK wraps the 410 in IBMQBackendApiError
            text = str(exc)
            check("410" in text and "SamplerV2" in text, f"not a clear 410: {text[:300]}")
            return f"{type(exc).__name__}: 410 naming SamplerV2"
        raise AssertionError(f"backend.run was accepted: {job}")

    run.step("backend_run_gets_410", s_run_refused, needs=("transpile",))
    return run.finish()


if __name__ == "__main__":
    sys.exit(main())
