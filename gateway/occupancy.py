"""The site's occupancy as a service: parking sessions from the kept events.

:class:`Occupancy` reads the events the store keeps, as they are published on
the bus (and, at start, those it has not seen yet from its own cursor over the
events table), and pairs the passages per plate into parking sessions
(:mod:`gateway.policy.occupancy`). The work on the reactor is a dictionary
lookup per plate read; the sessions, the cursor and the operator's corrections
are written to the store together, at most every ``flush_seconds``, so a plate
read costs no transaction of its own. A restart reads the open sessions back
and goes on from the cursor: nothing is lost or counted twice.

An operator's correction ("there are N cars inside") is an ``occupancy``
event of its own (kept, sent upstream like every event); the consumer applies
it when it reads it, so a correction is replayed like a passage.
"""

from __future__ import annotations

import json
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from gateway.bus import EventBus
from gateway.policy.occupancy import (
    SITE,
    Count,
    OccupancyBook,
    ParkingSession,
    Scope,
)
from gateway.site import Lanes, OccupancySettings
from gateway.store import (
    EventRecord,
    EventType,
    Store,
    StoreClosedError,
    StoreError,
    new_event_id,
)
from gateway.timers import Every

__all__ = ["CONSUMER", "Occupancy", "UnknownArea", "correction_record"]

log = Logger()

#: Events that let a car through when their barrier opened: a camera's read,
#: and what an operator did for a car.
_PASSAGE_TYPES = frozenset(
    kind.value
    for kind in (
        EventType.PLATE,
        EventType.OPERATOR_OPEN,
        EventType.PLATE_CORRECTION,
        EventType.MANUAL_ENTRY,
    )
)

#: The occupancy's cursor over the events table.
CONSUMER = "occupancy"
_OFFSETS_KEY = "occupancy:corrections"
#: Events read per page while catching up at start.
CATCH_UP_PAGE = 500
#: Session changes waiting for the store beyond which the oldest are dropped
#: (the store is failing; the counts in memory stay right).
MAX_PENDING = 50_000
#: Reads answered by an operator's passage remembered, so that a second
#: answer to one read (an open, then a correction) is not a second car.
MAX_ANSWERED = 10_000
#: The most cars an operator may say are inside.
MAX_CORRECTION = 1_000_000


class UnknownArea(LookupError):
    """No such area is configured."""


def correction_record(
    *, area: str, inside: int, previous: int, who: str, role: str, reason: str, at: datetime
) -> EventRecord:
    """The event of an operator's correction: ``inside`` cars in ``area``
    (``""``: the site), counted ``previous`` before."""
    return EventRecord(
        id=new_event_id("occupancy"),
        type=EventType.OCCUPANCY,
        received_at=at,
        camera=None,
        lane=None,
        raw={
            "area": area or None,
            "inside": inside,
            "previous": previous,
            "operator": who,
            "role": role,
            "reason": reason,
        },
    )


class Occupancy(MultiService):
    """Cars inside the site and its areas, from the kept events.

    ``open_store()`` fires with the store once it is open; ``keep(record)``
    keeps an event the gateway makes itself (the recorder's). Listeners
    given to :meth:`on_change` are told after the counts changed.
    """

    def __init__(
        self,
        *,
        clock: IReactorTime,
        settings: OccupancySettings,
        lanes: Lanes,
        bus: EventBus,
        open_store: Callable[[], Deferred[Store]],
        keep: Callable[[EventRecord], Awaitable[None]],
        flush_seconds: float = 1.0,
        expire_seconds: float = 3600.0,
    ) -> None:
        super().__init__()
        self.setName("occupancy")
        self._clock = clock
        self._settings = settings
        self._lanes = lanes
        self._bus = bus
        self._open_store = open_store
        self._keep = keep
        self._flush_seconds = flush_seconds
        every = frozenset(lane.name.casefold() for lane in lanes)
        site_lanes = (
            frozenset(name.casefold() for name in settings.lanes)
            if settings.lanes is not None
            else every
        )
        scopes = [Scope(SITE, settings.capacity, site_lanes)]
        scopes += [
            Scope(area.name, area.capacity, frozenset(name.casefold() for name in area.lanes))
            for area in settings.areas
        ]
        self.book = OccupancyBook(
            scopes,
            max_inside=settings.max_inside,
            max_stay=timedelta(days=settings.max_stay_days),
        )
        self.loaded = False
        self._cursor = 0
        # The reads the booth let a car through for, lately (one car each).
        self._answered: OrderedDict[str, None] = OrderedDict()
        self._pending: deque[ParkingSession] = deque()
        self._flush_timer: IDelayedCall | None = None
        self._flushing: Deferred[None] | None = None
        self._listeners: list[Callable[[], None]] = []
        self._unsubscribe: Callable[[], None] | None = None
        self._store: Store | None = None
        self._failing = False
        self._dropped = 0
        self._drop_logged = False
        Every(clock, expire_seconds, self.expire, name="occupancy-expiry").setServiceParent(self)

    # -- service ------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._unsubscribe = self._bus.subscribe(self._published)
        Deferred.fromCoroutine(self._load()).addErrback(
            lambda failure: log.failure("Reading the parking sessions back failed", failure)
        )

    def stopService(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        await super().stopService()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._flush_timer is not None and self._flush_timer.active():
            self._flush_timer.cancel()
        self._flush_timer = None
        if self._flushing is not None:
            await self._flushing
        if self.loaded:
            await self._flush()

    async def _load(self) -> None:
        store = await self._open_store()
        self._store = store
        cursor, offsets_json, inside = await store.occupancy_state(CONSUMER, _OFFSETS_KEY)
        offsets: dict[str, int] = {}
        if offsets_json:
            try:
                loaded = json.loads(offsets_json)
                if isinstance(loaded, dict):
                    offsets = {str(k): int(v) for k, v in loaded.items()}
            except (ValueError, TypeError):
                log.warn("The kept occupancy corrections could not be read; starting from none")
        self.book.load(inside, offsets)
        self._cursor = cursor
        # What was kept since the cursor (the last moments before a stop):
        # page by page, until nothing is left; live events wait meanwhile.
        while True:
            page = await store.events_after(self._cursor, CATCH_UP_PAGE)
            for record in page:
                self._apply(
                    seq=record.seq or 0,
                    type=record.type.value,
                    event_id=record.id,
                    lane=record.lane,
                    plate=record.plate,
                    opened=record.decision_open,
                    offline=record.offline,
                    at=record.received_at,
                    raw=record.raw,
                    answers=record.answers,
                )
            if len(page) < CATCH_UP_PAGE:
                break
        self.loaded = True
        # The cursor is kept from the first write on (a new one starts at the
        # newest event: it is not handed the site's history).
        self._schedule_flush()
        log.info(
            "Occupancy: {inside} cars inside the site ({sessions} open sessions read back)",
            inside=self.book.count().inside,
            sessions=len(inside),
        )
        self._changed()

    # -- events -------------------------------------------------------------------

    def _published(self, topic: str, payload: Mapping[str, Any]) -> None:
        if topic != "event" or not self.loaded:
            return
        seq = payload.get("seq")
        if not isinstance(seq, int) or seq <= self._cursor:
            return  # read while catching up
        decision = payload.get("decision")
        received = payload.get("received_at")
        try:
            at = datetime.fromisoformat(received) if isinstance(received, str) else self._now()
        except ValueError:
            at = self._now()
        raw = payload.get("raw")
        changed = self._apply(
            seq=seq,
            type=str(payload.get("type")),
            event_id=str(payload.get("id")),
            lane=payload.get("lane") if isinstance(payload.get("lane"), str) else None,
            plate=str(payload.get("plate") or ""),
            opened=decision.get("open") if isinstance(decision, Mapping) else None,
            offline=bool(payload.get("offline")),
            at=at,
            raw=raw if isinstance(raw, Mapping) else {},
            answers=payload.get("answers") if isinstance(payload.get("answers"), str) else None,
        )
        if changed:
            self._changed()

    def _apply(
        self,
        *,
        seq: int,
        type: str,
        event_id: str,
        lane: str | None,
        plate: str,
        opened: bool | None,
        offline: bool,
        at: datetime,
        raw: Mapping[str, Any],
        answers: str | None = None,
    ) -> bool:
        """Apply one kept event; whether the counts changed."""
        self._cursor = max(self._cursor, seq)
        changed = False
        if type in _PASSAGE_TYPES:
            settings = self._lanes.named(lane) if lane else None
            # A passage: the barrier opened for a live read with a plate, or
            # an operator let a car through (an open for a refused read, a
            # corrected plate decided again, a manual entry). An offline
            # record is not one (the gateway cannot tell whether the camera
            # let that car through). A read the booth answered twice (opened
            # for, then corrected) is one car.
            passed = settings is not None and opened is True and not offline and bool(plate)
            if passed and answers is not None:
                passed = answers not in self._answered
                self._answered[answers] = None
                while len(self._answered) > MAX_ANSWERED:
                    self._answered.popitem(last=False)
            if passed and settings is not None:
                written = self.book.passage(
                    plate=plate,
                    lane=settings.name,
                    direction=settings.direction,
                    at=at,
                    event_id=event_id,
                )
                self._queue(written)
                changed = bool(written)
        elif type == EventType.OCCUPANCY.value:
            area = raw.get("area") or SITE
            inside = raw.get("inside")
            if isinstance(area, str) and area in self.book.scopes and isinstance(inside, int):
                self.book.correct(area, inside)
                changed = True
        self._schedule_flush()
        return changed

    def expire(self) -> None:
        """Flag the entries older than the longest stay (hourly)."""
        if not self.loaded:
            return
        written = self.book.expire(self._now())
        if written:
            log.info(
                "Occupancy: {count} entries stayed longer than {days} days without an exit; "
                "flagged as never closed",
                count=len(written),
                days=self._settings.max_stay_days,
            )
            self._queue(written)
            self._schedule_flush()
            self._changed()

    # -- the operator's correction ----------------------------------------------

    async def correct(self, area: str, inside: int, *, who: str, role: str, reason: str) -> Count:
        """Record that ``inside`` cars are in ``area`` (``""``: the site) now,
        as an event; the count as it is then. Raises :class:`UnknownArea`,
        or the recorder's ``EventNotKept``."""
        if area not in self.book.scopes:
            raise UnknownArea(area)
        previous = self.book.count(area).inside
        await self._keep(
            correction_record(
                area=area,
                inside=inside,
                previous=previous,
                who=who,
                role=role,
                reason=reason,
                at=self._now(),
            )
        )
        # Kept and published: the consumer applied it (or reads it back
        # while it is still loading).
        return self.book.count(area)

    # -- reading ------------------------------------------------------------------

    def counts(self) -> list[Count]:
        """The site first, then each area."""
        return self.book.counts()

    def lane_free(self, lane: str) -> int | None:
        """The free spaces a lane's display shows: those of the first area
        with a capacity that counts the lane, else the site's; None when no
        capacity is known."""
        for name in self.book.scopes_of(lane):
            if name != SITE:
                count = self.book.count(name)
                if count.capacity is not None:
                    return count.free
        return self.book.count(SITE).free

    def to_json(self) -> dict[str, Any]:
        """``GET /api/occupancy``: the site's numbers, and each area's."""
        site = self.book.count(SITE)
        return {
            **site.to_json(),
            "loaded": self.loaded,
            "areas": [
                {"name": count.area, **count.to_json()} for count in self.book.counts()[1:]
            ],
        }

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after the counts changed."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        self._bus.publish("occupancy", self.to_json())
        for listener in list(self._listeners):
            try:
                listener()
            except Exception:
                log.failure("An occupancy listener failed")

    # -- the store ------------------------------------------------------------------

    def _queue(self, written: list[ParkingSession]) -> None:
        self._pending.extend(written)
        if len(self._pending) > MAX_PENDING:
            dropped = len(self._pending) - MAX_PENDING
            for _ in range(dropped):
                self._pending.popleft()
            self._dropped += dropped
            if not self._drop_logged:
                # Said once until a write succeeds again (with the total then).
                self._drop_logged = True
                log.error(
                    "Occupancy: parking session changes are being dropped (the store keeps "
                    "failing); the counts stay right in memory"
                )

    def _schedule_flush(self) -> None:
        if self._flush_timer is None or not self._flush_timer.active():
            self._flush_timer = self._clock.callLater(self._flush_seconds, self._flush_later)

    def _flush_later(self) -> None:
        self._flush_timer = None
        if self._flushing is not None:
            self._schedule_flush()
            return
        self._flushing = Deferred.fromCoroutine(self._flush())
        self._flushing.addBoth(self._flushed)

    def _flushed(self, result: object) -> None:
        self._flushing = None
        if self._pending:
            self._schedule_flush()

    async def _flush(self) -> None:
        store = self._store
        if store is None:
            return
        sessions, self._pending = list(self._pending), deque()
        try:
            await store.save_parking_sessions(
                sessions,
                consumer=CONSUMER,
                cursor=self._cursor,
                offsets_key=_OFFSETS_KEY,
                offsets=json.dumps(self.book.offsets()),
            )
        except StoreClosedError:
            # Stopping: the cursor stays where it was written last, so the
            # next start reads these passages again from the kept events.
            log.info(
                "Occupancy: the store closed first; the last passages are read again at start"
            )
            return
        except StoreError as error:
            self._pending.extendleft(reversed(sessions))
            if not self._failing:
                log.error(
                    "Occupancy: the parking sessions could not be kept ({reason}); retrying",
                    reason=str(error),
                )
            self._failing = True
            return
        if self._dropped:
            log.warn(
                "Occupancy: the store writes again; {dropped} parking session changes were lost",
                dropped=self._dropped,
            )
            self._dropped = 0
        self._drop_logged = False
        self._failing = False

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.seconds(), tz=timezone.utc)
