"""`python -m proxy` is the same as `qiskit-classic-proxy`."""

from .commands.main import main

raise SystemExit(main())
