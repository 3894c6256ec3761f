"""The barrier decision for a live plate read: one place, typed.

The camera server asks :meth:`Gate.decide` for every plate push and reads
parse, gate, record, reply. In order of precedence:

1. the rules no list overrides (:func:`~gateway.policy.decision.never_open`):
   an offline record (the car passed long ago) or a no-plate read never opens,
   whatever the lane's unknown-plate rule or the cloud would say. A read is a
   no-plate read when the camera says so or when its license is one of the
   no-plate spellings (:func:`~gateway.policy.plates.is_no_plate`, mis-decoded
   forms included); such a read is not sent to the cloud for a decision;
2. the local blacklist: a plate blacklisted for this lane is refused whatever
   the cloud says, unless the lane sets ``cloud_overrides_blacklist``;
3. the cloud, on lanes with ``ask_cloud``: its answer when it comes within
   the deadline, else a decision it allowed the gateway to reuse
   (``cache_until``), which no later local change of that plate outlives;
4. the local rule (the site's plate list, :class:`WhitelistPolicy`);
5. repeats: a second read of the same plate on the same lane within the
   duplicate window is recorded but does not pulse the barrier again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import Protocol

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from gateway.policy.decision import (
    BLACKLIST,
    DUPLICATE,
    NO_PLATE,
    Decision,
    GatePolicy,
    PlateQuery,
)
from gateway.policy.plates import is_no_plate
from gateway.policy.repeats import RepeatFilter, RepeatVerdict
from gateway.policy.whitelist import PlateListChange
from gateway.store import EventRecord

__all__ = ["CloudAnswer", "CloudSeam", "Gate", "GateLane", "GateVerdict", "PlateRead"]

log = Logger()


class CloudAnswer(Protocol):
    """What the cloud said about a read (or what it allowed to be reused)."""

    @property
    def display(self) -> tuple[str, ...]: ...

    @property
    def voice(self) -> str: ...

    def to_decision(self, plate: str) -> Decision: ...


class CloudSeam(Protocol):
    """The cloud as the gate sees it."""

    def decide(self, record: EventRecord, deadline: float) -> Awaitable[CloudAnswer | None]:
        """The cloud's answer by ``deadline`` (clock seconds), a cached one
        when it does not answer in time, or None."""

    def forget(self, plates: Iterable[str]) -> None:
        """The local list changed for these plates: no cached decision for
        them may be used any more."""


@attrs.frozen
class GateLane:
    """What the gate needs to know of a lane."""

    name: str
    ask_cloud: bool = False
    cloud_overrides_blacklist: bool = False


@attrs.frozen
class PlateRead:
    """One live plate read to decide. ``record`` builds the event as the
    cloud receives it, given the normalised plate (only built when asked)."""

    license: str
    has_plate: bool
    offline: bool
    camera: str
    lane: GateLane | None
    received_at: datetime
    record: Callable[[str], EventRecord]


@attrs.frozen
class GateVerdict:
    """The gate's decision for a read, and what the lane does with it.

    ``act`` is False for a repeat that must not pulse the barrier or the
    display again (``decision`` then says ``duplicate``). ``display`` and
    ``voice`` are what the cloud asked the lane's display to show and say.
    """

    decision: Decision
    act: bool
    repeat: bool = False
    display: tuple[str, ...] = ()
    voice: str = ""
    repeat_key: tuple[str, str, bool, float] | None = None
    repeat_verdict: RepeatVerdict | None = None


class Gate:
    """Decides live plate reads (see the module docstring for the order).

    ``local`` is the site's plate list rule; ``cloud`` the cloud seam (None:
    a standalone site); ``budget`` how long the cloud may take (seconds,
    within the camera's own timeout).
    """

    def __init__(
        self,
        *,
        clock: IReactorTime,
        local: GatePolicy,
        duplicate_window: float,
        cloud: CloudSeam | None = None,
        budget: float = 1.5,
    ) -> None:
        self._clock = clock
        self.local = local
        self.cloud = cloud
        self._budget = budget
        self.repeats = RepeatFilter(duplicate_window)

    def plate_list_changed(self, change: PlateListChange) -> None:
        """A local change outranks the cloud's cached decisions for its plates."""
        if self.cloud is not None and change:
            self.cloud.forget(change.plates)

    async def decide(self, read: PlateRead) -> GateVerdict:
        lane = read.lane
        # The camera's word is not enough: a mis-decoded "_无_" arrives as "_Œﬁ_".
        has_plate = read.has_plate and not is_no_plate(read.license)
        local = self.local.decide(
            PlateQuery(
                license=read.license,
                has_plate=has_plate,
                at=read.received_at,
                lane=lane.name if lane else None,
                offline=read.offline,
            )
        )
        if not has_plate and local.open:
            # No policy may open for a read without a plate.
            local = Decision(open=False, reason=NO_PLATE, source=local.source)
        decision = local
        display: tuple[str, ...] = ()
        voice = ""
        asks_cloud = (
            self.cloud is not None
            and lane is not None
            and lane.ask_cloud
            and has_plate
            and not read.offline
            and (local.reason != BLACKLIST or lane.cloud_overrides_blacklist)
        )
        if asks_cloud:
            answer = await self._ask_cloud(read, local)
            if answer is not None:
                decision = answer.to_decision(local.plate)
                display, voice = tuple(answer.display or ()), answer.voice or ""
        if read.offline or not has_plate:
            return GateVerdict(decision=decision, act=not read.offline)
        key = lane.name if lane else read.camera
        now = self._clock.seconds()
        verdict = self.repeats.judge(key, decision.plate, decision.open, now)
        remembered = (key, decision.plate, decision.open, now)
        if not verdict.act:
            # The car is still at the barrier from a moment ago: record the
            # read, do not pulse the barrier or the display again.
            decision = attrs.evolve(
                decision, open=False, reason=DUPLICATE, note=f"repeat of a {decision.reason} read"
            )
        return GateVerdict(
            decision=decision,
            act=verdict.act,
            repeat=verdict.repeat,
            display=display,
            voice=voice,
            repeat_key=remembered,
            repeat_verdict=verdict,
        )

    def kept(self, verdict: GateVerdict) -> None:
        """The read was kept (and is not a re-send of one kept before): only
        now does it count for repeats."""
        if verdict.repeat_key is not None and verdict.repeat_verdict is not None:
            lane, plate, opened, at = verdict.repeat_key
            self.repeats.remember(lane, plate, opened, at, verdict.repeat_verdict)

    async def _ask_cloud(self, read: PlateRead, local: Decision) -> CloudAnswer | None:
        assert self.cloud is not None
        try:
            # The reply must leave within the camera's own timeout (5 s by
            # default, as low as 1.1 s): [upstream] decision_timeout_seconds.
            return await self.cloud.decide(
                read.record(local.plate), self._clock.seconds() + self._budget
            )
        except Exception:
            log.failure("Asking the cloud for a decision failed; deciding locally")
            return None
