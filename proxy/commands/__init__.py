"""The command line (`qiskit-classic-proxy`): `main.py` parses, one module per command."""
