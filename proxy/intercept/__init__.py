"""Intercepting mode: an HTTPS forward proxy with a local CA, so legacy code changes no URL (#18)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .ca import LocalCA
from .iam import LocalIam
from .server import InterceptServer

if TYPE_CHECKING:
    from ..classic.auth import AccessTokens
    from ..config import Settings
    from .server import ASGIApp


def build_intercept(settings: Settings, app: ASGIApp, tokens: AccessTokens) -> InterceptServer:
    """The listener for `settings.intercept_port`, its CA loaded or created in `ca_dir`."""
    return InterceptServer(settings, app, LocalCA(settings.ca_dir), LocalIam(settings, tokens))


__all__ = ["InterceptServer", "LocalCA", "LocalIam", "build_intercept"]
