"""Fault injection: how the fake IAM and the fake new API misbehave on request.

Rules are plain data (JSON-able) so that the same dict works from Python (`emulator.set_faults`)
and over HTTP (`POST /__emulator__/faults`). Wire effects live in `app.py`; here is only what
to do and for how many requests.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from fnmatch import fnmatchcase
from typing import Any

IAM_MODES = ("ok", "down", "slow", "reject", "drop")
RULE_ACTIONS = ("status", "hang", "drop", "truncate")
#: `hang` without an explicit delay waits this long, i.e. until the client gives up.
HANG_FOREVER = 3600.0


class FaultConfigError(ValueError):
    """A fault setting is invalid; the message names it."""


@dataclass
class FaultRule:
    """One upstream fault.

    match: "*" (every /api request), or "METHOD PATTERN" where METHOD may be "*" and PATTERN is
    a shell-style pattern tried against the route template (`/v1/jobs/{id}`) and against the
    concrete path (`/v1/jobs/abc`), both without the `/api` prefix. "POST /identity/token"
    targets the IAM endpoint (never matched by "*").
    """

    match: str = "*"
    action: str = "status"
    status: int = 503
    #: Seconds to wait before acting (for `hang`: before answering normally; default: forever).
    delay: float | None = None
    #: How many matching requests this rule still applies to; None = forever.
    times: int | None = None
    #: `status` only: extra response headers (e.g. Retry-After) and a JSON body replacing the default.
    headers: dict[str, str] | None = None
    body: Any = None
    #: Fire on every Nth matching request only (1 = all): "drop 10 % of the answers" is every=10.
    every: int = 1
    #: How many requests this rule has fired on (read-only bookkeeping).
    hits: int = 0
    #: How many matching requests it has seen, fired or not (read-only bookkeeping).
    seen: int = 0

    def __post_init__(self) -> None:
        if self.action not in RULE_ACTIONS:
            raise FaultConfigError(f"rules[].action: {self.action!r} is not one of {', '.join(RULE_ACTIONS)}")
        if not isinstance(self.match, str) or not self.match.strip():
            raise FaultConfigError("rules[].match: must be '*' or 'METHOD /v1/path-template'")
        self.match = " ".join(self.match.split())
        if self.match != "*" and len(self.match.split(" ")) != 2:
            raise FaultConfigError(f"rules[].match: {self.match!r} is not '*' or 'METHOD /path'")
        if not isinstance(self.status, int) or not 100 <= self.status <= 599:
            raise FaultConfigError(f"rules[].status: {self.status!r} is not an HTTP status")
        if self.delay is not None and (not isinstance(self.delay, (int, float)) or self.delay < 0):
            raise FaultConfigError(f"rules[].delay: {self.delay!r} must be a number >= 0")
        if self.times is not None and (not isinstance(self.times, int) or self.times < 0):
            raise FaultConfigError(f"rules[].times: {self.times!r} must be an integer >= 0 or null")
        if not isinstance(self.every, int) or isinstance(self.every, bool) or self.every < 1:
            raise FaultConfigError(f"rules[].every: {self.every!r} must be an integer >= 1")

    @property
    def effective_delay(self) -> float:
        if self.delay is not None:
            return float(self.delay)
        return HANG_FOREVER if self.action == "hang" else 0.0

    @property
    def active(self) -> bool:
        return self.times is None or self.times > 0

    def matches(self, method: str, template: str, path: str, *, iam: bool = False) -> bool:
        """Does this rule apply to METHOD on this route template / concrete path?"""
        if self.match == "*":
            return not iam
        m, pattern = self.match.split(" ", 1)
        if m != "*" and m.upper() != method:
            return False
        if pattern.startswith("/api/"):
            pattern = pattern[4:]
        return fnmatchcase(template, pattern) or fnmatchcase(path, pattern)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaultRule:
        if not isinstance(data, dict):
            raise FaultConfigError("rules[]: each rule must be a JSON object")
        known = {"match", "action", "status", "delay", "times", "headers", "body", "every"}
        unknown = set(data) - known - {"hits", "seen"}
        if unknown:
            raise FaultConfigError(f"rules[]: unknown key(s) {', '.join(sorted(unknown))}")
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class IamFaults:
    """How POST /identity/token behaves: ok | down (503) | slow (iam_delay, then ok) | reject | drop."""

    mode: str = "ok"
    delay: float = 2.0
    #: How many IAM calls the mode applies to before it reverts to "ok"; None = forever.
    times: int | None = None

    def take(self) -> str:
        """The mode for this IAM call (consuming one of `times`)."""
        if self.mode == "ok":
            return "ok"
        if self.times is not None:
            if self.times <= 0:
                self.mode, self.times = "ok", None
                return "ok"
            self.times -= 1
        return self.mode


def validate_iam_mode(mode: Any) -> str:
    if mode not in IAM_MODES:
        raise FaultConfigError(f"iam_mode: {mode!r} is not one of {', '.join(IAM_MODES)}")
    return str(mode)
