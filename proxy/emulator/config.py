"""Emulator settings, demo credentials and the backends it serves.

Everything here is plain data so that tests can build variants (`EmulatorConfig(token_ttl=1)`)
without touching the server code. Fixture JSON is packaged under `data/`; nothing is read from
outside the package at run time.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

DEMO_API_KEY = "demo-api-key"
DEMO_ACCOUNT = "0000000000000000000000000000demo"
DEMO_CRN = (
    "crn:v1:bluemix:public:quantum-computing:us-east:a/0000000000000000000000000000demo:"
    "00000000-0000-0000-0000-00000000d3m0::"
)
#: A second instance of the same account and region, for multi-instance tests.
SECOND_CRN = (
    "crn:v1:bluemix:public:quantum-computing:us-east:a/0000000000000000000000000000demo:"
    "00000000-0000-0000-0000-0000000000b2::"
)

#: IBM-API-Version values the real service lists in GET /v1/versions (new-api.md §8).
KNOWN_API_VERSIONS: tuple[tuple[str, str, str | None], ...] = (
    ("2024-01-01", "deprecated", "2026-07-01"),
    ("2025-01-01", "deprecated", "2026-10-01"),
    ("2025-05-01", "deprecated", "2027-01-01"),
    ("2026-02-01", "live", "2027-02-01"),
    ("2026-02-15", "live", "2027-02-15"),
    ("2026-03-15", "live", None),
    ("2026-04-15", "live", None),
)
#: What the emulator assumes when IBM-API-Version is absent (only possible with require_api_version=False);
#: the spec says an omitted version gets the oldest response shapes.
OMITTED_API_VERSION = "2024-01-01"

#: Programs that exist on the new platform. Classic-only programs (circuit-runner, qasm3-runner)
#: are rejected, as the real service would, so an untranslated submit is caught.
DEFAULT_PROGRAMS = frozenset({"sampler", "estimator", "noise-learner", "executor"})


@cache
def _fixture_bytes(name: str) -> bytes:
    return resources.files("proxy.emulator").joinpath("data", name).read_bytes()


def load_fixture(name: str) -> Any:
    """A fresh parsed copy of a packaged fixture (`data/<name>`), safe to mutate."""
    return json.loads(_fixture_bytes(name))


def fixture_bytes(name: str) -> bytes:
    """The packaged fixture's exact bytes (results are served verbatim, as text)."""
    return _fixture_bytes(name)


@dataclass
class EmulatorBackend:
    """One device: what /v1/backends lists and what /v1/backends/{id}/... answers."""

    name: str
    configuration: dict[str, Any]
    properties: dict[str, Any] | None = None
    defaults: dict[str, Any] | None = None
    #: "online" | "paused" | "offline" (status.name in the list; `state`/`status` in /status).
    status: str = "online"
    status_reason: str = "available"
    #: Jobs always ahead of ours in the queue (queue_length adds the emulator's own pending jobs).
    base_queue_length: int = 0
    clops: int = 2900

    @property
    def n_qubits(self) -> int:
        return int(self.configuration.get("n_qubits", 0))

    @property
    def is_simulator(self) -> bool:
        return bool(self.configuration.get("simulator", False))

    @property
    def version(self) -> str:
        return str(self.configuration.get("backend_version", "1.0.0"))


def manila_like(name: str, **overrides: Any) -> EmulatorBackend:
    """A backend built from the fake_manila fixtures, renamed to `name` everywhere it appears.

    The fixtures say `ibmq_manila`; the real service answers with the name you asked for, so
    `backend_name` in configuration and properties is rewritten to match the device id.
    """
    conf = load_fixture("conf_fake_manila.json")
    props = load_fixture("props_fake_manila.json")
    defs = load_fixture("defs_fake_manila.json")
    conf["backend_name"] = name
    props["backend_name"] = name
    return EmulatorBackend(name=name, configuration=conf, properties=props, defaults=defs, **overrides)


def default_backends() -> list[EmulatorBackend]:
    """fake_manila (the fixtures) and fake_kyiv (same data, other name)."""
    return [manila_like("fake_manila"), manila_like("fake_kyiv", clops=5000, base_queue_length=3)]


@dataclass
class EmulatorConfig:
    """What the fake service accepts and how it behaves. Mutable at run time via `Emulator`."""

    api_keys: set[str] = field(default_factory=lambda: {DEMO_API_KEY})
    crns: list[str] = field(default_factory=lambda: [DEMO_CRN, SECOND_CRN])
    token_ttl: int = 3600
    #: GET /v1/jobs/{id} number k (1-based) answers Completed once k >= this, Running at k == this-1,
    #: Queued before. 0 = jobs are Completed as soon as they are created.
    job_polls_to_complete: int = 2
    require_api_version: bool = True
    backends: list[EmulatorBackend] = field(default_factory=default_backends)
    programs: frozenset[str] = DEFAULT_PROGRAMS
    #: Reject body fields the spec does not list (off: the real service's strictness is unknown).
    reject_unknown_fields: bool = False
    #: Record /api/** requests in `Emulator.requests` (benchmarks may turn this off).
    record_requests: bool = True
    #: Keep at most this many recorded requests (oldest dropped first); None = unbounded.
    max_recorded_requests: int | None = 10_000
    #: QPU seconds charged to each completed job (usage, analytics, instance usage).
    job_usage_seconds: float = 2.0
    #: Per-instance plan limit reported by /v1/instances/usage.
    usage_limit_seconds: float = 360_000.0
    #: "N jobs per minute per user" like the real POST /v1/jobs (429 beyond); None = unlimited.
    job_rate_limit_per_minute: int | None = None
    #: Result body per program id (bytes served verbatim, before any simulated result); others get
    #: the simulated result (simulate.py) or the sampler fixture.
    results: dict[str, bytes] = field(default_factory=dict)
    #: A job tagged with this ends Failed; with `timeout_tag` it ends "Cancelled - Ran too long".
    fail_tag: str = "emulator:fail"
    timeout_tag: str = "emulator:timeout"

    def copy(self) -> EmulatorConfig:
        """A deep copy, so one config object can seed several emulators."""
        return copy.deepcopy(self)
