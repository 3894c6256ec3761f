"""Synchronous decisions from the cloud, within the camera's patience, and
the decisions the cloud allowed the gateway to reuse while it cannot ask."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from gateway.policy.decision import CLOUD, Decision
from gateway.policy.plates import normalise_plate
from gateway.store import (
    CachedCloudDecision,
    EventRecord,
    Store,
    StoreClosedError,
    StoreError,
    StoreService,
)
from gateway.upstream.events import decide_body, event_json, parse_time
from gateway.upstream.http import UpstreamClient, Verdict
from gateway.upstream.link import Link, LinkFailure, LinkState
from gateway.upstream.settings import UpstreamSettings

__all__ = ["CloudDecider", "CloudDecision", "CloudGate", "parse_decision"]

log = Logger()

# Below this many seconds left before the deadline the cloud is not asked:
# no answer could arrive in time.
MIN_BUDGET = 0.05
MAX_REASON = 64
MAX_LINES = 8
MAX_LINE = 128
MAX_VOICE = 512
DECISION_BODY_LIMIT = 64 * 1024


def _lines(values: Any) -> tuple[str, ...]:
    return tuple(values)


@attrs.frozen
class CloudDecision:
    """The cloud's answer for one plate read.

    ``display`` are the lines for the lane's display, ``voice`` the text for
    its voice board (empty: say nothing). ``cache_until`` says the decision
    may be reused for this plate on this lane until then, when the cloud
    cannot be asked. ``cached`` is True for a decision served from that cache.
    """

    open: bool
    reason: str = "cloud"
    display: tuple[str, ...] = attrs.field(default=(), converter=_lines)
    voice: str = ""
    cache_until: datetime | None = None
    cached: bool = False

    def to_decision(self, plate: str) -> Decision:
        """As the gate policy's :class:`Decision` (source ``cloud``), for the event."""
        return Decision(
            open=self.open,
            reason=self.reason,
            source=CLOUD,
            plate=plate,
            note="cached cloud decision" if self.cached else "",
        )


def parse_decision(body: bytes) -> CloudDecision:
    """The cloud's ``/decide`` answer. Raises ``ValueError`` with the reason."""
    try:
        answer = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("the answer is not JSON") from None
    if not isinstance(answer, dict):
        raise ValueError("the answer is not a JSON object")
    opened = answer.get("open")
    if not isinstance(opened, bool):
        raise ValueError('"open" must be true or false')
    reason = answer.get("reason")
    if reason is None or reason == "":
        reason = "cloud"
    if not isinstance(reason, str):
        raise ValueError('"reason" must be a string')
    display = answer.get("display")
    if display is None:
        display = []
    if not isinstance(display, list) or not all(isinstance(line, str) for line in display):
        raise ValueError('"display" must be a list of strings')
    if len(display) > MAX_LINES:
        raise ValueError(f'"display" has more than {MAX_LINES} lines')
    voice = answer.get("voice")
    if voice is None:
        voice = ""
    if not isinstance(voice, str):
        raise ValueError('"voice" must be a string')
    cache_until = parse_time(answer.get("cache_until"), '"cache_until"')
    return CloudDecision(
        open=opened,
        reason=reason[:MAX_REASON],
        display=tuple(line[:MAX_LINE] for line in display),
        voice=voice[:MAX_VOICE],
        cache_until=cache_until.astimezone(timezone.utc) if cache_until else None,
    )


def _key(plate: str | None, lane: str | None) -> tuple[str, str]:
    return normalise_plate(plate or ""), lane or ""


class CloudDecider(Service):
    """Asks the cloud about a live plate read, within a deadline.

    Use :meth:`decide` for a plate on a lane that asks the cloud; it returns
    the cloud's decision, or the cached one when the cloud does not answer
    in time, or None (the local policy decides). :meth:`cached` gives the
    cached decision alone, from memory.
    """

    def __init__(
        self,
        *,
        store: StoreService,
        client: UpstreamClient,
        clock: IReactorTime,
        config: UpstreamSettings,
        link: Link,
    ) -> None:
        self.setName("upstream-decisions")
        self._store_service = store
        self._client = client
        self._clock = clock
        self._config = config
        self._link = link
        self._cache: dict[tuple[str, str], CloudDecision] = {}
        self._loading: Deferred[None] | None = None
        self._writes: set[Deferred[None]] = set()
        self._answering = True  # whether the last ask got a usable answer (logged on change)
        self.asked = 0
        self.answered = 0

    # -- service --------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._loading = Deferred.fromCoroutine(self._load())
        self._loading.addErrback(self._load_failed)

    def _load_failed(self, failure: Failure) -> None:
        if failure.check(StoreClosedError):
            return  # stopped before the store opened: nothing to load
        log.failure("Cached cloud decisions could not be loaded", failure)

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        waiting: list[Deferred[Any]] = list(self._writes)
        if self._loading is not None:
            waiting.append(self._loading)
        return DeferredList(waiting, consumeErrors=True)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.seconds(), tz=timezone.utc)

    async def _load(self) -> None:
        store = await self._store_service.when_open()
        now = self._now()
        try:
            await store.expire_cloud_decisions(now)
            rows = await store.cloud_decisions(now)
        except StoreError as error:
            log.warn("Cached cloud decisions could not be read: {reason}", reason=str(error))
            return
        for row in rows:
            # A decision taken while loading is newer than the stored one.
            self._cache.setdefault(
                (row.plate, row.lane),
                CloudDecision(
                    open=row.open,
                    reason=row.reason,
                    display=row.display,
                    voice=row.voice,
                    cache_until=row.cache_until,
                ),
            )
        if rows:
            log.info("Loaded {count} cached cloud decisions", count=len(rows))

    # -- decisions ------------------------------------------------------------

    def cached(
        self, plate: str, lane: str | None, now: datetime | None = None
    ) -> CloudDecision | None:
        """The cloud's cached decision for ``plate`` (normalised) on ``lane``,
        if it is still valid at ``now`` (default: the clock)."""
        key = _key(plate, lane)
        decision = self._cache.get(key)
        if decision is None:
            return None
        when = now if now is not None else self._now()
        if decision.cache_until is None or decision.cache_until <= when:
            del self._cache[key]
            return None
        return attrs.evolve(decision, cached=True)

    async def decide(
        self, event: Mapping[str, Any], deadline: float | None = None
    ) -> CloudDecision | None:
        """Ask the cloud about the plate event ``event`` (the JSON of
        :func:`gateway.upstream.events.event_json`, decision still empty).

        Returns by ``deadline`` (clock seconds; default now +
        ``decision_timeout_seconds``, and never later than that): the cloud's
        answer when it came in time, else the cached decision for the plate
        and lane, else None. The request is cancelled when time runs out.
        """
        now = self._clock.seconds()
        budget = self._config.decision_timeout_seconds
        if deadline is not None:
            budget = min(budget, deadline - now)
        plate, lane = _key(event.get("plate") or event.get("license"), event.get("lane"))
        if budget < MIN_BUDGET or self._link.state is LinkState.DOWN:
            return self.cached(plate, lane)
        self.asked += 1
        try:
            response = await self._client.request(
                "POST",
                "/decide",
                body=decide_body(self._config.gateway_id, event),
                timeout=budget,
                body_limit=DECISION_BODY_LIMIT,
            )
        except LinkFailure as failure:
            self._not_answered(failure.reason)
            return self.cached(plate, lane)
        if response.verdict is not Verdict.ACCEPTED:
            self._not_answered(f"HTTP {response.status}")
            return self.cached(plate, lane)
        try:
            decision = parse_decision(response.body)
        except ValueError as error:
            self._not_answered(f"unusable answer: {error}")
            return self.cached(plate, lane)
        self.answered += 1
        if not self._answering:
            self._answering = True
            log.info("The cloud answers decisions again")
        self._link.proven()
        self._remember(plate, lane, decision)
        return decision

    def _not_answered(self, reason: str) -> None:
        if self._answering:
            self._answering = False
            log.warn(
                "The cloud did not decide in time ({reason}); cached cloud decisions, "
                "then the local plate list, decide until it does",
                reason=reason,
            )

    def _remember(self, plate: str, lane: str, decision: CloudDecision) -> None:
        if not plate:
            return
        key = (plate, lane)
        now = self._now()
        if decision.cache_until is not None and decision.cache_until > now:
            self._cache[key] = decision
            row = CachedCloudDecision(
                plate=plate,
                lane=lane,
                open=decision.open,
                reason=decision.reason,
                display=decision.display,
                voice=decision.voice,
                cache_until=decision.cache_until,
                decided_at=now,
            )
            self._store_later(lambda store: store.put_cloud_decision(row))
        elif self._cache.pop(key, None) is not None:
            # The cloud decided anew without allowing reuse: the old permission ends.
            self._store_later(lambda store: store.delete_cloud_decision(plate, lane))

    def _store_later(self, write: Any) -> None:
        # Not awaited: the answer must not wait for the disk. Stopping waits
        # for these writes.
        store = self._store_service.store
        if store is None:
            return

        async def run(store: Store) -> None:
            try:
                await write(store)
            except StoreError as error:
                log.warn("A cached cloud decision was not stored: {reason}", reason=str(error))

        done = Deferred.fromCoroutine(run(store))
        if not done.called:
            self._writes.add(done)
            done.addBoth(lambda result: self._writes.discard(done))

    def forget(self, plates: Iterable[str]) -> None:
        """The local list changed for ``plates``: their cached decisions (on
        every lane) end now, in memory at once and in the store soon after."""
        gone = {normalise_plate(plate) for plate in plates}
        if not gone:
            return
        # A multi-region read ("粤ZJ068澳|MX7742|ZM127") was decided on any of
        # its regions: a change of one of them ends its cached decision too.
        stale = [
            key
            for key in self._cache
            if key[0] in gone or ("|" in key[0] and not gone.isdisjoint(key[0].split("|")))
        ]
        for key in stale:
            del self._cache[key]
        plates_list = sorted(gone | {key[0] for key in stale})
        self._store_later(lambda store: store.forget_cloud_decisions(plates_list))

    async def expire(self) -> int:
        """Forget cached decisions that are no longer valid (memory and store)."""
        now = self._now()
        for key, decision in list(self._cache.items()):
            if decision.cache_until is None or decision.cache_until <= now:
                del self._cache[key]
        store = self._store_service.store
        if store is None:
            return 0
        return await store.expire_cloud_decisions(now)

    def __len__(self) -> int:
        return len(self._cache)


@attrs.frozen
class CloudGate:
    """The cloud as the gate asks it (:class:`gateway.gate.CloudSeam`)."""

    decider: CloudDecider

    async def decide(self, record: EventRecord, deadline: float) -> CloudDecision | None:
        return await self.decider.decide(event_json(record), deadline=deadline)

    def forget(self, plates: Iterable[str]) -> None:
        self.decider.forget(plates)
