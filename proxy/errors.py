"""One exception hierarchy; every error a caller sees is one of these, rendered as JSON.

The body carries both shapes: the new API's `errors` list (for new-style callers) and the
Classic `error` object, which is what legacy SDKs parse to show a message.
"""

from __future__ import annotations

from typing import Any

from . import fastjson
from .config import MIGRATION_GUIDE_URL

MORE_INFO = MIGRATION_GUIDE_URL


class ProxyError(Exception):
    """Base: an answer the proxy itself gives. Never carries secrets."""

    status: int = 500
    code: str = "proxy_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers = headers or {}
        self.extra = extra or {}

    def body(self, request_id: str) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message, "more_info": MORE_INFO}
        body: dict[str, Any] = {
            "errors": [err],
            "trace": request_id,
            "status_code": self.status,
            "error": {"code": self.code, "message": self.message, "status": self.status},
        }
        body.update(self.extra)
        return body

    def render(self, request_id: str) -> bytes:
        # orjson (a 410 or 404 is answered in ~100 us; the stdlib's encoder took ~5 of them).
        return fastjson.dumps(self.body(request_id))


class BadRequest(ProxyError):
    status, code = 400, "bad_request"


class Unauthorized(ProxyError):
    status, code = 401, "unauthorized"


class Forbidden(ProxyError):
    status, code = 403, "forbidden"


class NotFound(ProxyError):
    status, code = 404, "not_found"


class MethodNotAllowed(ProxyError):
    status, code = 405, "method_not_allowed"


class OutcomeUnknown(ProxyError):
    """A create (job/session) may have reached the upstream but we saw no answer.

    409 on purpose: the legacy SDKs retry POST on 500/502/503/504/520-524, and a retry here
    could run the job twice.
    """

    status, code = 409, "outcome_unknown"


class TooManyRequests(ProxyError):
    status, code = 429, "too_many_requests"


class Gone(ProxyError):
    status, code = 410, "endpoint_removed"


class PayloadTooLarge(ProxyError):
    status, code = 413, "payload_too_large"


class RetiredProgram(ProxyError):
    status, code = 400, "program_retired"


class UpstreamError(ProxyError):
    """The new API could not be reached or answered badly."""

    status, code = 502, "upstream_unreachable"


class UpstreamTimeout(UpstreamError):
    status, code = 504, "upstream_timeout"


class Overloaded(ProxyError):
    status, code = 503, "proxy_overloaded"


class IamError(ProxyError):
    """No valid IAM token can be had (IAM down or slow)."""

    status, code = 503, "iam_unavailable"


class IamKeyRejected(IamError):
    """IAM rejected the configured API key (BXNIM0415E and friends)."""

    status, code = 502, "iam_api_key_rejected"
