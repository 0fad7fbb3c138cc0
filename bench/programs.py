"""Cost of the V1 -> V2 translation (proxy/programs/), pure functions only, no servers.

    python bench/programs.py [CIRCUITS] [SHOTS] [REPEAT]

Builds a V1 circuit-runner and a V1 Sampler submission of CIRCUITS circuits (the 2-qubit circuit
of the recorded qiskit-ibm-runtime 0.20.0 trace, tests/data/), translates each REPEAT times, then
rebuilds the V1 answer from a SamplerV2 result of CIRCUITS pubs x SHOTS shots (one 2-bit register,
memory on for circuit-runner). Prints one JSON object: median milliseconds and the peak extra
memory (tracemalloc, MB) of each step. Reported in BENCHMARKS.md; never asserted in a test.
"""

from __future__ import annotations

import copy
import json
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from proxy.programs.rebuild import rebuild  # noqa: E402
from proxy.programs.translate import translate_submission  # noqa: E402
from tests.programs.v2results import sampler_result  # noqa: E402


def v1_bodies(n: int) -> tuple[dict[str, Any], dict[str, Any]]:
    lines = (ROOT / "tests/data/trace-qiskit-ibm-runtime-0.20.0.jsonl").read_text().splitlines()
    sampler = next(json.loads(x)["body"] for x in lines if '"program_id": "sampler"' in x)
    circuit = sampler["params"]["circuits"][0]
    sampler = copy.deepcopy(sampler)
    sampler["params"]["circuits"] = [circuit] * n
    sampler["params"]["parameters"] = [[]] * n
    sampler["params"]["parameter_values"] = [[]] * n
    runner = {"program_id": "circuit-runner", "backend": "fake_manila", "hub": "ibm-q", "group": "open",
              "project": "main", "params": {"shots": 4000, "meas_level": 2, "init_qubits": True, "memory": True,
              "meas_return": "avg", "circuits": [circuit] * n, "skip_transpilation": True}}  # fmt: skip
    return sampler, runner


def measure(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """(median ms, peak MB allocated during one call)."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return round(statistics.median(times), 2), round(peak / 2**20, 2)


def section(d: dict[str, Any]) -> list[str]:
    """The BENCHMARKS.md section (bench/run.py adds it to the report)."""
    rows = [
        ("translate V1 Sampler (100 circuits → 100 pubs, parameter arrays encoded)", "translate_v1_sampler"),
        ("translate circuit-runner (100 circuits)", "translate_circuit_runner"),
        (f"rebuild V1 Sampler `quasi_dists` ({d['circuits'] * d['shots']:,} shots)", "rebuild_v1_sampler"),
        (f"rebuild circuit-runner `Result` with `memory` ({d['circuits'] * d['shots']:,} hex strings)",
         "rebuild_circuit_runner_with_memory"),
    ]  # fmt: skip
    out = [
        "## V1 program translation (#12)",
        "",
        f"`python bench/programs.py {d['circuits']} {d['shots']}`: a {d['circuits']}-circuit V1 submission "
        "(the 2-qubit circuit of the recorded qiskit-ibm-runtime 0.20.0 trace) translated to SamplerV2, and the "
        f"V1 answer rebuilt from a SamplerV2 result of {d['circuits']} pubs x {d['shots']} shots (one 2-bit register; "
        f"{d['result_bytes'] // 1024} KiB of JSON). Pure functions, one core, median of the repeats; MB is the peak "
        "tracemalloc allocation of one call.",
        "",
        "| step | ms | MB |",
        "|---|---|---|",
        *[f"| {label} | {d[key][0]} | {d[key][1]} |" for label, key in rows],
        "",
        "Circuits are never decoded (only the QPY header is read), so translation cost grows with the number of "
        "circuits, not their size. Rebuilding is numpy over the BitArrays (`np.unique`); with `memory=True` most of "
        "the time is making and JSON-encoding one string per shot.",
        "",
    ]
    return out


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    shots = int(sys.argv[2]) if len(sys.argv) > 2 else 4000
    repeat = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    sampler, runner = v1_bodies(n)
    rng = np.random.default_rng(7)
    result = sampler_result([[("c", rng.choice([0, 3], size=shots).tolist(), 2)] for _ in range(n)])
    _, tr_runner = translate_submission(copy.deepcopy(runner))
    _, tr_sampler = translate_submission(copy.deepcopy(sampler))
    out: dict[str, Any] = {
        "circuits": n, "shots": shots, "submission_bytes": len(json.dumps(sampler)), "result_bytes": len(result),
    }  # fmt: skip
    # translate_submission copies what it changes; a deepcopy per call stands for json.loads.
    out["translate_v1_sampler"] = measure(lambda: translate_submission(copy.deepcopy(sampler)), repeat)
    out["translate_circuit_runner"] = measure(lambda: translate_submission(copy.deepcopy(runner)), repeat)
    out["rebuild_v1_sampler"] = measure(lambda: rebuild(tr_sampler, result, "job"), repeat)
    out["rebuild_circuit_runner_with_memory"] = measure(lambda: rebuild(tr_runner, result, "job"), repeat)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
