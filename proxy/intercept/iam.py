"""Stand-ins for the IBM Cloud account services an SDK asks, answered inside the intercepting tunnel.

IBM Cloud callers (qiskit-ibm-runtime 0.40.1 `channel="ibm_cloud"`) first trade their API key for
a bearer at IAM. Their key must never reach IAM (it is a client token, or a key the proxy does not
hold), so the proxy answers the exchange itself with a bearer it signed, bound to the caller: the
pipeline's identity step accepts that bearer like `X-Access-Token`. Callers that give no instance
(or an instance *name*) look their instances up in IBM Cloud's resource search and catalog, on
hosts derived from the IAM one (`api.global-search-tagging.<base>`, `globalcatalog.<base>`): those
answer with the proxy's configured instances, named by their hub/group/project.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from ..classic.auth import BEARER_TTL, AccessTokens
from ..config import Settings

MAX_FORM = 64 * 1024
APIKEY_GRANT = "urn:ibm:params:oauth:grant-type:apikey"


SEARCH_PREFIX = "api.global-search-tagging."
CATALOG_PREFIX = "globalcatalog."
PLAN_ID = "qiskit-classic-proxy"


class LocalIam:
    """ASGI-style handler for the IAM hosts (POST /identity/token) and their resource directory."""

    def __init__(self, settings: Settings, tokens: AccessTokens) -> None:
        self.tokens = tokens
        self.client_tokens = settings.client_token_names
        self.instances = settings.instance_crns
        self.iam_hosts = {h.lower() for h in settings.intercept_iam_hosts}
        bases = {h.removeprefix("iam.") for h in self.iam_hosts if h.startswith("iam.")}
        #: Every host answered here: the IAM hosts, and the search/catalog hosts beside them.
        self.hosts = self.iam_hosts | {SEARCH_PREFIX + b for b in bases} | {CATALOG_PREFIX + b for b in bases}

    def _caller_ok(self, scope: dict) -> bool:
        """The directory shows instances only to a caller holding a proxy bearer (or client token)."""
        if not self.client_tokens:
            return True
        authz = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        scheme, _, cred = authz.partition(" ")
        cred = cred.strip()
        return scheme.lower() == "bearer" and bool(cred) and (
            cred in self.client_tokens or self.tokens.verify(cred) is not None
        )

    def directory(self, host: str, method: str, path: str) -> tuple[int, dict[str, Any]]:
        """Resource search: the configured instances; catalog: a plan entry for them."""
        if host.startswith(SEARCH_PREFIX) and method == "POST" and path.rstrip("/") == "/v3/resources/search":
            items = [
                {"crn": crn, "name": name, "service_plan_unique_id": PLAN_ID,
                 "doc": {"extensions": {"qiskit-classic-proxy": {"instance": name}}}}
                for name, crn in self.instances.items()
            ]
            return 200, {"items": items, "limit": 100}
        if host.startswith(CATALOG_PREFIX) and method == "GET" and path.startswith("/api/v1/"):
            return 200, {"id": path.rsplit("/", 1)[-1], "name": PLAN_ID,
                         "overview_ui": {"en": {"display_name": "qiskit-classic-proxy"}}}
        return 404, {"errors": [{"code": "not_found", "message": f"{method} {path} is not answered by the proxy"}]}

    def exchange(self, form: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        """The IAM answer for an apikey grant: 200 with a proxy bearer, or IAM's own error shape."""
        grant = (form.get("grant_type") or [""])[0]
        key = (form.get("apikey") or [""])[0]
        if grant != APIKEY_GRANT or not key:
            return 400, _iam_error("BXNIM0109E", "Property missing or empty: grant_type=apikey and apikey are required")
        if self.client_tokens:
            caller = self.client_tokens.get(key)
            if caller is None:
                return 400, _iam_error(
                    "BXNIM0415E", "Provided API key could not be found: use one of the proxy's client tokens"
                )
        else:
            caller = "anonymous"
        now = int(time.time())
        return 200, {
            "access_token": self.tokens.mint_bearer(caller, now),
            "refresh_token": "not_supported",
            "token_type": "Bearer",
            "expires_in": BEARER_TTL,
            "expiration": now + BEARER_TTL,
            "scope": "ibm openid",
        }

    async def handle(self, scope: dict, receive: Callable, send: Callable) -> None:
        body = b""
        while True:
            msg = await receive()
            if msg["type"] != "http.request":
                return
            body += msg.get("body", b"")
            if len(body) > MAX_FORM:
                await _reply(send, 413, _iam_error("BXNIM0413E", "request body too large"))
                return
            if not msg.get("more_body"):
                break
        host = scope["qcp_tunnel"]
        if host not in self.iam_hosts:
            if not self._caller_ok(scope):
                denied = {"errors": [{"code": "not_authorized", "message": "a bearer from the proxy's IAM is needed"}]}
                await _reply(send, 401, denied)
                return
            await _reply(send, *self.directory(host, scope["method"], scope["path"]))
            return
        if scope["method"] != "POST" or scope["path"].rstrip("/") != "/identity/token":
            status, doc = 404, _iam_error(
                "BXNIM0404E", "the proxy answers only POST /identity/token for intercepted IAM calls"
            )
        else:
            status, doc = self.exchange(parse_qs(body.decode("latin-1"), keep_blank_values=True))
        await _reply(send, status, doc)


def _iam_error(code: str, message: str) -> dict[str, Any]:
    return {"errorCode": code, "errorMessage": message, "context": {"requestId": "qiskit-classic-proxy"}}


async def _reply(send: Callable, status: int, doc: dict[str, Any]) -> None:
    data = json.dumps(doc).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
               (b"cache-control", b"no-store")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
