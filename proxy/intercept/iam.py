"""A stand-in for `iam.cloud.ibm.com`, answered inside the intercepting tunnel.

IBM Cloud callers (qiskit-ibm-runtime 0.40.1 `channel="ibm_cloud"`) first trade their API key for
a bearer at IAM. Their key must never reach IAM (it is a client token, or a key the proxy does not
hold), so the proxy answers the exchange itself with a bearer it signed, bound to the caller: the
pipeline's identity step accepts that bearer like `X-Access-Token`.
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


class LocalIam:
    """ASGI-style handler for the IAM host: POST /identity/token, nothing else."""

    def __init__(self, settings: Settings, tokens: AccessTokens) -> None:
        self.tokens = tokens
        self.client_tokens = settings.client_token_names

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
