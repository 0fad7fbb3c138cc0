"""Exactly-once job submissions: mark every forwarded POST /v1/jobs, find it again when unsure.

When the connection drops after the body went out (or the new API answers 5xx, or times out),
the job may exist upstream and nobody knows its id. Resubmitting would run and bill it twice;
answering an error loses it for the caller. So every submission carries a tag only this request
has (`qcp:req:<uuid>`), and on an unknown outcome the proxy asks `GET /v1/jobs?tags=<marker>`
a few times within a bounded time: found -> the caller gets the job as if the POST had answered;
not found -> 409 naming the marker and the query the caller can use later. Never a 5xx: the
legacy SDKs retry POST on 5xx. Marker tags are stripped from every job the caller sees
(`classic/answers.py`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode

from .classic.answers import MARKER_PREFIX
from .classic.bodystream import OPAQUE, SpooledBody
from .config import Settings
from .errors import BadRequest, OutcomeUnknown

log = logging.getLogger("qiskit_classic_proxy")

#: The new API accepts at most this many tags per job; a full list gets no marker.
MAX_TAGS = 8
#: Seconds between look-ups (the last one repeats until the time is up).
BACKOFF = (0.0, 0.2, 0.5, 1.0, 2.0)
#: After an explicit 5xx the job rarely appears later: look for at most this long.
AFTER_5XX_SECONDS = 2.0

#: (query bytes) -> (status, body) of one GET /v1/jobs upstream.
Lookup = Callable[[bytes], Awaitable[tuple[int, bytes]]]


def mark(doc: dict[str, Any]) -> str | None:
    """Add a fresh marker tag to a submission body (in place); None when there is no room for it."""
    tags = doc.get("tags")
    if tags is None:
        tags = []
    if not isinstance(tags, list) or len(tags) >= MAX_TAGS:
        return None  # the new API refuses a bad or full list anyway; do not change its answer
    marker = MARKER_PREFIX + os.urandom(16).hex()  # 128 random bits, as uuid4().hex, without a UUID object
    doc["tags"] = [*tags, marker]
    return marker


def mark_spooled(doc: dict[str, Any], spooled: SpooledBody) -> str | None:
    """Mark a large submission: its `tags` were captured into `doc` and dropped while it streamed
    in (so the body is never held whole); they go back, with the marker, as its last member."""
    had = "tags" in doc
    if had and doc["tags"] is OPAQUE:  # over 4 KiB: far beyond the new API's 8 tags of 86 characters
        raise BadRequest("'tags' is too large for a job submission", code="invalid_tags")
    marker = mark(doc)
    if had or marker is not None:
        spooled.append_member("tags", doc["tags"])
    return marker


class Submissions:
    """Look-up of marked submissions whose outcome is unknown."""

    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.submission_marker
        self.window = settings.submission_recovery_seconds
        self.recovered = 0
        self.lost = 0
        #: Metrics hook, set by the app: called with "found" or "not_found".
        self.on_outcome: Callable[[str], None] | None = None

    async def find(self, lookup: Lookup, marker: str, backend: Any, *, after_5xx: bool = False) -> dict | None:
        """The job carrying `marker`, asking at most a few times within the recovery window."""
        window = min(self.window, AFTER_5XX_SECONDS) if after_5xx else self.window
        since = datetime.now(timezone.utc) - timedelta(hours=1)  # generous: the clocks may differ
        params = [("tags", marker), ("limit", "2"), ("exclude_params", "true")]
        params.append(("created_after", since.strftime("%Y-%m-%dT%H:%M:%SZ")))
        if isinstance(backend, str) and backend:
            params.append(("backend", backend))
        query = urlencode(params).encode()
        deadline = time.monotonic() + window
        for attempt in range(1000):  # bounded by the deadline; the range is a second guard
            await asyncio.sleep(BACKOFF[min(attempt, len(BACKOFF) - 1)])
            found = await self._ask(lookup, query, marker)
            if found is not None:
                self.recovered += 1
                if self.on_outcome is not None:
                    self.on_outcome("found")
                return found
            if time.monotonic() >= deadline:
                break
        self.lost += 1
        if self.on_outcome is not None:
            self.on_outcome("not_found")
        return None

    @staticmethod
    async def _ask(lookup: Lookup, query: bytes, marker: str) -> dict | None:
        try:
            status, data = await lookup(query)
        except Exception as exc:  # the new API may still be unreachable: ask again later
            log.info("submission look-up failed (%s); will retry", type(exc).__name__)
            return None
        if status != 200:
            return None
        try:
            jobs = json.loads(data).get("jobs")
        except (ValueError, AttributeError):
            return None
        mine = [j for j in jobs or [] if isinstance(j, dict) and marker in (j.get("tags") or ())]
        return mine[0] if mine and isinstance(mine[0].get("id"), str) else None


def created_answer(job: dict[str, Any]) -> dict[str, Any]:
    """What POST /v1/jobs would have answered for `job` (the fields it sends)."""
    out: dict[str, Any] = {"id": job["id"], "backend": job.get("backend")}
    for key in ("session_id", "private", "calibration_id"):
        if job.get(key) is not None:
            out[key] = job[key]
    return out


def not_found(request_id: str, marker: str, cause: str) -> OutcomeUnknown:
    """The 409 for a submission that could not be found again: how to look for it later."""
    lookup = f"GET /jobs?tags={marker}"
    return OutcomeUnknown(
        f"the new API may have created this job but gave no answer ({cause}), and it was not found "
        f"under its marker tag yet: look for it with {lookup} before resubmitting (request {request_id})",
        extra={"request_id": request_id, "marker": marker, "lookup": lookup},
    )
