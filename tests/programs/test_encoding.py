"""The SDK encodings read without qiskit: ndarray, the QPY header, V1 observables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from proxy.errors import BadRequest
from proxy.programs.encoding import decode_ndarray, encode_ndarray, observable_terms, peek_circuit

DATA = Path(__file__).resolve().parents[1] / "data"


def submissions(name: str) -> list[dict[str, Any]]:
    """The job submission bodies of a recorded SDK trace (tests/data/README.md names the source)."""
    out = []
    for line in (DATA / name).read_text().splitlines():
        d = json.loads(line)
        if d["method"] == "POST" and d["path"].rstrip("/").endswith("/jobs"):
            out.append(d["body"])
    return out


def test_peek_reads_name_widths_and_registers_of_qiskit_046_circuits() -> None:
    bodies = submissions("trace-qiskit-ibm-runtime-0.20.0.jsonl")
    bell = peek_circuit(bodies[0]["params"]["circuits"][0])
    assert bell is not None
    assert (bell.name, bell.num_qubits, bell.num_clbits, bell.cregs) == ("bell", 2, 2, [("c", 2)])
    param = peek_circuit(bodies[1]["params"]["circuits"][0])
    assert param is not None and (param.name, param.cregs) == ("param", [("meas", 2)])
    est = peek_circuit(bodies[3]["params"]["circuits"][0])
    assert est is not None and (est.name, est.num_clbits, est.cregs) == ("bell_nomeas", 0, [])


def test_peek_reads_the_providers_transpiled_circuit() -> None:
    body = submissions("trace-qiskit-ibm-provider-0.11.0.jsonl")[0]
    info = peek_circuit(body["params"]["circuits"][0])
    assert info is not None
    assert (info.num_qubits, info.num_clbits, info.qregs, info.cregs) == (5, 2, [("q", 5)], [("c", 2)])


@pytest.mark.parametrize("node", [{"__type__": "QuantumCircuit", "__value__": "bm90IHFweQ=="}, {"x": 1}, None, "abc"])
def test_peek_gives_none_for_what_is_not_qpy(node: Any) -> None:
    assert peek_circuit(node) is None


def test_ndarray_round_trip_and_the_fixtures_bitarray() -> None:
    a = np.array([[0.3, 0.7], [1.2, 0.1]])
    assert np.array_equal(decode_ndarray(encode_ndarray(a)), a)
    doc = json.loads((DATA / "sampler_v2_result.json").read_text())
    meas = doc["__value__"]["pub_results"][0]["__value__"]["data"]["__value__"]["fields"]["meas"]["__value__"]
    bits = decode_ndarray(meas["array"])
    assert bits.shape == (100, 1) and set(bits.reshape(-1).tolist()) == {0, 3}


def test_undecodable_ndarray_is_a_400() -> None:
    with pytest.raises(BadRequest):
        decode_ndarray({"__type__": "ndarray", "__value__": "!!!"})


def test_sparse_pauli_op_of_the_trace_becomes_label_coefficients() -> None:
    body = submissions("trace-qiskit-ibm-runtime-0.20.0.jsonl")[3]
    assert observable_terms(body["params"]["observables"][0], "o") == {"ZZ": 1.0, "XX": 0.5}


def test_observable_phases_and_plain_forms() -> None:
    assert observable_terms("-ZZ", "o") == {"ZZ": -1.0}
    assert observable_terms({"XI": 2, "IZ": [0.5, 0.0]}, "o") == {"XI": 2.0, "IZ": 0.5}


@pytest.mark.parametrize("node", [{"ZZ": [0.0, 1.0]}, "iZZ", {"ZQ": 1.0}, 42])
def test_non_hermitian_or_unreadable_observables_are_refused(node: Any) -> None:
    with pytest.raises(BadRequest):
        observable_terms(node, "observable 0")
