"""A faithful fake of the new Qiskit Runtime REST API and of the IBM Cloud IAM token endpoint.

Run it as a real server (tests, `qiskit-classic-proxy demo`, benchmarks)::

    from proxy.emulator import create_emulator_app
    from proxy.serving import BackgroundServer

    app = create_emulator_app()
    server = BackgroundServer(app).start()
    # proxy upstream: f"{server.url}/api", IAM URL: f"{server.url}/identity/token"
    app.state.emulator.requests  # everything the proxy sent to /api/**

or standalone: ``python -m proxy.emulator --port 9999``.
"""

from .app import ConnectionDropped, EmulatorApp, create_emulator_app
from .config import (
    DEMO_API_KEY,
    DEMO_CRN,
    SECOND_CRN,
    EmulatorBackend,
    EmulatorConfig,
    default_backends,
    load_fixture,
    manila_like,
)
from .faults import FaultConfigError, FaultRule
from .state import ApiError, Emulator, Job, Session
from .tokens import decode_jwt, make_jwt

__all__ = [
    "DEMO_API_KEY",
    "DEMO_CRN",
    "SECOND_CRN",
    "ApiError",
    "ConnectionDropped",
    "Emulator",
    "EmulatorApp",
    "EmulatorBackend",
    "EmulatorConfig",
    "FaultConfigError",
    "FaultRule",
    "Job",
    "Session",
    "create_emulator_app",
    "decode_jwt",
    "default_backends",
    "load_fixture",
    "make_jwt",
    "manila_like",
]
