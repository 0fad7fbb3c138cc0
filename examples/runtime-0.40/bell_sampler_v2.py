"""Legacy script: qiskit-ibm-runtime 0.40 on the Classic channel, a Bell circuit with SamplerV2.

Runs unchanged against the proxy (`qiskit-classic-proxy demo`, then `python bell_sampler_v2.py`);
`qiskit-classic-proxy scan` shows what to change before the proxy can go.
"""

import os

from qiskit import QuantumCircuit
from qiskit.transpiler import generate_preset_pass_manager
from qiskit_ibm_runtime import QiskitRuntimeService, SamplerV2, Session

URL = os.environ.get("QCP_URL", "http://127.0.0.1:8080") + "/api"
TOKEN = os.environ.get("QISKIT_IBM_TOKEN", "anything")


def main() -> None:
    service = QiskitRuntimeService(channel="ibm_quantum", url=URL, token=TOKEN, instance="ibm-q/open/main")
    backend = service.backend(os.environ.get("QCP_BACKEND", "fake_manila"))
    bell = QuantumCircuit(2)
    bell.h(0)
    bell.cx(0, 1)
    bell.measure_all()
    isa = generate_preset_pass_manager(backend=backend, optimization_level=1).run(bell)
    with Session(backend=backend, max_time="10m") as session:
        sampler = SamplerV2(mode=session)
        result = sampler.run([isa], shots=200).result()
    print(result[0].data.meas.get_counts())


if __name__ == "__main__":
    main()
