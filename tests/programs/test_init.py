"""`Programs` and its helpers: job objects restored, ISA refusals explained, the bounded memory."""

from __future__ import annotations

import json

from proxy.call import Call
from proxy.classic.answers import ANSWERS
from proxy.programs import MARKER, Programs, from_job, isa_hint, may_be_v1, restore_job
from proxy.programs.translate import Translation

from .test_encoding import submissions


def call(sdk: str = "other", version: tuple[int, ...] = ()) -> Call:
    c = Call(request_id="r", method="POST", path="/jobs")
    c.sdk, c.sdk_version = sdk, version
    return c


def test_restore_job_gives_back_the_program_and_hides_the_tag() -> None:
    job = {"id": "j", "program": {"id": "sampler"}, "tags": ["a", MARKER + "circuit-runner:memory"]}
    assert restore_job(job) == {"id": "j", "program": {"id": "circuit-runner"}, "tags": ["a"]}
    plain = {"id": "k", "program": {"id": "sampler"}, "tags": ["qcp-other"]}
    assert restore_job(dict(plain)) == plain


def test_isa_hint_only_for_isa_refusals() -> None:
    assert "qiskit-classic-proxy[transpile]" in (isa_hint("estimator", "circuit is not ISA") or "")
    assert isa_hint("sampler", "anything", 1517) is not None
    assert isa_hint("sampler", "Job cancelled by user", 1400) is None
    assert isa_hint("sampler", "the backend is disabled", 1400) is None  # no ISA inside words


def test_a_refused_translated_submission_names_the_extra() -> None:
    p = Programs()
    c = call()
    c.program = Translation("sampler", "sampler")
    answer = p.answer(c, "job_created", ANSWERS["job_created"])
    assert answer is not None and answer.when(c, 400)
    body = json.dumps({"errors": [{"code": 1517, "message": "Circuits must match the target hardware"}]}).encode()
    status, data = answer.fix(c, 400, body)
    assert status == 400 and "qiskit-classic-proxy[transpile]" in json.loads(data)["errors"][0]["message"]


def test_the_created_job_is_remembered_and_the_memory_is_bounded() -> None:
    p = Programs(remember=2)
    for i in range(3):
        c = call()
        c.program = Translation("sampler", "sampler")
        answer = p.answer(c, "job_created", ANSWERS["job_created"])
        assert answer is not None
        answer.fix(c, 200, json.dumps({"id": f"job{i}", "backend": "b"}).encode())
    assert list(p.memory) == ["job1", "job2"]


def test_from_job_rebuilds_the_record_from_tag_and_pubs() -> None:
    from proxy.programs.translate import translate_submission

    body, _ = translate_submission(submissions("trace-qiskit-ibm-provider-0.11.0.jsonl")[0])
    tr = from_job({"tags": body["tags"], "params": body["params"], "backend": "fake_manila"})
    assert tr is not None and tr.kind == "circuit-runner" and tr.shots == 100
    assert [(e.circuit.name if e.circuit else None, e.shots) for e in tr.experiments] == [("circuit-152", 100)]
    assert from_job({"tags": ["x"]}) is None


def test_only_clients_that_had_v1_primitives_get_large_bodies_parsed() -> None:
    assert may_be_v1(call("qiskit_ibm_runtime-0.20.0", (0, 20, 0)))
    assert not may_be_v1(call("qiskit_ibm_runtime-0.40.1", (0, 40, 1)))
    assert may_be_v1(call())


def test_restored_params_list_the_circuits_for_old_readers() -> None:
    c1 = {"__type__": "QuantumCircuit", "__value__": "x"}
    job = {"tags": [MARKER + "circuit-runner"], "params": {"pubs": [[c1, None, 10]], "version": 2}}
    assert restore_job(job)["params"]["circuits"] == [c1]
