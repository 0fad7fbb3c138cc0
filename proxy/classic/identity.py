"""Who is calling: a client-token name or a Classic login, the SDK and version, the base URL.

Refuses early (401 without a required client token; 400 on a foreign Host header when the proxy
listens on loopback only) so that nothing is read or forwarded for an unknown caller.
"""

from __future__ import annotations

import re

from ..call import Call
from ..config import Settings
from ..errors import BadRequest, Unauthorized
from .answers import COMPAT_RESULTS_BELOW
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
            scheme, _, cred = authz.partition(" ")
            cred = cred.strip()
            if scheme.lower() == "bearer":  # a client token, or a bearer the proxy's local IAM issued
                name = self.client_tokens.get(cred) or (self.access_tokens.verify(cred) if cred else None)
            elif scheme.lower() == "apikey":  # IBM Cloud callers (runtime 0.23/0.30) when IAM fails
                name = self.client_tokens.get(cred)
        if name is not None:
            call.caller, call.authenticated = name, True
        route_key = call.route.key if call.route else ""
        if self.client_tokens:
            if name is None and (access or h.get("authorization")):
                self.throttle.failed(call.client)  # a wrong token: 429 once over the burst
            if name is None and route_key not in OPEN_ROUTES:
                raise Unauthorized(
                    "this proxy requires a client token: log in with it (Classic loginWithToken), "
                    "or send it as 'Authorization: Bearer <token>', 'Authorization: apikey <token>' "
                    "or 'X-Access-Token'",
                    code="client_token_required",
                )
        else:
            host = h.get("host", "")
            hostname = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
            # The intercepting tunnel is its own boundary: a loopback caller CONNECTed to that host.
            tunnel = scope.get("qcp_tunnel")
            if host and hostname not in _LOOPBACK_HOSTS and not self.settings.public_url and hostname != tunnel:
                # DNS rebinding: a web page must not reach the credentials through a loopback port.
                raise BadRequest(f"unexpected Host header {hostname!r} for a loopback proxy", code="bad_host")
        app_header = h.get("x-qx-client-application") or h.get("user-agent", "")
        m = _SDK.search(app_header)
        if m:
            call.sdk = m.group(1).replace("-", "_") + "-" + m.group(2)
            call.sdk_version = tuple(int(p) for p in m.group(2).split(".") if p.isdigit())
        elif app_header.startswith("qiskit/"):
            call.sdk = "qiskit_ibm_provider"
        elif app_header.startswith("/") or h.get("x-qx-client-application") == "":
            # qiskit-ibm-runtime with USAGE_DATA_OPT_OUT=True sends "/qiskit": an SDK, version unknown.
            call.sdk = "qiskit_ibm_runtime-unknown"
        if call.sdk.startswith("qiskit_ibm_runtime"):
            if call.sdk_version:
                call.compat_results = call.sdk_version < COMPAT_RESULTS_BELOW
            else:
                call.compat_results = self.settings.unknown_version_results == "compat"
        scheme = scope.get("scheme", "http")
        call.base_url = f"{scheme}://{h['host']}" if "host" in h else f"{scheme}://{self.settings.host}"
