"""Legacy script: qiskit-ibm-provider 0.11, backend.run() and get_counts().

backend.run() submits the circuit-runner program, which IBM no longer runs; the proxy translates
it to SamplerV2 and rebuilds the qiskit Result. `qiskit-classic-proxy scan --diff` shows the
qiskit-ibm-runtime version of this file.
"""

import os

from qiskit import QuantumCircuit, transpile
from qiskit_ibm_provider import IBMProvider

URL = os.environ.get("QCP_URL", "http://127.0.0.1:8080") + "/api"
TOKEN = os.environ.get("QISKIT_IBM_TOKEN", "anything")


def main() -> None:
    provider = IBMProvider(token=TOKEN, url=URL)
    backend = provider.get_backend(os.environ.get("QCP_BACKEND", "fake_manila"))
    bell = QuantumCircuit(2, 2)
    bell.h(0)
    bell.cx(0, 1)
    bell.measure([0, 1], [0, 1])
    job = backend.run(transpile(bell, backend), shots=200)
    print(job.result().get_counts())


if __name__ == "__main__":
    main()
