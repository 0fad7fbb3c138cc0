"""The soak of bench/soak.py, a few seconds of it (QCP_SOAK_SECONDS for longer): under dropped
submission answers, resets, 503s and stalls, no submission is lost or duplicated, the proxy
recovers fully once the faults stop, and its file descriptors stay bounded."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

SOAK = Path(__file__).resolve().parent.parent / "bench" / "soak.py"


@pytest.mark.soak
def test_soak_loses_and_duplicates_no_submission_and_recovers(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("soak", SOAK)
    assert spec is not None and spec.loader is not None
    soak = importlib.util.module_from_spec(spec)
    sys.modules["soak"] = soak  # dataclasses look their module up there
    spec.loader.exec_module(soak)
    res = soak.run(float(os.environ.get("QCP_SOAK_SECONDS", "8")), workers=3)
    assert res["submitted"] > 0 and res["fault_hits"]["POST /v1/jobs drop"] > 0  # faults did fire
    assert res["lost"] == 0 and res["duplicated"] == 0
    assert res["answered_200"] + res["answered_409"] == res["submitted"]
    assert res["created"] == res["answered_200"] + res["created_for_409"]
    assert not any(k.startswith("POST /jobs 5") for k in res["statuses"])  # never a 5xx on a submit
    assert set(res["recovery"]) <= {200, 404} and res["recovery"].get(200, 0) > 0
    fds = [fd for _, fd, _ in res["samples"]]
    assert fds[-1] <= fds[0] + 20  # no descriptor leak after the traffic stopped
    report = tmp_path / "BENCHMARKS.md"
    report.write_text("# Benchmarks\n\nother sections\n")
    soak.write_section(report, soak.markdown(res))
    soak.write_section(report, soak.markdown(res))  # replaced, not appended twice
    text = report.read_text()
    assert text.count(soak.SOAK_START) == 1 and "other sections" in text and "Lost: 0, duplicated: 0" in text
