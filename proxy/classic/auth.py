"""The Classic auth surface, synthesized: /version, login, /users/me, /Network, /logout.

The new API has none of it. Legacy SDKs log in with a token, get an access token back, and take
every other base URL from /users/me, so the proxy mints access tokens itself and points the SDK
back at the proxy. Access tokens are HMAC-signed (stateless), so they work across workers and
restarts; the signing key is derived from the API key and never leaves the process. Logouts are
remembered per process, and through the shared database (`store.Store`) by every process when one
is configured: there only the token's sha256 is stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from datetime import datetime, timezone

from cachetools import TTLCache

from ..call import Call, Reply
from ..config import Settings
from ..errors import BadRequest, Unauthorized
from ..store import Store, token_digest
from .rewrite import parse_json_object
from .throttle import FailureThrottle

ACCESS_TOKEN_TTL = 14 * 24 * 3600  # what Classic answered in loginWithToken.ttl
#: What IAM gives its bearer tokens; the intercepting mode's local IAM mints the same.
BEARER_TTL = 3600
_PREFIX = "qcp1"
#: The fixed JOSE header of the bearer tokens the proxy issues as a stand-in IAM (HS256, our key).
_JWT_HEAD = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT","kid":"qcp1"}').rstrip(b"=").decode()


class AccessTokens:
    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.store = store
        secret = settings.api_key.get_secret_value() if settings.api_key else secrets.token_hex(32)
        self._key = hashlib.sha256(b"qiskit-classic-proxy access token\0" + secret.encode()).digest()
        self._revoked: TTLCache[str, bool] = TTLCache(maxsize=100_000, ttl=ACCESS_TOKEN_TTL)

    def mint(self, caller: str, now: float | None = None) -> str:
        payload = {"c": caller, "e": int((now or time.time()) + ACCESS_TOKEN_TTL), "n": secrets.token_hex(8)}
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        return f"{_PREFIX}.{body}.{self._sign(body)}"

    def mint_bearer(self, caller: str, now: float | None = None) -> str:
        """A JWT-shaped bearer (IBM Cloud SDKs decode `exp`/`iat` from it, unverified)."""
        iat = int(now or time.time())
        claims = {"sub": caller, "iss": "qiskit-classic-proxy", "iat": iat, "exp": iat + BEARER_TTL,
                  "jti": secrets.token_hex(8)}
        body = _b64(json.dumps(claims, separators=(",", ":")).encode())
        signed = f"{_JWT_HEAD}.{body}"
        return f"{signed}.{_b64(hmac.new(self._key, signed.encode(), hashlib.sha256).digest())}"

    def verify(self, token: str) -> str | None:
        """Caller name for a valid, unexpired, unrevoked token (Classic access or bearer); None otherwise."""
        parts = token.split(".")
        if len(parts) != 3 or token in self._revoked:
            return None
        if self.store is not None and self.store.revoked(token_digest(token)):
            return None
        if parts[0] == _PREFIX:
            ok, name_key, exp_key = hmac.compare_digest(self._sign(parts[1]), parts[2]), "c", "e"
        elif parts[0] == _JWT_HEAD:
            mac = _b64(hmac.new(self._key, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest())
            ok, name_key, exp_key = hmac.compare_digest(mac, parts[2]), "sub", "exp"
        else:
            return None
        if not ok:
            return None
        try:
            payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        except ValueError:
            return None
        if not isinstance(payload, dict) or payload.get(exp_key, 0) < time.time():
            return None
        return str(payload.get(name_key, "anonymous"))

    def revoke(self, token: str) -> None:
        self._revoked[token] = True

    async def logout(self, token: str) -> None:
        """Revoke here and, before the logout is answered, for every process sharing the store."""
        self.revoke(token)
        if self.store is not None and self.verify_signature(token):
            await self.store.revoke(token_digest(token), time.time() + ACCESS_TOKEN_TTL)

    def verify_signature(self, token: str) -> bool:
        """Only tokens this proxy minted are worth sharing (no junk rows from random headers)."""
        parts = token.split(".")
        return len(parts) == 3 and parts[0] == _PREFIX and hmac.compare_digest(self._sign(parts[1]), parts[2])

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest()[:24])


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class LegacyAuth:
    """Local handlers for the Classic auth routes (see routes.py, section classic-auth)."""

    def __init__(self, settings: Settings, tokens: AccessTokens, throttle: FailureThrottle | None = None) -> None:
        self.settings = settings
        self.tokens = tokens
        self.client_tokens = settings.client_token_names
        self.throttle = throttle if throttle is not None else FailureThrottle(settings)

    def _base(self, call: Call) -> str:
        return self.settings.public_url or call.base_url

    async def version(self, call: Call, body: bytes) -> Reply:
        return Reply.json({"api-auth": "0.1.0", "api": "classic-compat", "proxy": "qiskit-classic-proxy"})

    async def login(self, call: Call, body: bytes) -> Reply:
        doc = parse_json_object(body)  # within the nesting limits: never a RecursionError
        token = doc.get("apiToken")
        if not isinstance(token, str) or not token:
            raise BadRequest("apiToken is required", code="missing_api_token")
        if self.client_tokens:
            caller = self.client_tokens.get(token)
            if caller is None:
                self.throttle.failed(call.client)  # 429 once over the burst
                raise Unauthorized("login failed: the token is not one of QCP_CLIENT_TOKENS", code="login_failed")
        else:
            caller = call.caller if call.authenticated else "anonymous"
        now = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
        return Reply.json(
            {"id": self.tokens.mint(caller), "ttl": ACCESS_TOKEN_TTL, "created": now, "userId": f"qcp-{caller}"}
        )

    async def me(self, call: Call, body: bytes) -> Reply:
        base = self._base(call)
        return Reply.json(
            {
                "id": f"qcp-{call.caller}",
                "username": call.caller,
                "urls": {
                    "http": f"{base}/api",
                    "services": {"runtime": f"{base}/runtime"},
                    "ws": "",
                },
                "canScheduleBackends": False,
                "proxy": "qiskit-classic-proxy: Classic API translated to the new Qiskit Runtime API",
            }
        )

    async def network(self, call: Call, body: bytes) -> Reply:
        hubs: dict[str, dict] = {}
        for i, name in enumerate(self.settings.instance_crns):
            hub, group, project = name.split("/")
            h = hubs.setdefault(hub, {"name": hub, "groups": {}})
            g = h["groups"].setdefault(group, {"name": group, "projects": {}})
            g["projects"][project] = {"name": project, "isDefault": i == 0}
        return Reply.json(list(hubs.values()))

    async def logout(self, call: Call, body: bytes) -> Reply:
        token = call.headers.get("x-access-token")
        if token:
            await self.tokens.logout(token)
        return Reply(204, b"", content_type=None)
