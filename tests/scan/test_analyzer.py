"""The analyzer's parts: Classic paths in text, version-aware V1 detection, notebooks, bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

from proxy.scan.analyzer import classic_paths, scan_paths, scan_python, scan_shell

V1_CODE = "from qiskit_ibm_runtime import Sampler\nsampler = Sampler(session=s)\n"


@pytest.mark.parametrize(
    ("text", "method", "routes"),
    [
        ("https://api.quantum-computing.ibm.com/runtime/jobs?limit=3", "GET", ["GET /jobs"]),
        ("/runtime/jobs/{}/results", None, ["GET /jobs/{job_id}/results"]),
        ("http://localhost:8080/api/users/loginWithToken", "POST", ["POST /users/loginWithToken"]),
        ("/facade/v1/jobs", None, ["GET /facade/v1/jobs", "POST /facade/v1/jobs"]),
        ("/sessions/abc/extended", None, ["GET /sessions/{session_id}/extended"]),
    ],
)
def test_classic_paths_name_the_route(text: str, method: str | None, routes: list[str]) -> None:
    [(_, _, keys)] = classic_paths(text, method)
    assert keys == routes


@pytest.mark.parametrize(
    "text",
    ["https://quantum.cloud.ibm.com/api/v1/jobs", "/home/me/jobs", "https://example.com/api/jobs", "/v1/jobs",
     "see docs/sessions"],
)
def test_text_that_is_not_a_classic_call(text: str) -> None:
    assert classic_paths(text) == []


def test_classic_host_without_a_known_path_is_still_reported() -> None:
    [(classic_host, path, keys)] = classic_paths("https://auth.quantum-computing.ibm.com/api")
    assert classic_host and keys == [] and path == "/"


def test_sampler_is_v1_only_in_code_pinned_to_the_v1_era() -> None:
    old = scan_python(V1_CODE, "a.py", {"qiskit-ibm-runtime": SpecifierSet("==0.20.0")})
    new = scan_python(V1_CODE, "a.py", {"qiskit-ibm-runtime": SpecifierSet(">=0.30")})
    unpinned = scan_python(V1_CODE, "a.py", {})
    assert [f.code for f in old] == ["QCP201", "QCP201"]
    assert new == [] and unpinned == []
    # Unpinned, but written against the V1 result shape: V1.
    shaped = scan_python(V1_CODE + "print(sampler.run(c).result().quasi_dists)\n", "a.py", {})
    assert {f.code for f in shaped} == {"QCP201", "QCP303"}


def test_aliases_and_module_imports_are_followed() -> None:
    code = (
        "import qiskit_ibm_runtime as qir\nfrom qiskit_ibm_provider import IBMProvider as P\n"
        "svc = qir.QiskitRuntimeService(channel='ibm_quantum')\np = P()\nb = p.get_backend('x')\nb.run(c)\n"
    )
    codes = [f.code for f in scan_python(code, "a.py", {})]
    assert codes == ["QCP101", "QCP102", "QCP102", "QCP203"]


def test_run_on_something_that_is_not_an_ibm_backend_is_not_flagged() -> None:
    code = "from qiskit_aer import AerSimulator\nsim = AerSimulator()\njob = sim.run(c)\njob.result().get_counts()\n"
    assert scan_python(code, "a.py", {}) == []


def test_notebook_cells_are_one_program_and_lines_are_per_cell(tmp_path: Path) -> None:
    nb = {"cells": [
        {"cell_type": "markdown", "source": "channel='ibm_quantum' in prose is not code"},
        {"cell_type": "code", "source": ["from qiskit_ibm_provider import IBMProvider\n", "p = IBMProvider()\n",
                                         "b = p.get_backend('x')"]},
        {"cell_type": "code", "source": "%time\n!curl -s $P/runtime/jobs\njob = b.run(c)"},
        {"cell_type": "raw", "source": "b.run(c)"},
    ]}
    path = tmp_path / "n.ipynb"
    path.write_text(json.dumps(nb))
    got = [(f.cell, f.line, f.code) for f in scan_paths([path], base=tmp_path).findings]
    assert sorted(got) == [(2, 1, "QCP102"), (2, 2, "QCP102"), (2, 3, "QCP102"), (3, 2, "QCP306"), (3, 3, "QCP203")]


def test_unparsable_files_are_reported_not_raised(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text("import qiskit\ndef f(:\n")
    (tmp_path / "bad.ipynb").write_text("{not json, qiskit")
    (tmp_path / "latin.py").write_bytes(b"x = '\xe9'\n")
    (tmp_path / "deep.py").write_text("import qiskit\nx = " + "(" * 5000 + ")" * 5000 + "\n")
    (tmp_path / "skipped.py").write_text("def f(:\n")  # no rule could match: not even parsed
    result = scan_paths([tmp_path], base=tmp_path)
    assert result.files == 5
    assert sorted(p for p, _ in result.errors) == ["bad.ipynb", "bad.py", "deep.py", "latin.py"]
    assert result.findings == []


def test_shell_method_comes_from_curl_flags() -> None:
    text = "curl -X DELETE $P/runtime/jobs/abc\ncurl -d '{}' $P/runtime/sessions\ncurl $P/runtime/sessions/abc\n"
    got = [f.routes for f in scan_shell(text, "s.sh")]
    assert got == [("DELETE /jobs/{job_id}",), ("POST /sessions",), ("GET /sessions/{session_id}",)]


def test_utf8_columns_are_characters() -> None:
    [f] = scan_python("x = 'é'; s = QiskitRuntimeService(channel='ibm_quantum')\n", "a.py", {})
    assert f.col == len("x = 'é'; s = QiskitRuntimeService(channel=") + 1
