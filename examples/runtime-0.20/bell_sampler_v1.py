"""Legacy script: qiskit-ibm-runtime 0.20, the V1 Sampler and its quasi-distributions.

IBM no longer runs the V1 primitives; the proxy translates the job to SamplerV2 and the answer
back. `qiskit-classic-proxy scan --diff` shows the SamplerV2 version of this file.
"""

import os

from qiskit import QuantumCircuit
from qiskit_ibm_runtime import QiskitRuntimeService, Sampler, Session

URL = os.environ.get("QCP_URL", "http://127.0.0.1:8080") + "/api"
TOKEN = os.environ.get("QISKIT_IBM_TOKEN", "anything")


def main() -> None:
    service = QiskitRuntimeService(channel="ibm_quantum", url=URL, token=TOKEN, instance="ibm-q/open/main")
    bell = QuantumCircuit(2)
    bell.h(0)
    bell.cx(0, 1)
    bell.measure_all()
    with Session(service=service, backend=os.environ.get("QCP_BACKEND", "fake_manila")) as session:
        sampler = Sampler(session=session)
        job = sampler.run(bell, shots=200)
        print(job.result().quasi_dists[0])


if __name__ == "__main__":
    main()
