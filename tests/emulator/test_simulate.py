"""The emulator runs the pubs it receives (proxy/emulator/simulate.py) and refuses V1 jobs (1513).

Over HTTP against a real emulator server. Circuits come two ways: built here with today's qiskit,
and taken from the recorded qiskit-ibm-runtime 0.20.0 trace (qiskit 0.46 QPY whose parameter
expressions are symengine-serialized), so the pinned symengine is exercised too.
"""

from __future__ import annotations

import base64
import io
import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister, qpy
from qiskit.circuit import Parameter
from qiskit.primitives import BitArray
from qiskit.quantum_info import Statevector

from proxy.emulator import simulate
from proxy.emulator.simulate import SimulationError

from ..conftest import EmulatorHandle, start_emulator

DATA = Path(__file__).resolve().parent.parent / "data"
TRACE = DATA / "trace-qiskit-ibm-runtime-0.20.0-v1.jsonl"


# ---------------------------------------------------------------------------- helpers
def enc_circuit(qc: QuantumCircuit, version: int | None = None) -> dict[str, str]:
    buf = io.BytesIO()
    qpy.dump(qc, buf, **({"version": version} if version else {}))
    return {"__type__": "QuantumCircuit", "__value__": base64.b64encode(zlib.compress(buf.getvalue())).decode()}


def enc_array(arr: Any) -> dict[str, str]:
    buf = io.BytesIO()
    np.save(buf, np.asarray(arr), allow_pickle=False)
    return {"__type__": "ndarray", "__value__": base64.b64encode(zlib.compress(buf.getvalue())).decode()}


def dec(obj: dict[str, Any]) -> np.ndarray:
    assert obj["__type__"] == "ndarray"
    return np.load(io.BytesIO(zlib.decompress(base64.b64decode(obj["__value__"]))))


def bell() -> QuantumCircuit:
    qc = QuantumCircuit(2, 2)
    qc.h(0)
    qc.cx(0, 1)
    qc.measure([0, 1], [0, 1])
    return qc


def v1_bodies() -> list[dict[str, Any]]:
    """The V1 job submissions qiskit-ibm-runtime 0.20.0 sent (sampler, sampler, estimator, ...)."""
    lines = [json.loads(line) for line in TRACE.read_text().splitlines()]
    return [e["body"] for e in lines if e["method"] == "POST" and e["path"] == "/runtime/jobs"]


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorHandle]:
    handle = start_emulator()
    yield handle
    handle.server.stop()


@pytest.fixture
def http(emu: EmulatorHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.url, timeout=30, trust_env=False) as c:
        c.headers.update(emu.state.auth_headers())
        yield c


def run_job(http: httpx.Client, program: str, pubs: list[Any], **params: Any) -> tuple[dict[str, Any], Any]:
    """Submit a V2 job, poll it to its end; (job view, decoded result JSON or the reason text)."""
    body = {"program_id": program, "backend": "fake_manila", "params": {"pubs": pubs, "version": 2, **params}}
    r = http.post("/api/v1/jobs", json=body)
    assert r.status_code == 200, r.text
    job_id = r.json()["id"]
    for _ in range(5):
        job = http.get(f"/api/v1/jobs/{job_id}").json()
        if job["status"] not in ("Queued", "Running"):
            break
    res = http.get(f"/api/v1/jobs/{job_id}/results")
    assert res.status_code == 200, res.text
    return job, (res.json() if job["status"] == "Completed" else res.text)


def pub_data(result: dict[str, Any], i: int) -> dict[str, Any]:
    assert result["__type__"] == "PrimitiveResult"
    pub = result["__value__"]["pub_results"][i]
    return pub["__value__"]["data"]["__value__"]


def bit_array(field: dict[str, Any]) -> BitArray:
    assert field["__type__"] == "BitArray"
    return BitArray(dec(field["__value__"]["array"]), field["__value__"]["num_bits"])


# ---------------------------------------------------------------------------- sampler
def test_bell_gives_only_00_and_11_with_the_submitted_shots(http: httpx.Client) -> None:
    job, result = run_job(http, "sampler", [[enc_circuit(bell()), None, 1000]])
    assert job["status"] == "Completed"
    data = pub_data(result, 0)
    assert data["field_names"] == ["c"] and data["shape"] == []
    bits = bit_array(data["fields"]["c"])
    counts = bits.get_counts()
    assert bits.num_shots == 1000 and bits.num_bits == 2
    assert set(counts) == {"00", "11"} and sum(counts.values()) == 1000
    assert 400 < counts["00"] < 600


def test_registers_keep_their_names_widths_and_bit_order(http: httpx.Client) -> None:
    """X on qubit 0 only, measured into the 1-bit register; a 3-bit register reads 100 (qubit 3 set)."""
    q = QuantumRegister(4)
    a, b = ClassicalRegister(1, "alpha"), ClassicalRegister(3, "beta")
    qc = QuantumCircuit(q, a, b)
    qc.x(0)
    qc.x(3)
    qc.measure(0, a[0])
    qc.measure([1, 2, 3], [b[0], b[1], b[2]])
    _, result = run_job(http, "sampler", [[enc_circuit(qc), None, 50]], options={"default_shots": 7})
    data = pub_data(result, 0)
    assert data["field_names"] == ["alpha", "beta"]
    assert bit_array(data["fields"]["alpha"]).get_counts() == {"1": 50}
    assert bit_array(data["fields"]["beta"]).get_counts() == {"100": 50}


def test_default_shots_from_the_options_when_the_pub_has_none(http: httpx.Client) -> None:
    _, result = run_job(http, "sampler", [[enc_circuit(bell())]], options={"default_shots": 123})
    assert bit_array(pub_data(result, 0)["fields"]["c"]).num_shots == 123


def test_qiskit_046_circuits_with_symengine_expressions_bind_their_parameters(http: httpx.Client) -> None:
    """The 0.20.0 client's parametrized circuit (a, b, rz(a+b)), two parameter sets, as a V2 pub."""
    v1 = v1_bodies()[1]["params"]
    circuit, values = v1["circuits"][0], v1["parameter_values"]
    assert values == [[0.3, 2.2], [2.6, 0.9]]
    _, result = run_job(http, "sampler", [[circuit, enc_array(values), 20000]])
    data = pub_data(result, 0)
    assert data["shape"] == [2]
    bits = bit_array(data["fields"]["c"])
    for k, (x, y) in enumerate(values):
        ref = QuantumCircuit(2)
        ref.ry(x, 0)
        ref.ry(y, 1)
        ref.cx(0, 1)
        exact = Statevector(ref).probabilities_dict()
        counts = bits.get_counts(loc=k)
        for key, p in exact.items():
            assert abs(counts.get(key, 0) / 20000 - p) < 0.02, (k, key, counts, exact)


def test_sampler_parameter_values_in_the_wrong_shape_fail_the_job(http: httpx.Client) -> None:
    v1 = v1_bodies()[1]["params"]
    job, reason = run_job(http, "sampler", [[v1["circuits"][0], enc_array([0.1, 0.2, 0.3]), 10]])
    assert job["status"] == "Failed"
    assert "do not fit 2 parameters" in reason and "do not fit" in job["state"]["reason"]
    assert job["state"]["reason_code"] == 1500  # not 1517, which the proxy reads as "not ISA"


def test_a_circuit_without_measurements_fails_the_sampler_job(http: httpx.Client) -> None:
    job, reason = run_job(http, "sampler", [[enc_circuit(QuantumCircuit(2)), None, 10]])
    assert job["status"] == "Failed" and "no classical registers" in reason


def test_same_pubs_same_counts_and_seed_option_is_honoured() -> None:
    params = {"pubs": [[enc_circuit(bell()), None, 500]], "version": 2}
    first, again = simulate.simulate("sampler", params), simulate.simulate("sampler", params)
    assert first == again
    seeded = simulate.simulate("sampler", {**params, "options": {"simulator": {"seed_simulator": 1}}})
    assert seeded != first


def test_a_wide_isa_circuit_is_simulated_on_the_qubits_it_uses(http: httpx.Client) -> None:
    """A Bell pair on qubits 5 and 17 of a 30-qubit circuit (as transpiled for a large device)."""
    qc = QuantumCircuit(30, 2)
    qc.h(17)
    qc.cx(17, 5)
    qc.measure([17, 5], [0, 1])
    _, result = run_job(http, "sampler", [[enc_circuit(qc), None, 200]])
    counts = bit_array(pub_data(result, 0)["fields"]["c"]).get_counts()
    assert set(counts) == {"00", "11"} and sum(counts.values()) == 200


# ---------------------------------------------------------------------------- estimator
def test_estimator_zz_plus_xx_on_bell_and_a_parametrized_circuit(http: httpx.Client) -> None:
    x = Parameter("x")
    rot = QuantumCircuit(2)
    rot.ry(x, 0)
    rot.cx(0, 1)
    obs = {"ZZ": 1.0, "XX": 1.0}
    pubs = [
        [enc_circuit(bell()), obs, None, 0.0],
        [enc_circuit(rot), [obs, {"ZI": 1.0}], enc_array([[0.4], [2.0]]), 0.0],
    ]
    job, result = run_job(http, "estimator", pubs)
    assert job["status"] == "Completed"
    first, second = pub_data(result, 0), pub_data(result, 1)
    assert first["field_names"] == ["evs", "stds", "ensemble_standard_error"]
    assert dec(first["fields"]["evs"]) == pytest.approx(2.0)
    evs = dec(second["fields"]["evs"])
    assert second["shape"] == [2] and evs.shape == (2,)
    # <ZZ+XX>(x) = 1 + sin(x); <IZ... ZI> reads qubit 1: cos(x)
    assert evs[0] == pytest.approx(1 + np.sin(0.4)) and evs[1] == pytest.approx(np.cos(2.0))
    meta = result["__value__"]["pub_results"][1]["__value__"]["metadata"]
    assert meta["target_precision"] == 0.0


def test_estimator_reads_the_v1_clients_sparse_pauli_op_and_adds_precision_noise(http: httpx.Client) -> None:
    """The 0.20.0 trace's observable (a `settings` SparsePauliOp) and its Bell circuit."""
    v1 = v1_bodies()[2]["params"]
    circuit, observable = v1["circuits"][0], v1["observables"][0]
    _, result = run_job(http, "estimator", [[circuit, observable]], options={"default_shots": 4000})
    data = pub_data(result, 0)
    ev, std = float(dec(data["fields"]["evs"])), float(dec(data["fields"]["stds"]))
    assert std == pytest.approx(1 / np.sqrt(4000)) and abs(ev - 2.0) < 6 * std and ev != 2.0
    meta = result["__value__"]["pub_results"][0]["__value__"]["metadata"]
    assert meta["shots"] == 4000  # not 4001 from 1/precision**2 rounded up


def test_decode_refuses_settings_objects_outside_quantum_info() -> None:
    with pytest.raises(SimulationError, match="unsupported settings object"):
        simulate.decode({"__type__": "settings", "__class__": "Popen", "__module__": "subprocess", "__value__": {}})


# ---------------------------------------------------------------------------- what is not simulated
def test_no_pubs_or_other_programs_are_left_to_the_fixture() -> None:
    assert simulate.simulate("sampler", {"version": 2}) is None
    assert simulate.simulate("sampler", {"pubs": [], "version": 2}) is None
    assert simulate.simulate("noise-learner", {"circuits": [enc_circuit(bell())]}) is None


@pytest.mark.parametrize("index", [0, 1, 2, 3, 4, 5])
def test_untranslated_v1_jobs_of_the_real_sdk_are_refused_with_1513(http: httpx.Client, index: int) -> None:
    """Each V1 body qiskit-ibm-runtime 0.20.0 sent, minus the Classic-only fields, as if passed through."""
    body = {k: v for k, v in v1_bodies()[index].items() if k not in ("hub", "group", "project", "session_id")}
    r = http.post("/api/v1/jobs", json=body)
    assert r.status_code == 400, r.text
    err = r.json()["errors"][0]
    assert err["code"] == 1513 and "V1 Primitives SamplerV1 and EstimatorV1 are no longer supported" in err["message"]


def test_circuit_runner_is_refused_with_1513(http: httpx.Client) -> None:
    body = {"program_id": "circuit-runner", "backend": "fake_manila", "params": {"circuits": [], "shots": 100}}
    r = http.post("/api/v1/jobs", json=body)
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == 1513
    assert "circuit-runner program is no longer supported" in r.json()["errors"][0]["message"]


def test_the_trace_fixture_holds_sampler_and_estimator_bodies_in_and_out_of_a_session() -> None:
    bodies = v1_bodies()
    assert [b["program_id"] for b in bodies] == ["sampler", "sampler", "estimator"] * 2
    assert [("session_id" in b) for b in bodies] == [False] * 3 + [True] * 3
    assert all("version" not in b["params"] for b in bodies)
    assert all(b["params"]["run_options"]["shots"] == 4000 for b in bodies if b["program_id"] == "sampler")
