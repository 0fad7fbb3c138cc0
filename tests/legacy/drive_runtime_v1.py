#!/usr/bin/env python3
"""Drive qiskit-ibm-runtime 0.20.0's V1 Sampler and Estimator (channel="ibm_quantum") through a Classic-API server.

Runs inside the runtime-0.20.0 venv made by tests/legacy/setup_venvs.sh
(`QCP_LEGACY_ONLY=runtime-0.20.0 tests/legacy/setup_venvs.sh`), e.g.

    ~/.cache/qiskit-classic-proxy/legacy-venvs/runtime-0.20.0/bin/python \
        tests/legacy/drive_runtime_v1.py --url http://127.0.0.1:8000/api --token TOKEN --out r20.json

Ordinary V1 code, url= and token= aside: a Bell state, a circuit with two parameters run with two
parameter sets, and the observable ZZ + XX, out of and inside a Session. Every answer is compared
with a local statevector computation of the same circuits (qiskit 0.46's quantum_info), within
shot noise: a wrong parameter binding, a flipped bit or a lost register fails a step. Imports
nothing from the proxy package.
"""

from __future__ import annotations

import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _driver_common import Runner, base_parser, check

warnings.filterwarnings("ignore", category=DeprecationWarning)

import qiskit  # noqa: E402
import qiskit_ibm_runtime  # noqa: E402
from qiskit import QuantumCircuit  # noqa: E402
from qiskit.circuit import Parameter  # noqa: E402
from qiskit.quantum_info import SparsePauliOp, Statevector  # noqa: E402
from qiskit_ibm_runtime import Estimator, QiskitRuntimeService, Sampler, Session  # noqa: E402

SHOTS = 4000
#: Parameter sets of the parametrized circuit: far apart, so swapping them or the two parameters fails.
PARAM_SETS = [[0.3, 2.2], [2.6, 0.9]]
#: |quasi - exact| allowed per outcome: > 6 sigma of a binomial at SHOTS (0.5/sqrt(4000) = 0.008).
PROB_TOL = 0.05
#: |value - exact| allowed per expectation value (EstimatorV2's default precision is 1/64).
EV_TOL = 0.12


def bell() -> QuantumCircuit:
    qc = QuantumCircuit(2, 2, name="bell")
    qc.h(0)
    qc.cx(0, 1)
    qc.measure([0, 1], [0, 1])
    return qc


def parametrized(measure: bool) -> QuantumCircuit:
    """Two independent rotations and an entangler: every outcome has a distinct probability."""
    a, b = Parameter("a"), Parameter("b")
    qc = QuantumCircuit(2, 2 if measure else 0, name="param")
    qc.ry(a, 0)
    qc.ry(b, 1)
    qc.cx(0, 1)
    qc.rz(a + b, 1)  # an expression: qiskit 0.46 serializes it with symengine
    if measure:
        qc.measure([0, 1], [0, 1])
    return qc


def exact_probs(qc: QuantumCircuit, values: list[float] | None = None) -> dict[int, float]:
    bound = qc.assign_parameters(values) if values is not None else qc
    probs = Statevector(bound.remove_final_measurements(inplace=False)).probabilities_dict()
    return {int(k, 2): v for k, v in probs.items() if v > 1e-9}


def exact_ev(qc: QuantumCircuit, obs: SparsePauliOp, values: list[float] | None = None) -> float:
    bound = qc.assign_parameters(values) if values is not None else qc
    return float(Statevector(bound).expectation_value(obs).real)


def compare_quasi(quasi: dict[int, float], exact: dict[int, float], what: str) -> str:
    check(isinstance(quasi, dict) and quasi, f"{what}: quasi distribution {quasi!r}")
    check(abs(sum(quasi.values()) - 1) < 1e-6, f"{what}: quasi probabilities sum to {sum(quasi.values())}")
    for key in set(quasi) | set(exact):
        got, want = quasi.get(key, 0.0), exact.get(key, 0.0)
        check(abs(got - want) <= PROB_TOL, f"{what}: P({key:02b}) = {got:.3f}, statevector says {want:.3f}")
    return " ".join(f"{k:02b}:{quasi[k]:.3f}" for k in sorted(quasi))


def main() -> int:
    args = base_parser(__doc__.splitlines()[1]).parse_args()
    run = Runner(
        args,
        "drive_runtime_v1",
        {"qiskit-ibm-runtime": qiskit_ibm_runtime.__version__, "qiskit": qiskit.__version__},
    )
    ctx: dict = {}
    run.extra["job_ids"] = job_ids = {}
    jt = args.job_timeout
    obs = SparsePauliOp.from_list([("ZZ", 1.0), ("XX", 1.0)])

    def s_service():
        kw = {"channel": "ibm_quantum", "url": args.url, "token": args.token}
        if args.instance:
            kw["instance"] = args.instance
        ctx["service"] = QiskitRuntimeService(**kw)
        return f"channel={ctx['service'].channel}"

    run.step("service_init", s_service, timeout=120)
    ns = ("service_init",)

    def sampler_steps(label: str, make) -> None:
        def s_bell():
            job = make(Sampler).run(bell(), shots=SHOTS)
            job_ids[f"sampler_bell_{label}"] = job.job_id()
            res = job.result(timeout=jt)
            check(len(res.quasi_dists) == 1, f"{len(res.quasi_dists)} quasi distributions, expected 1")
            quasi = dict(res.quasi_dists[0])
            check(set(quasi) <= {0, 3}, f"a Bell state gave outcomes {sorted(quasi)}: only 00 and 11 may occur")
            meta = res.metadata[0]
            check(meta.get("shots") == SHOTS, f"metadata {meta!r}: shots != {SHOTS}")
            return compare_quasi(quasi, exact_probs(bell()), "bell") + f" shots={meta.get('shots')}"

        run.step(f"sampler_v1_bell_{label}", s_bell, needs=ns)

        def s_param():
            qc = parametrized(measure=True)
            job = make(Sampler).run([qc, qc], parameter_values=PARAM_SETS, shots=SHOTS)
            job_ids[f"sampler_param_{label}"] = job.job_id()
            res = job.result(timeout=jt)
            check(len(res.quasi_dists) == 2, f"{len(res.quasi_dists)} quasi distributions, expected 2")
            return " | ".join(
                compare_quasi(dict(q), exact_probs(qc, v), f"param set {v}")
                for q, v in zip(res.quasi_dists, PARAM_SETS, strict=True)
            )

        run.step(f"sampler_v1_parametrized_{label}", s_param, needs=ns)

    def estimator_steps(label: str, make) -> None:
        def s_est():
            qc_bell = bell().remove_final_measurements(inplace=False)
            qc = parametrized(measure=False)
            job = make(Estimator).run([qc_bell, qc, qc], [obs, obs, obs], parameter_values=[[], *PARAM_SETS])
            job_ids[f"estimator_{label}"] = job.job_id()
            res = job.result(timeout=jt)
            values = [float(v) for v in res.values]
            want = [exact_ev(qc_bell, obs), *(exact_ev(qc, obs, v) for v in PARAM_SETS)]
            check(len(values) == 3, f"{len(values)} values, expected 3")
            for got, exp, what in zip(values, want, ["bell", *map(str, PARAM_SETS)], strict=True):
                check(abs(got - exp) <= EV_TOL, f"<ZZ+XX> of {what} = {got:.3f}, statevector says {exp:.3f}")
            check(len(res.metadata) == 3, f"metadata {res.metadata!r}")
            for meta in res.metadata:
                check("variance" in meta and "shots" in meta, f"metadata without variance/shots: {meta!r}")
                check(meta["variance"] >= 0 and meta["shots"] > 0, f"metadata {meta!r}")
            return " ".join(f"{g:.3f}~{e:.3f}" for g, e in zip(values, want, strict=True)) + f" meta={res.metadata[0]}"

        run.step(f"estimator_v1_{label}", s_est, needs=ns)

    # -- out of a session: backend=name
    sampler_steps("backend", lambda cls: cls(backend=args.backend))
    estimator_steps("backend", lambda cls: cls(backend=args.backend))

    # -- inside a Session
    def s_session_open():
        ctx["session"] = Session(service=ctx["service"], backend=args.backend)
        return f"session {ctx['session'].session_id} opened"

    run.step("session_open", s_session_open, needs=ns)
    sampler_steps("session", lambda cls: cls(session=ctx["session"]))
    estimator_steps("session", lambda cls: cls(session=ctx["session"]))

    def s_session_close():
        sid = ctx["session"].session_id
        check(sid, "the session has no id after its jobs")
        ctx["session"].close()
        return f"session {sid} closed"

    run.step("session_close", s_session_close, needs=("session_open",))

    def s_jobs_list():
        svc = ctx["service"]
        mine = set(job_ids.values())
        listed = {j.job_id(): j for j in svc.jobs(limit=50)}
        missing = sorted(mine - set(listed))
        check(not missing, f"service.jobs() misses {missing}")
        progs = {listed[j].program_id for j in mine}
        check(progs <= {"sampler", "estimator"}, f"jobs list the programs {progs}")
        job = svc.job(job_ids["sampler_bell_backend"])
        check(job.program_id == "sampler", f"retrieved job program {job.program_id!r}")
        res = job.result(timeout=jt)
        check(set(res.quasi_dists[0]) <= {0, 3}, f"retrieved Bell result {res.quasi_dists[0]}")
        return f"{len(mine)} jobs listed, programs {sorted(progs)}"

    run.step("service_jobs_and_retrieve", s_jobs_list, needs=ns)
    return run.finish()


if __name__ == "__main__":
    sys.exit(main())
