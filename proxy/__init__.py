"""qiskit-classic-proxy: a local proxy that speaks the retired IBM Quantum Platform Classic REST API
and forwards each call, translated, to the new Qiskit Runtime REST API."""

__version__ = "0.1.0"
