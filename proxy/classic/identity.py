"""Who is calling: a client-token name or a Classic login, the SDK and version, the base URL.

Refuses early (401 without a required client token; 400 on a foreign Host header when the proxy
listens on loopback only) so that nothing is read or forwarded for an unknown caller.
"""

from __future__ import annotations

import re

from ..call import Call
from ..config import Settings
from ..errors import BadRequest, Unauthorized
from .auth import AccessTokens
from .throttle import FailureThrottle

#: Routes a caller may use without a client token (the Classic login itself, version, health).
OPEN_ROUTES = frozenset({"GET /version", "POST /users/loginWithToken", "GET /health", "POST /auth/validate"})
_SDK = re.compile(r"(qiskit_ibm_runtime|qiskit_ibm_provider|qiskit-ibm-runtime|qiskit-ibm-provider)[-/]([0-9][0-9.]*)")
_LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]", "::1")


class Identity:
    """Fills `call.caller`, `call.authenticated`, `call.sdk*` and `call.base_url`."""

    def __init__(
        self, settings: Settings, access_tokens: AccessTokens, throttle: FailureThrottle | None = None
    ) -> None:
        self.settings = settings
        self.access_tokens = access_tokens
        self.client_tokens = settings.client_token_names
        self.throttle = throttle if throttle is not None else FailureThrottle(settings)

    def identify(self, call: Call, scope: dict) -> None:
        """Who is calling: client-token name or login name; refuse if tokens are required."""
        h = call.headers
        name: str | None = None
        access = h.get("x-access-token")
        if access:
            name = self.access_tokens.verify(access) or self.client_tokens.get(access)
        if name is None:
            authz = h.get("authorization", "")
            if authz[:7].lower() == "bearer ":
                name = self.client_tokens.get(authz[7:].strip())
        if name is not None:
            call.caller, call.authenticated = name, True
        route_key = call.route.key if call.route else ""
        if self.client_tokens:
            if name is None and (access or h.get("authorization")):
                self.throttle.failed(call.client)  # a wrong token: 429 once over the burst
            if name is None and route_key not in OPEN_ROUTES:
                raise Unauthorized(
                    "this proxy requires a client token: log in with it (Classic loginWithToken), "
                    "or send it as 'Authorization: Bearer <token>' or 'X-Access-Token'",
                    code="client_token_required",
                )
        else:
            host = h.get("host", "")
            hostname = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
            if host and hostname not in _LOOPBACK_HOSTS and not self.settings.public_url:
                # DNS rebinding: a web page must not reach the credentials through a loopback port.
                raise BadRequest(f"unexpected Host header {hostname!r} for a loopback proxy", code="bad_host")
        app_header = h.get("x-qx-client-application") or h.get("user-agent", "")
        m = _SDK.search(app_header)
        if m:
            call.sdk = m.group(1).replace("-", "_") + "-" + m.group(2)
            call.sdk_version = tuple(int(p) for p in m.group(2).split(".") if p.isdigit())
        elif app_header.startswith("qiskit/"):
            call.sdk = "qiskit_ibm_provider"
        scheme = scope.get("scheme", "http")
        call.base_url = f"{scheme}://{h['host']}" if "host" in h else f"{scheme}://{self.settings.host}"
