"""How fast `scan` reads a codebase: a generated tree of N files, scanned once, timed.

    python bench/scan.py --files 10000

The tree mixes real-world shapes (mostly clean modules, some legacy scripts, notebooks and shell
scripts, a few requirements files) so every rule family and the pin lookup run. Reports files/s,
findings, wall and CPU time and peak RSS. Writes nothing outside a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proxy.scan.analyzer import scan_paths

CLEAN = '''"""A module of an application that does not touch IBM services."""
import json


def load(path):
    with open(path) as f:
        return json.load(f)


class Store:
    def __init__(self, root):
        self.root = root

    def get(self, key, default=None):
        return load(f"{self.root}/{key}.json") if key else default
'''
LEGACY = '''from qiskit import QuantumCircuit, transpile
from qiskit_ibm_provider import IBMProvider
from qiskit_ibm_runtime import QiskitRuntimeService, Sampler, Session

service = QiskitRuntimeService(channel="ibm_quantum", instance="ibm-q/open/main")
provider = IBMProvider()
backend = provider.get_backend("ibm_kyiv")
qc = QuantumCircuit(2, 2)
job = backend.run(transpile(qc, backend), shots=1000)
counts = job.result().get_counts()
with Session(service=service, backend="ibm_kyiv") as session:
    print(Sampler(session=session).run(qc).result().quasi_dists[0])
'''
SHELL = 'curl -s "https://api.quantum-computing.ibm.com/runtime/jobs?limit=5" -H "X-Access-Token: $T"\n'


def notebook() -> str:
    cells = [{"cell_type": "code", "source": LEGACY.splitlines(keepends=True)},
             {"cell_type": "markdown", "source": ["notes"]}]
    return json.dumps({"cells": cells, "nbformat": 4, "nbformat_minor": 5, "metadata": {}})


def make_tree(root: Path, n: int) -> None:
    for i in range(n):
        d = root / f"pkg{i // 100:03d}"
        if i % 100 == 0:
            d.mkdir(parents=True)
            (d / "requirements.txt").write_text("qiskit-ibm-runtime==0.23.0\n" if i % 200 == 0 else "requests\n")
        kind = i % 20
        if kind == 0:
            (d / f"legacy_{i}.py").write_text(LEGACY)
        elif kind == 1:
            (d / f"nb_{i}.ipynb").write_text(notebook())
        elif kind == 2:
            (d / f"poll_{i}.sh").write_text(SHELL)
        else:
            (d / f"mod_{i}.py").write_text(CLEAN * 3)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=10000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="qcp-scan-bench-"))
    try:
        make_tree(tmp, args.files)
        size = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file())
        cpu0, t0 = time.process_time(), time.perf_counter()
        result = scan_paths([tmp], base=tmp)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
        print(f"command: python bench/scan.py --files {args.files}")
        print(f"tree: {result.files} files, {size / 1e6:.1f} MB; findings: {len(result.findings)}; "
              f"errors: {len(result.errors)}")
        print(f"wall {wall:.2f} s, CPU {cpu:.2f} s, {result.files / wall:.0f} files/s, "
              f"{wall / result.files * 1e3:.2f} ms/file, peak RSS {rss_mb:.0f} MB")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
