"""Answers built without qiskit (proxy/emulator/results.py): the pubs' layout, every bit 0.

An emulator without the `emulator` extra, or a submission too large to simulate, still gets the
registers, widths, shots and shapes it submitted; the QPY header reader is checked on qiskit 0.46
(from the recorded 0.20.0 trace) and today's qiskit (QPY 13) circuits.
"""

from __future__ import annotations

import json

import pytest
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister

from proxy.emulator import results, simulate

from .test_simulate import bell, bit_array, dec, enc_array, enc_circuit, pub_data, v1_bodies


def test_without_qiskit_the_answer_still_has_the_pubs_registers_widths_shots_and_shapes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """QPY headers are read without qiskit (also qiskit 0.46's): every bit 0, but the right layout."""
    monkeypatch.setattr(simulate, "HAVE_QISKIT", False)
    q = QuantumRegister(4)
    a, b = ClassicalRegister(1, "alpha"), ClassicalRegister(11, "beta")
    qc = QuantumCircuit(q, a, b)
    qc.measure(0, a[0])
    old = v1_bodies()[1]["params"]["circuits"][0]  # qiskit 0.46 QPY, register "c" of 2 bits, 2 parameters
    pubs = [[enc_circuit(qc, version=13), None, 30], [old, enc_array([[0.1, 0.2]] * 3)]]
    doc = json.loads(simulate.simulate("sampler", {"pubs": pubs, "options": {"default_shots": 9}}) or b"null")
    first, second = pub_data(doc, 0), pub_data(doc, 1)
    assert first["field_names"] == ["alpha", "beta"] and first["shape"] == []
    beta = bit_array(first["fields"]["beta"])
    assert (beta.num_bits, beta.num_shots, beta.get_counts()) == (11, 30, {"0" * 11: 30})
    assert second["field_names"] == ["c"] and second["shape"] == [3]
    c = bit_array(second["fields"]["c"])
    assert c.shape == (3,) and c.num_shots == 9 and c.num_bits == 2
    est_pubs = [[old, [{"ZZ": 1}, {"XX": 1}], enc_array([[0.1, 0.2]])]]
    est = json.loads(simulate.simulate("estimator", {"pubs": est_pubs}) or b"null")
    assert dec(pub_data(est, 0)["fields"]["evs"]).shape == (2,)
    assert simulate.simulate("sampler", {"pubs": [[{"__type__": "QuantumCircuit", "__value__": "bm9wZQ=="}]]}) is None
    assert simulate.simulate("sampler", {"pubs": [[enc_circuit(qc)]]}) is None  # QPY v16+: left to the fixture


def test_more_pubs_than_the_emulator_simulates_get_a_canned_answer_of_the_right_layout() -> None:
    pubs = [[enc_circuit(bell(), version=13), None, 5]] * (simulate.MAX_SIMULATED_PUBS + 1)
    doc = json.loads(simulate.simulate("sampler", {"pubs": pubs}) or b"null")
    assert len(doc["__value__"]["pub_results"]) == len(pubs)
    assert bit_array(pub_data(doc, 7)["fields"]["c"]).get_counts() == {"00": 5}


def test_peek_cregs_reads_register_names_and_widths_in_circuit_order() -> None:
    qc = QuantumCircuit(QuantumRegister(2), ClassicalRegister(3, "z"), ClassicalRegister(1, "a"))
    assert results.peek_cregs(enc_circuit(qc, version=13)) == [("z", 3), ("a", 1)]
    assert results.peek_cregs(v1_bodies()[0]["params"]["circuits"][0]) == [("c", 2)]
    assert results.peek_cregs({"__type__": "ndarray", "__value__": "AA=="}) is None
