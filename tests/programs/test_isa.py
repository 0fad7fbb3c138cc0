"""The `[transpile]` extra: non-ISA circuits of V1 jobs are transpiled for the backend's target."""

from __future__ import annotations

import base64
import copy
import io
import json
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

pytest.importorskip("qiskit")

from qiskit import qpy
from qiskit.circuit import QuantumCircuit

from proxy.programs.isa import is_isa, target_from_configuration, transpile_pubs
from proxy.programs.translate import translate_submission

from ..conftest import EmulatorHandle, Running, proxy_settings, start_emulator, start_proxy
from .test_encoding import DATA, submissions
from .v2results import sampler_result

V1 = submissions("trace-qiskit-ibm-runtime-0.20.0.jsonl")
R20 = {"X-Qx-Client-Application": "qiskit-version-2/qiskit_ibm_runtime-0.20.0,qiskit_terra-0.46.3/qiskit"}
CONF = json.loads((DATA / "conf_fake_manila.json").read_text())


def load(node: dict[str, Any]) -> QuantumCircuit:
    return qpy.load(io.BytesIO(zlib.decompress(base64.b64decode(node["__value__"]))))[0]


def test_the_target_follows_the_configuration() -> None:
    target = target_from_configuration(CONF)
    assert target.num_qubits == CONF["n_qubits"]
    assert target.instruction_supported("cx", (0, 1)) and not target.instruction_supported("cx", (0, 2))
    assert not target.instruction_supported("h", (0,))


def test_abstract_v1_circuits_are_transpiled_and_isa_ones_kept() -> None:
    target = target_from_configuration(CONF)
    body, tr = translate_submission(copy.deepcopy(V1[1]))  # two parametrized circuits, qiskit 0.46 QPY
    before = [load(p[0]) for p in body["params"]["pubs"]]
    assert not is_isa(before[0], target)
    assert transpile_pubs(body, tr, CONF) == 1  # the same circuit twice: transpiled once
    after = [load(p[0]) for p in body["params"]["pubs"]]
    assert all(is_isa(c, target) for c in after)
    assert [str(p) for p in after[0].parameters] == ["phi", "theta"]  # V1 values still bind in this order
    assert tr.experiments[0].circuit is not None and tr.experiments[0].circuit.cregs == [("meas", 2)]
    again = copy.deepcopy(body)
    assert transpile_pubs(again, tr, CONF) == 0 and again == body


def test_estimator_observables_follow_the_layout() -> None:
    body, tr = translate_submission(copy.deepcopy(V1[3]))
    transpile_pubs(body, tr, CONF)
    circuit, terms = load(body["params"]["pubs"][0][0]), body["params"]["pubs"][0][1]
    assert circuit.num_qubits == CONF["n_qubits"]
    assert all(len(label) == CONF["n_qubits"] for label in terms)
    assert sorted(terms.values()) == [0.5, 1.0]


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[EmulatorHandle, Running]]:
    from proxy.emulator import EmulatorConfig

    em = start_emulator(EmulatorConfig(job_polls_to_complete=0))
    px = start_proxy(proxy_settings(em.url, usage_db=""))
    yield em, px
    px.server.stop()
    em.server.stop()


def test_a_v1_sampler_job_reaches_the_new_api_as_isa_circuits(servers: tuple[EmulatorHandle, Running]) -> None:
    em, px = servers
    assert px.app.pipeline.programs.can_transpile
    em.clear()
    em.state.config.results["sampler"] = sampler_result([[("c", [0, 3], 2)]])
    r = httpx.post(px.url + "/runtime/jobs", content=json.dumps(V1[0]), headers=R20, timeout=60)
    assert r.status_code == 200, r.text
    assert r.headers["x-qcp-transpiled"] == "1 of 1 circuits for fake_manila (optimization_level 3)"
    [post] = [x for x in em.api_requests() if x["method"] == "POST"]
    assert is_isa(load(post["body"]["params"]["pubs"][0][0]), target_from_configuration(CONF))
    res = httpx.get(f"{px.url}/runtime/jobs/{r.json()['id']}/results", headers=R20, timeout=10).json()
    assert res["quasi_dists"] == [{"0x0": 0.5, "0x3": 0.5}]


def test_skip_transpilation_is_respected(servers: tuple[EmulatorHandle, Running]) -> None:
    em, px = servers
    em.clear()
    r = httpx.post(px.url + "/runtime/jobs", content=json.dumps(V1[2]), headers=R20, timeout=60)  # skip=True
    assert r.status_code == 200 and "x-qcp-transpiled" not in r.headers
    [post] = [x for x in em.api_requests() if x["method"] == "POST"]
    assert post["body"]["params"]["pubs"][0][0] == V1[2]["params"]["circuits"][0]


def test_a_circuit_this_qiskit_cannot_read_goes_as_it_came() -> None:
    body, tr = translate_submission(copy.deepcopy(V1[0]))
    junk = {"__type__": "QuantumCircuit", "__value__": base64.b64encode(zlib.compress(b"QISKIT\x63junk")).decode()}
    body["params"]["pubs"][0][0] = junk
    assert transpile_pubs(body, tr, CONF) == 0
    assert body["params"]["pubs"][0][0] == junk
