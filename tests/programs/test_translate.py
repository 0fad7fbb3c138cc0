"""V1 submissions as the SDKs sent them (tests/data traces) -> SamplerV2/EstimatorV2 bodies."""

from __future__ import annotations

import copy
import json
from typing import Any

import numpy as np
import pytest

from proxy.errors import BadRequest
from proxy.programs.encoding import decode_ndarray
from proxy.programs.translate import MARKER, is_translatable, parse_marker, translate_submission

from .test_encoding import DATA, submissions

V1 = submissions("trace-qiskit-ibm-runtime-0.20.0.jsonl")
SAMPLER_BELL, SAMPLER_PARAM, SAMPLER_OPTS, EST_BELL, EST_PARAM, SESSION_SAMPLER, SESSION_EST = V1
RUNNER = submissions("trace-qiskit-ibm-provider-0.11.0.jsonl")[0]


def test_the_trace_has_the_seven_recorded_v1_jobs() -> None:
    assert [b["program_id"] for b in V1] == ["sampler"] * 3 + ["estimator"] * 2 + ["sampler", "estimator"]
    assert all(is_translatable(b) for b in V1)


def test_v1_sampler_becomes_sampler_v2_with_the_circuit_unchanged() -> None:
    out, tr = translate_submission(copy.deepcopy(SAMPLER_BELL))
    params = out["params"]
    assert out["program_id"] == "sampler" and params["version"] == 2 and params["support_qiskit"] is True
    assert set(params) == {"pubs", "options", "version", "support_qiskit"}
    (circuit, values, shots), = params["pubs"]
    assert circuit == SAMPLER_BELL["params"]["circuits"][0]  # the SDK's QPY, untouched
    assert decode_ndarray(values).shape == (0,) and shots == 1000
    assert params["options"]["default_shots"] == 1000
    assert out["backend"] == "fake_manila" and out["log_level"] == "WARNING"
    assert out["tags"] == [MARKER + "sampler"]
    assert (tr.kind, tr.program, tr.shots) == ("sampler", "sampler", 1000)
    assert [e.circuit.name for e in tr.experiments if e.circuit] == ["bell"]


def test_parameter_sets_bind_in_the_same_order() -> None:
    out, _ = translate_submission(copy.deepcopy(SAMPLER_PARAM))
    pubs = out["params"]["pubs"]
    assert len(pubs) == 2
    assert np.allclose(decode_ndarray(pubs[0][1]), [0.3, 0.7]) and np.allclose(decode_ndarray(pubs[1][1]), [1.2, 0.1])
    assert [p[2] for p in pubs] == [500, 500]


def test_options_tags_cost_and_seed_map_to_v2() -> None:
    out, _ = translate_submission(copy.deepcopy(SAMPLER_OPTS))
    opts = out["params"]["options"]
    assert opts["simulator"] == {"seed_simulator": 42}
    assert opts["execution"] == {"init_qubits": True}
    assert opts["default_shots"] == 2000
    assert out["cost"] == 300  # max_execution_time travels as cost, as before
    assert out["tags"] == ["v1-tag", MARKER + "sampler"]


def test_session_id_passes() -> None:
    out, _ = translate_submission(copy.deepcopy(SESSION_SAMPLER))
    assert out["session_id"] == SESSION_SAMPLER["session_id"]


def test_v1_estimator_becomes_estimator_v2_pubs() -> None:
    out, tr = translate_submission(copy.deepcopy(EST_PARAM))
    assert out["program_id"] == "estimator"
    pubs = out["params"]["pubs"]
    assert [p[1] for p in pubs] == [{"ZZ": 1.0, "XX": 0.5}, {"ZI": 1.0}]
    assert decode_ndarray(pubs[0][2]).shape == (0,) and np.allclose(decode_ndarray(pubs[1][2]), [0.3, 0.7])
    assert [p[3] for p in pubs] == [None, None]
    assert out["params"]["options"]["resilience_level"] == 1 and out["params"]["options"]["default_shots"] == 4000
    assert tr.kind == "estimator" and tr.shots == 4000


def test_circuit_and_observable_indices_pick_the_experiments() -> None:
    body = copy.deepcopy(EST_PARAM)
    body["params"]["circuit_indices"] = [1, 0, 1]
    body["params"]["observable_indices"] = [1, 0, 0]
    body["params"]["parameter_values"] = [[0.1, 0.2], [], [0.3, 0.4]]
    out, tr = translate_submission(body)
    pubs = out["params"]["pubs"]
    assert [p[1] for p in pubs] == [{"ZI": 1.0}, {"ZZ": 1.0, "XX": 0.5}, {"ZZ": 1.0, "XX": 0.5}]
    assert [e.circuit.name for e in tr.experiments if e.circuit] == ["param", "bell_nomeas", "param"]


def test_estimator_resilience_levels_and_zne_options() -> None:
    body = copy.deepcopy(EST_BELL)
    zne = {"noise_factors": [1, 3, 5], "extrapolator": "LinearExtrapolator"}
    body["params"]["resilience_settings"] = {"level": 2, **zne}
    opts = translate_submission(body)[0]["params"]["options"]
    assert opts["resilience_level"] == 2
    assert opts["resilience"] == {"zne": {"noise_factors": [1, 3, 5], "extrapolator": "linear"}}


def test_provider_circuit_runner_becomes_sampler_v2() -> None:
    out, tr = translate_submission(copy.deepcopy(RUNNER))
    assert out["program_id"] == "sampler"
    (circuit, _, shots), = out["params"]["pubs"]
    assert circuit == RUNNER["params"]["circuits"][0] and shots == 100
    assert out["tags"] == [MARKER + "circuit-runner"]
    assert (tr.kind, tr.memory, tr.backend) == ("circuit-runner", False, "fake_manila")
    assert "hub" in out  # dropped later by the route's own rewrite, like for every job


def test_memory_is_remembered_in_the_marker() -> None:
    body = copy.deepcopy(RUNNER)
    body["params"]["memory"] = True
    out, tr = translate_submission(body)
    assert tr.memory and parse_marker(out["tags"]) == ("circuit-runner", True)


@pytest.mark.parametrize(
    ("where", "key", "value", "named"),
    [
        ("transpilation_settings", "initial_layout", [0, 1], "transpilation_settings.initial_layout"),
        ("run_options", "unknown_knob", 1, "run_options.unknown_knob"),
        ("resilience_settings", "level", 2, "resilience_settings.level"),  # V1 Sampler allowed 0/1 only
        (None, "my_option", {"a": 1}, "my_option"),
    ],
)
def test_an_option_without_v2_equivalent_is_a_400_naming_it(
    where: str | None, key: str, value: Any, named: str
) -> None:
    body = copy.deepcopy(SAMPLER_BELL)
    (body["params"].setdefault(where, {}) if where else body["params"])[key] = value
    with pytest.raises(BadRequest) as info:
        translate_submission(body)
    assert info.value.status == 400 and named in info.value.message and "SamplerV2" in info.value.message


@pytest.mark.parametrize(
    ("key", "value"), [("parameter_binds", [{"a": 1}]), ("meas_level", 1), ("init_circuit", {"x": 1})]
)
def test_backend_run_options_without_equivalent_are_refused(key: str, value: Any) -> None:
    body = copy.deepcopy(RUNNER)
    body["params"][key] = value
    with pytest.raises(BadRequest, match=key):
        translate_submission(body)


def test_qasm_text_circuits_are_refused_clearly() -> None:
    body = {"program_id": "qasm3-runner", "backend": "b", "params": {"circuits": ["OPENQASM 3; qubit q;"]}}
    with pytest.raises(BadRequest, match="OpenQASM"):
        translate_submission(body)


def test_v2_bodies_are_not_translated() -> None:
    v2 = submissions("trace-qiskit-ibm-runtime-0.20.0.jsonl")[0] | {"params": {"pubs": [], "version": 2}}
    assert not is_translatable(v2)
    assert not is_translatable({"program_id": "sampler", "params": {"pubs": []}})
    assert not is_translatable({"program_id": "noise-learner", "params": {"circuits": []}})


def test_a_ninth_tag_is_refused_not_dropped() -> None:
    body = copy.deepcopy(SAMPLER_BELL) | {"tags": [f"t{i}" for i in range(8)]}
    with pytest.raises(BadRequest, match="at most 7"):
        translate_submission(body)


def test_fixture_sources_are_named() -> None:
    text = (DATA / "README.md").read_text()
    mine = ["trace-qiskit-ibm-runtime-0.20.0.jsonl", "trace-qiskit-ibm-runtime-0.23.0-v1.jsonl",
            "record_runtime_0_20_0.py", "trace-qiskit-ibm-provider-0.11.0.jsonl", "sampler_v2_result.json",
            "circuit_runner_result.json", "conf_fake_manila.json"]  # fmt: skip
    for name in mine:
        assert (DATA / name).exists() and f"`{name}`" in text, f"tests/data/README.md does not name {name}"


def test_the_translated_body_is_plain_json() -> None:
    out, _ = translate_submission(copy.deepcopy(EST_BELL))
    assert json.loads(json.dumps(out)) == out


def test_the_last_v1_shape_from_runtime_0_23_translates_too() -> None:
    bodies = submissions("trace-qiskit-ibm-runtime-0.23.0-v1.jsonl")
    assert [b["program_id"] for b in bodies] == ["sampler"] * 3 + ["estimator"] * 2 + ["sampler", "estimator"]
    for body in bodies:
        out, tr = translate_submission(copy.deepcopy(body))
        assert out["params"]["version"] == 2 and len(out["params"]["pubs"]) == len(tr.experiments) >= 1
        assert all(e.circuit is not None and e.circuit.num_qubits == 5 for e in tr.experiments)  # ISA: 5 qubits
        if body["program_id"] == "estimator":
            assert all(len(label) == 5 for pub in out["params"]["pubs"] for label in pub[1])
