"""JWT-shaped IAM access tokens.

ibm-cloud-sdk-core (and a proxy that copies its refresh policy) reads `iat`/`exp` from the
token itself, and decodes all three base64url segments, so tokens must be real JWS compact
strings with a decodable, non-trivial signature. The signature is an HMAC the emulator never
checks: validity is decided by the emulator's table of tokens it issued.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

_DEFAULT_KEY = b"qiskit-classic-proxy-emulator"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(seg: str) -> bytes:
    return base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4))


def make_jwt(claims: dict[str, Any], *, header: dict[str, Any] | None = None, key: bytes = _DEFAULT_KEY) -> str:
    """Encode `claims` as `header.payload.signature` (RS256 in the header, like IAM; HMAC inside)."""
    hdr = {"alg": "RS256", "typ": "JWT", "kid": "emulator"} if header is None else header
    signing_input = (
        _b64url(json.dumps(hdr, separators=(",", ":")).encode())
        + "."
        + _b64url(json.dumps(claims, separators=(",", ":")).encode())
    )
    sig = hmac.new(key, signing_input.encode("ascii"), hashlib.sha256).digest()
    return signing_input + "." + _b64url(sig)


def decode_jwt(token: str) -> dict[str, Any]:
    """The payload claims of a JWT (no signature check); ValueError if it is not JWT-shaped."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("not a JWT: expected 3 dot-separated segments")
    try:
        claims = json.loads(_b64url_decode(parts[1]))
        _b64url_decode(parts[2])
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a JWT: {exc}") from None
    if not isinstance(claims, dict):
        raise ValueError("not a JWT: payload is not a JSON object")
    return claims
