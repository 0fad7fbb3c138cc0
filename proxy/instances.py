"""Which new-API instance (Service-CRN) a Classic call goes to, and what the proxy learnt about it.

Classic named an instance as hub/group/project (`?provider=h/g/p`, or in the body); the new API
wants a CRN. Follow-up calls (a job's results, a session's close) name no instance: the memory
of which instance a job or session lives in sends them to the right one. With a shared database
(`store.py`) that memory is shared by every process: what one replica learnt, the others recall.
"""

from __future__ import annotations

from typing import Any

from cachetools import TTLCache

from .call import Call
from .classic.rewrite import query_values
from .config import Settings
from .errors import Forbidden, NotFound
from .store import Store


class InstanceMemory:
    """The configured instances and the job/session id -> instance name memory (a week, 200k ids)."""

    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.default = settings.default_instance
        self.store = store
        self._unshared: list[tuple[str, str]] = []
        self.crns: dict[str, str] = settings.instance_crns  # legacy name -> CRN
        self.by_crn = {crn: name for name, crn in reversed(self.crns.items())}
        self._of: TTLCache[str, str] = TTLCache(maxsize=200_000, ttl=7 * 24 * 3600)

    @property
    def several(self) -> bool:
        """More than one instance: the memory and the multi-instance fallbacks matter."""
        return len(self.crns) > 1

    def get(self, ref: str) -> str | None:
        return self._of.get(ref)

    def put(self, ref: str, name: str) -> None:
        if self._of.get(ref) != name:
            self._of[ref] = name
            if self.store is not None and ref:
                self._unshared.append((ref, name))

    async def recall(self, call: Call) -> None:
        """Before `select`: a job/session id this process has not seen may be known to another."""
        if self.store is None or len(self.crns) < 2:
            return
        ref = call.params.get("job_id") or call.params.get("session_id")
        if ref and ref not in self._of:
            name = await self.store.instance_of(ref)
            if name in self.crns:
                self._of[ref] = name

    async def share(self) -> None:
        """Write what `put` learnt before the answer goes out, so the next call may hit any replica.

        Called even when this call's pairs were taken by a concurrent `share`: the store then
        returns only once that write is done (or queued, when the database is away).
        """
        if self.store is not None:
            pairs, self._unshared = self._unshared, []
            await self.store.remember(pairs)

    def __len__(self) -> int:
        return len(self.crns)

    def select(self, call: Call, doc: dict[str, Any] | None) -> None:
        """Legacy calls name their instance (provider=h/g/p, body hub/group/project, instance).

        IBM Cloud callers name it by `Service-CRN`: honoured when configured, else 403, never
        silently replaced by the default.
        """
        caller_crn = call.headers.get("service-crn", "").strip()
        if caller_crn:
            known = self.by_crn.get(caller_crn)
            if known is None:
                raise Forbidden(
                    f"Service-CRN {caller_crn!r} is not one of this proxy's instances "
                    f"({', '.join(self.crns) or 'none'}): configure it under [instances] or use a configured CRN",
                    code="unknown_instance_crn",
                )
            call.instance, call.crn, call.instance_explicit = known, caller_crn, True
            return
        name: str | None = None
        if b"provider" in call.query:
            values = query_values(call.query, "provider")
            name = values[0] if values else None
        if not name and all(k in call.params for k in ("hub", "group", "project")):  # ibmq-provider paths
            name = "/".join(call.params[k] for k in ("hub", "group", "project"))
        if doc is not None:
            if all(isinstance(doc.get(k), str) for k in ("hub", "group", "project")):
                name = f"{doc['hub']}/{doc['group']}/{doc['project']}"
            elif isinstance(doc.get("instance"), str):
                name = doc["instance"]
        call.instance_explicit = bool(name)
        if not name and len(self.crns) > 1:
            ref = call.params.get("job_id") or call.params.get("session_id")
            name = self._of.get(ref) if ref else None
            call.instance_explicit = bool(name)
        if not name:
            name = self.default
        crn = self.crns.get(name)
        if crn is None and name in self.by_crn:
            crn, name = name, self.by_crn[name]
        if crn is None:
            raise NotFound(
                f"unknown instance {name!r}: configure it under [instances] (hub/group/project = CRN)",
                code="unknown_instance",
            )
        call.instance, call.crn = name, crn
