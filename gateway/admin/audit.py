"""The audit log: who did what through the admin page and API, when, and why
(``GET /api/audit``, admins only).

Every state-changing request of an :func:`~gateway.admin.access.authorized`
route that succeeds is recorded once its handler is done, before it is
answered: the principal (name, role, session or token), the action (the
route's handler name, such as ``open_barrier``), its target (the URL's parts,
or what the handler names with :func:`note`), and the ``reason`` field of a
JSON body when one was given. Signing in and out are recorded by the
session routes themselves. The log is in the store, bounded to the newest
:data:`AUDIT_KEPT` entries; an entry that cannot be written is logged as an
error and the action stands.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from gateway.admin.auth import Principal
from gateway.admin.http import MAX_JSON_BYTES, ApiError, header, json_response, optional_int_arg
from gateway.store import AuditRow, Store, StoreError

__all__ = ["AUDIT_KEPT", "MAX_REASON_CHARS", "AuditLog", "note", "reason_of"]

log = Logger()

#: The most audit entries kept (the oldest go first).
AUDIT_KEPT = 200_000
#: The longest reason kept (a longer one is refused with a 400).
MAX_REASON_CHARS = 500
_MAX_TARGET_CHARS = 200
_NOTE = "_anpr_audit_note"


@attrs.frozen
class _Note:
    target: str | None = None
    detail: Mapping[str, Any] = attrs.field(factory=dict)


def note(request: IRequest, *, target: str | None = None, **detail: Any) -> None:
    """Say what the audit entry of this request names: its ``target`` (a
    plate, a user) and small ``detail`` values."""
    setattr(request, _NOTE, _Note(target=target, detail=detail))


def reason_of(body: Mapping[str, object]) -> str:
    """The ``reason`` field of a request body: optional text, bounded."""
    reason = body.get("reason")
    if reason is None:
        return ""
    if not isinstance(reason, str):
        raise ApiError(400, "reason must be text", errors={"reason": "must be text"})
    reason = reason.strip()
    if len(reason) > MAX_REASON_CHARS:
        problem = f"must be at most {MAX_REASON_CHARS} characters"
        raise ApiError(400, f"reason {problem}", errors={"reason": problem})
    return reason


def _reason_in(request: IRequest) -> str:
    # The body was read (and checked) by the handler; it is read again here,
    # only when it is a small JSON object.
    content_type = (header(request, b"content-type") or "").split(";")[0].strip().lower()
    content = request.content
    if content_type != "application/json" or content is None:
        return ""
    content.seek(0)
    data = content.read(MAX_JSON_BYTES + 1)
    if len(data) > MAX_JSON_BYTES:
        return ""
    try:
        body = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return ""
    reason = body.get("reason") if isinstance(body, dict) else None
    return reason.strip()[:MAX_REASON_CHARS] if isinstance(reason, str) else ""


class AuditLog:
    """Writes audit entries to the store (``store()``: the open store or
    None) at the time of ``clock``."""

    def __init__(self, clock: IReactorTime, store: Callable[[], Store | None]) -> None:
        self._clock = clock
        self._store = store

    async def record(
        self,
        who: Principal,
        action: str,
        *,
        target: str = "",
        reason: str = "",
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Keep one entry; a failure to write it is logged, never raised."""
        entry = AuditRow(
            at=self._clock.seconds(),
            who=who.name,
            role=who.role,
            via=who.via,
            action=action,
            target=target[:_MAX_TARGET_CHARS],
            reason=reason[:MAX_REASON_CHARS],
            detail=dict(detail or {}),
        )
        log.info(
            "Audit: {who} ({role}) {action} {target}",
            who=entry.who,
            role=entry.role,
            action=entry.action,
            target=entry.target or "-",
        )
        store = self._store()
        if store is None:
            log.error(
                "The audit entry for {action} was not kept: the store is not open", action=action
            )
            return
        try:
            await store.add_audit(entry, AUDIT_KEPT)
        except StoreError as error:
            log.error(
                "The audit entry for {action} was not kept: {reason}",
                action=action,
                reason=str(error),
            )

    def after(
        self,
        request: IRequest,
        who: Principal,
        action: str,
        parts: Mapping[str, object],
        result: object,
    ) -> Deferred[object]:
        """``result`` (a handler's answer, or what it awaits), once the
        action it answers is in the log (when it succeeded)."""

        async def finish() -> object:
            value = await result if inspect.isawaitable(result) else result
            if int(getattr(request, "code", 200) or 200) < 400:
                noted = getattr(request, _NOTE, None) or _Note()
                target = noted.target
                if target is None:
                    target = "/".join(str(part) for part in parts.values())
                await self.record(
                    who, action, target=target, reason=_reason_in(request), detail=noted.detail
                )
            return value

        return Deferred.fromCoroutine(finish())

    def to_json(self, entry: AuditRow) -> dict[str, object]:
        return {
            "seq": entry.seq,
            "at": datetime.fromtimestamp(entry.at, tz=timezone.utc).isoformat(),
            "who": entry.who,
            "role": entry.role,
            "via": entry.via,
            "action": entry.action,
            "target": entry.target,
            "reason": entry.reason,
            "detail": dict(entry.detail),
        }

    async def page(self, request: IRequest) -> bytes:
        """``GET /api/audit``: newest first, ``limit`` at a time, older than
        ``before`` (the ``next_before`` of the previous page)."""
        limit = optional_int_arg(request, "limit", 1, 500) or 100
        before = optional_int_arg(request, "before", 1, 2**62)
        store = self._store()
        if store is None:
            raise ApiError(503, "the store is opening; try again in a moment")
        entries = await store.audit_entries(before, limit)
        return json_response(
            request,
            {
                "entries": [self.to_json(entry) for entry in entries],
                "next_before": entries[-1].seq if len(entries) == limit else None,
            },
        )
