"""Record what qiskit-ibm-runtime 0.20.0 sends for V1 Sampler/Estimator (tests/data/README.md).

Run in a venv with `qiskit-ibm-runtime==0.20.0 qiskit==0.46.3` against a proxy + emulator:
    python record_runtime_0_20_0.py http://127.0.0.1:PORT trace-qiskit-ibm-runtime-0.20.0.jsonl
Every request the SDK makes is written as one JSON line (tokens masked), as sent.
"""

import json
import sys
import warnings
from urllib.parse import parse_qs, urlsplit

import requests
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
from qiskit.quantum_info import SparsePauliOp
from qiskit_ibm_runtime import Estimator, Options, QiskitRuntimeService, Sampler, Session

warnings.filterwarnings("ignore")
URL, OUT = sys.argv[1], open(sys.argv[2], "w")
_send = requests.Session.request
SECRET = ("x-access-token", "authorization")


def recording(self, method, url, *args, **kwargs):
    resp = _send(self, method, url, *args, **kwargs)
    req = resp.request
    body = req.body.decode() if isinstance(req.body, bytes) else req.body
    try:
        body = json.loads(body) if body else None
    except ValueError:
        pass
    u = urlsplit(req.url)
    headers = {k: ("***" if k.lower() in SECRET else v) for k, v in req.headers.items()}
    line = {"method": req.method, "path": u.path, "query": parse_qs(u.query), "headers": headers, "body": body,
            "status": resp.status_code}  # fmt: skip
    OUT.write(json.dumps(line) + "\n")
    OUT.flush()
    return resp


requests.Session.request = recording
service = QiskitRuntimeService(channel="ibm_quantum", token="rec-token", url=URL + "/api")
backend = service.backend("fake_manila")
bell = QuantumCircuit(2, 2, name="bell")
bell.h(0)
bell.cx(0, 1)
bell.measure([0, 1], [0, 1])
theta, phi = Parameter("theta"), Parameter("phi")
par = QuantumCircuit(2, name="param")
par.ry(theta, 0)
par.rx(phi * 2, 1)
par.measure_all()
bell_nom = QuantumCircuit(2, name="bell_nomeas")
bell_nom.h(0)
bell_nom.cx(0, 1)
obs = SparsePauliOp.from_list([("ZZ", 1.0), ("XX", 0.5)])
opts = Options()
opts.resilience_level = 1
opts.optimization_level = 3
opts.execution.shots = 2000
opts.environment.job_tags = ["v1-tag"]
opts.max_execution_time = 300
opts.transpilation.skip_transpilation = True
opts.simulator.seed_simulator = 42

Sampler(backend=backend).run(bell, shots=1000)
Sampler(backend=backend).run([par, par], [[0.3, 0.7], [1.2, 0.1]], shots=500)
Sampler(backend=backend, options=opts).run(bell)
Estimator(backend=backend).run(bell_nom, obs, shots=4000)
unmeasured = par.remove_final_measurements(inplace=False)
Estimator(backend=backend).run([bell_nom, unmeasured], [obs, SparsePauliOp("ZI")], [[], [0.3, 0.7]])
with Session(service=service, backend=backend) as s:
    Sampler(session=s).run(bell, shots=100)
    Estimator(session=s).run(bell_nom, obs)
