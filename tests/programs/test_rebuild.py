"""V2 results -> V1 answers: quasi-dists, expectation values, qiskit Result dicts."""

from __future__ import annotations

import json

import pytest

from proxy.programs.encoding import CircuitInfo
from proxy.programs.rebuild import RebuildError, rebuild
from proxy.programs.translate import Experiment, Translation

from .test_encoding import DATA
from .v2results import estimator_result, sampler_result

FIXTURE = (DATA / "sampler_v2_result.json").read_bytes()


def runner(*infos: CircuitInfo, memory: bool = False) -> Translation:
    return Translation("circuit-runner", "sampler", [Experiment(i, 100) for i in infos], memory=memory,
                       backend="fake_manila")  # fmt: skip


def test_the_sampler_v2_fixture_becomes_v1_quasi_dists() -> None:
    doc = json.loads(rebuild(Translation("sampler", "sampler"), FIXTURE, "j1"))
    assert doc["quasi_dists"] == [{"0x0": 0.5, "0x3": 0.5}]
    assert doc["metadata"][0]["shots"] == 100


def test_the_sampler_v2_fixture_becomes_the_classic_circuit_runner_result() -> None:
    classic = json.loads((DATA / "circuit_runner_result.json").read_text())
    bell = CircuitInfo("bell", 5, 2, [("meas", 2)], [("q", 5)])
    doc = json.loads(rebuild(runner(bell), FIXTURE, "j1"))
    got, want = doc["results"][0], classic["results"][0]
    assert got["data"]["counts"] == want["data"]["counts"] == {"0x0": 50, "0x3": 50}
    for key in ("name", "memory_slots", "creg_sizes", "clbit_labels", "n_qubits", "qreg_sizes", "qubit_labels"):
        assert got["header"][key] == want["header"][key], key
    assert (got["shots"], got["success"], got["meas_level"]) == (100, True, 2)
    assert doc["success"] is True and doc["job_id"] == "j1" and doc["backend_name"] == "fake_manila"
    assert "memory" not in got["data"]


def test_later_registers_take_the_higher_bits() -> None:
    # c0 (1 bit) then c1 (2 bits): shot values c0=1,c1=2 -> 0b101; c0=0,c1=3 -> 0b110
    body = sampler_result([[("c1", [2, 3], 2), ("c0", [1, 0], 1)]])  # DataBin order differs from the circuit
    info = CircuitInfo("two", 3, 3, [("c0", 1), ("c1", 2)], [("q", 3)])
    doc = json.loads(rebuild(runner(info, memory=True), body, "j"))
    res = doc["results"][0]
    assert res["data"]["counts"] == {"0x5": 1, "0x6": 1}
    assert res["data"]["memory"] == ["0x5", "0x6"]
    assert res["header"]["creg_sizes"] == [["c0", 1], ["c1", 2]] and res["header"]["memory_slots"] == 3


def test_without_circuit_info_the_result_order_is_used() -> None:
    body = sampler_result([[("a", [1, 1, 0], 1), ("b", [0, 1, 1], 1)]])
    doc = json.loads(rebuild(Translation("sampler", "sampler"), body, "j"))
    assert doc["quasi_dists"] == [{"0x1": 1 / 3, "0x3": 1 / 3, "0x2": 1 / 3}]


def test_wide_registers_over_64_bits() -> None:
    big = (1 << 69) | 1
    body = sampler_result([[("meas", [big, big, 0], 70)]])
    doc = json.loads(rebuild(runner(CircuitInfo("w", 70, 70, [("meas", 70)])), body, "j"))
    assert doc["results"][0]["data"]["counts"] == {hex(big): 2, "0x0": 1}


def test_several_pubs_several_experiments() -> None:
    body = sampler_result([[("c", [0, 3, 3, 0], 2)], [("meas", [0, 7, 7, 7], 3)]])
    infos = [CircuitInfo("bell", 2, 2, [("c", 2)]), CircuitInfo("ghz3", 3, 3, [("meas", 3)])]
    doc = json.loads(rebuild(runner(*infos), body, "j"))
    assert [r["header"]["name"] for r in doc["results"]] == ["bell", "ghz3"]
    assert [r["data"]["counts"] for r in doc["results"]] == [{"0x0": 2, "0x3": 2}, {"0x0": 1, "0x7": 3}]


def test_estimator_values_and_variance_from_the_standard_error() -> None:
    body = estimator_result([(0.98, 0.01), (-0.5, 0.02)], shots=4000)
    doc = json.loads(rebuild(Translation("estimator", "estimator", shots=4000), body, "j"))
    assert doc["values"] == [0.98, -0.5]
    assert doc["metadata"][0]["shots"] == 4000
    assert doc["metadata"][0]["variance"] == pytest.approx(0.01**2 * 4000)
    assert doc["metadata"][1]["variance"] == pytest.approx(0.02**2 * 4000)


def test_a_result_with_the_wrong_number_of_pubs_is_refused() -> None:
    with pytest.raises(RebuildError, match="1 pub results for 2"):
        rebuild(runner(CircuitInfo("a", 2, 2), CircuitInfo("b", 2, 2)), FIXTURE, "j")


@pytest.mark.parametrize("body", [b"not json", b"{}", b'{"__type__": "PrimitiveResult", "__value__": {}}'])
def test_a_result_that_is_not_a_primitive_result_is_refused(body: bytes) -> None:
    with pytest.raises(RebuildError):
        rebuild(Translation("sampler", "sampler"), body, "j")
