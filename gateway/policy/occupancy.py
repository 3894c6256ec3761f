"""Parking sessions and occupancy: entry and exit reads paired per plate.

A *passage* is a plate read on a lane that let the car through (the barrier
opened for it). On an entry lane it opens a session for the plate in every
*scope* the lane counts for (the site, ``""``, and the lane's area); on an
exit lane it closes the plate's open session there. Nothing is invented:

* an exit with no open entry is kept as a session of its own, flagged
  ``no_entry`` (entered unknown);
* an entry that is never closed is flagged ``not_closed``: when the same
  plate enters again, when it stayed longer than the longest stay, or when
  the most cars the book holds is reached (the oldest goes).

Live occupancy is the cars inside a scope plus the operator's correction
(an offset set by "there are N cars inside now"), never below zero; free
is the capacity less that, never below zero. Pure: no Twisted, no I/O.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta

import attrs

__all__ = [
    "SITE",
    "Count",
    "OccupancyBook",
    "ParkingSession",
    "Scope",
    "SessionState",
]

#: The scope of the whole site.
SITE = ""


class SessionState(str, enum.Enum):
    """Where a parking session stands."""

    INSIDE = "inside"  # entered, not left yet
    CLOSED = "closed"  # entered and left
    NO_ENTRY = "no_entry"  # left, with no entry seen (flagged)
    NOT_CLOSED = "not_closed"  # entered, its exit never seen (flagged)


@attrs.frozen
class ParkingSession:
    """One car's stay in one scope (``area``: ``""`` for the site).

    ``key`` is stable: the passage's event id and the scope. Times are
    timezone-aware; a flagged session leaves the unknown side None.
    """

    key: str
    plate: str
    area: str
    state: SessionState
    entered_at: datetime | None = None
    entry_lane: str | None = None
    entry_event: str | None = None
    left_at: datetime | None = None
    exit_lane: str | None = None
    exit_event: str | None = None

    @property
    def duration_seconds(self) -> float | None:
        if self.entered_at is None or self.left_at is None:
            return None
        return max(0.0, (self.left_at - self.entered_at).total_seconds())

    def to_json(self) -> dict[str, object]:
        return {
            "key": self.key,
            "plate": self.plate,
            "area": self.area or None,
            "state": self.state.value,
            "flagged": self.state in (SessionState.NO_ENTRY, SessionState.NOT_CLOSED),
            "entered_at": self.entered_at.isoformat() if self.entered_at else None,
            "entry_lane": self.entry_lane,
            "entry_event": self.entry_event,
            "left_at": self.left_at.isoformat() if self.left_at else None,
            "exit_lane": self.exit_lane,
            "exit_event": self.exit_event,
            "duration_seconds": self.duration_seconds,
        }


@attrs.frozen
class Scope:
    """The site (``name`` ``""``) or an area: its spaces (None: not known)
    and the lanes whose passages count for it."""

    name: str
    capacity: int | None
    lanes: frozenset[str]  # casefolded lane names


@attrs.frozen
class Count:
    """A scope's occupancy now."""

    area: str
    capacity: int | None
    inside: int
    tracked: int  # open sessions (cars seen entering and not leaving)
    correction: int  # the operator's offset

    @property
    def free(self) -> int | None:
        if self.capacity is None:
            return None
        return max(0, self.capacity - self.inside)

    def to_json(self) -> dict[str, object]:
        return {
            "capacity": self.capacity,
            "inside": self.inside,
            "free": self.free,
            "tracked": self.tracked,
            "correction": self.correction,
        }


@attrs.define
class _ScopeState:
    scope: Scope
    inside: OrderedDict[str, ParkingSession] = attrs.Factory(OrderedDict)
    offset: int = 0


class OccupancyBook:
    """The open sessions of every scope, in memory, bounded.

    ``max_inside`` bounds the open sessions of each scope; ``max_stay``
    is how long an entry may stay open before it is flagged ``not_closed``.
    Each change returns the sessions written (new or changed) so that the
    caller keeps them.
    """

    def __init__(
        self, scopes: Sequence[Scope], *, max_inside: int, max_stay: timedelta
    ) -> None:
        if not scopes or scopes[0].name != SITE:
            raise ValueError("the first scope is the site's")
        self._scopes = {scope.name: _ScopeState(scope) for scope in scopes}
        self._max_inside = max_inside
        self._max_stay = max_stay

    @property
    def scopes(self) -> list[str]:
        return list(self._scopes)

    def scopes_of(self, lane: str) -> list[str]:
        """The scopes a passage on ``lane`` counts for."""
        wanted = lane.casefold()
        return [name for name, state in self._scopes.items() if wanted in state.scope.lanes]

    # -- loading ------------------------------------------------------------------

    def load(self, sessions: Iterable[ParkingSession], offsets: Mapping[str, int]) -> None:
        """The open sessions and corrections kept in the store (oldest
        first); a scope no longer configured is left out."""
        for session in sessions:
            state = self._scopes.get(session.area)
            if state is not None and session.state is SessionState.INSIDE:
                state.inside[session.plate] = session
        for name, offset in offsets.items():
            if name in self._scopes:
                self._scopes[name].offset = int(offset)

    # -- passages -----------------------------------------------------------------

    def passage(
        self, *, plate: str, lane: str, direction: str, at: datetime, event_id: str
    ) -> list[ParkingSession]:
        """A car let through on ``lane`` (``direction`` ``in`` or ``out``);
        the sessions written."""
        written: list[ParkingSession] = []
        for name in self.scopes_of(lane):
            state = self._scopes[name]
            key = f"{event_id}:{name}"
            if direction == "in":
                earlier = state.inside.pop(plate, None)
                if earlier is not None:
                    written.append(attrs.evolve(earlier, state=SessionState.NOT_CLOSED))
                session = ParkingSession(
                    key=key,
                    plate=plate,
                    area=name,
                    state=SessionState.INSIDE,
                    entered_at=at,
                    entry_lane=lane,
                    entry_event=event_id,
                )
                state.inside[plate] = session
                written.append(session)
                while len(state.inside) > self._max_inside:
                    _, oldest = state.inside.popitem(last=False)
                    written.append(attrs.evolve(oldest, state=SessionState.NOT_CLOSED))
            else:
                entry = state.inside.pop(plate, None)
                if entry is not None:
                    written.append(
                        attrs.evolve(
                            entry,
                            state=SessionState.CLOSED,
                            left_at=at,
                            exit_lane=lane,
                            exit_event=event_id,
                        )
                    )
                else:
                    # A car counted by the operator's correction left.
                    if state.offset > 0:
                        state.offset -= 1
                    written.append(
                        ParkingSession(
                            key=key,
                            plate=plate,
                            area=name,
                            state=SessionState.NO_ENTRY,
                            left_at=at,
                            exit_lane=lane,
                            exit_event=event_id,
                        )
                    )
        return written

    def expire(self, now: datetime) -> list[ParkingSession]:
        """Flag ``not_closed`` the entries older than the longest stay."""
        limit = now - self._max_stay
        written: list[ParkingSession] = []
        for state in self._scopes.values():
            # Oldest first: stop at the first one still within the stay.
            while state.inside:
                plate, session = next(iter(state.inside.items()))
                if session.entered_at is None or session.entered_at >= limit:
                    break
                del state.inside[plate]
                written.append(attrs.evolve(session, state=SessionState.NOT_CLOSED))
        return written

    # -- counts ---------------------------------------------------------------------

    def correct(self, area: str, inside: int) -> Count:
        """The operator says ``inside`` cars are in ``area`` now."""
        state = self._scopes[area]
        state.offset = inside - len(state.inside)
        return self.count(area)

    def offsets(self) -> dict[str, int]:
        return {name: state.offset for name, state in self._scopes.items() if state.offset}

    def count(self, area: str = SITE) -> Count:
        state = self._scopes[area]
        tracked = len(state.inside)
        return Count(
            area=area,
            capacity=state.scope.capacity,
            inside=max(0, tracked + state.offset),
            tracked=tracked,
            correction=state.offset,
        )

    def counts(self) -> list[Count]:
        return [self.count(name) for name in self._scopes]

    def inside(self, area: str = SITE) -> list[ParkingSession]:
        """The open sessions of ``area``, oldest first."""
        return list(self._scopes[area].inside.values())
