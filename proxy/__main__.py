"""`python -m proxy` is the same as `qiskit-classic-proxy`."""

from .cli import main

raise SystemExit(main())
