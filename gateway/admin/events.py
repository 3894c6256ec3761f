"""What happened: ``/api/events`` (search, newest first, paged),
``/api/events/{id}`` and its images. Viewers read them all."""

from __future__ import annotations

import re
from collections.abc import Callable

from twisted.web.iweb import IRequest

from gateway.admin.access import Access, authorized
from gateway.admin.auth import Principal
from gateway.admin.http import (
    ApiError,
    admin_app,
    arg,
    common_headers,
    int_arg,
    json_response,
    optional_int_arg,
    time_arg,
)
from gateway.admin.settings import VIEWER
from gateway.camera.recorder import event_summary
from gateway.store import (
    EVENT_OVERHEAD_BYTES,
    IMAGE_KINDS,
    EventRecord,
    EventType,
    Store,
    StoreError,
    is_valid_event_id,
)

__all__ = ["EventsResource", "event_id_ok", "open_store"]

DEFAULT_EVENT_LIMIT = 50
MAX_EVENT_LIMIT = 500
#: The most one page of ``/api/events`` holds, in bytes of raw records and
#: :data:`EVENT_OVERHEAD_BYTES` each (at least one event): a page ends
#: early past it, and ``next_before`` goes on from there.
MAX_PAGE_BYTES = 1_048_576
_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")


def event_id_ok(event_id: str) -> bool:
    """Whether ``event_id`` may be looked up: the contract's shape, whole
    string (a trailing newline included), and then the store's own."""
    return _ID_RE.fullmatch(event_id) is not None and is_valid_event_id(event_id)


def open_store(store: Callable[[], Store | None]) -> Store:
    """The open store, or a 503 while it opens."""
    opened = store()
    if opened is None:
        raise ApiError(503, "the event store is not open yet")
    return opened


def _fitting(records: list[EventRecord], max_bytes: int) -> list[EventRecord]:
    """The first of ``records`` that fit in ``max_bytes`` (at least one)."""
    used = 0
    page: list[EventRecord] = []
    for record in records:
        cost = record.raw_bytes + EVENT_OVERHEAD_BYTES
        if page and used + cost > max_bytes:
            break
        page.append(record)
        used += cost
    return page


class EventsResource:
    """The event log. ``store()`` is the open store or None (while it opens:
    answered 503)."""

    app = admin_app()

    def __init__(self, *, access: Access, store: Callable[[], Store | None]) -> None:
        self.access = access
        self._store = store

    @authorized(app, "/api/events", methods=["GET"], role=VIEWER)
    async def events(self, request: IRequest, who: Principal) -> bytes:
        limit = int_arg(request, "limit", DEFAULT_EVENT_LIMIT, 1, MAX_EVENT_LIMIT)
        before = optional_int_arg(request, "before", 1, 2**62)
        event_type = arg(request, "type") or None
        if event_type is not None and event_type not in {t.value for t in EventType}:
            known = ", ".join(t.value for t in EventType)
            raise ApiError(400, f"type must be one of {known}", errors={"type": f"one of {known}"})
        opened = arg(request, "open") or None
        if opened not in (None, "true", "false"):
            raise ApiError(400, "open must be true or false", errors={"open": "true or false"})
        store = open_store(self._store)
        try:
            records = await store.recent_events(
                limit + 1,
                before,
                plate=arg(request, "plate") or None,
                camera=arg(request, "camera") or None,
                lane=arg(request, "lane") or None,
                type=event_type,
                decision_open=None if opened is None else opened == "true",
                reason=arg(request, "reason") or None,
                since=time_arg(request, "since"),
                until=time_arg(request, "until"),
                max_bytes=MAX_PAGE_BYTES,
            )
        except StoreError as error:
            raise ApiError(503, f"the event store cannot answer: {error}") from None
        page = _fitting(records[:limit], MAX_PAGE_BYTES)
        more = len(records) > len(page)
        return json_response(
            request,
            {
                "events": [event_summary(record) for record in page],
                "next_before": page[-1].seq if more and page else None,
            },
        )

    @authorized(app, "/api/events/<event_id>", methods=["GET"], role=VIEWER)
    async def event(self, request: IRequest, who: Principal, event_id: str) -> bytes:
        if not event_id_ok(event_id):
            raise ApiError(404, "no such event")
        record = await open_store(self._store).get_event(event_id)
        if record is None:
            raise ApiError(404, "no such event")
        return json_response(request, event_summary(record))

    @authorized(app, "/api/events/<event_id>/image/<kind>", methods=["GET"], role=VIEWER)
    async def event_image(
        self, request: IRequest, who: Principal, event_id: str, kind: str
    ) -> bytes:
        # Only ids and kinds of the expected shape ever reach the store: no
        # path is built from anything else.
        if not event_id_ok(event_id) or kind not in IMAGE_KINDS:
            raise ApiError(404, "no such image")
        image = await open_store(self._store).read_image(event_id, kind)
        if image is None:
            raise ApiError(404, "no such image")
        common_headers(request)
        request.setHeader(b"Content-Type", b"image/jpeg")
        # An event's image never changes.
        request.setHeader(b"Cache-Control", b"private, max-age=86400, immutable")
        return image
