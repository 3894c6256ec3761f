"""What a camera's own whitelist should hold, and the work that takes it there.

A lane's camera keeps a list of its own, which it uses to open the barrier by
itself while the gateway or its link is down. This module decides, from the
site's plate list, which rows that camera should hold (:func:`camera_row`,
:func:`desired_rows`) and keeps, per camera, the difference between what it
holds and what it should hold (:class:`CameraListWork`). A change of the
site's list is applied to that difference in time proportional to the change
(:meth:`CameraListWork.apply`); only a full recompute walks the whole list,
and the caller runs that off the reactor on a snapshot.

Which plates go first when the list is larger than the camera can hold
(``capacity``), in this order:

1. allow entries before blacklist entries (with the gateway down, a camera
   that opens only for its list refuses an unknown plate anyway);
2. entries naming the camera's lane before entries for every lane;
3. entries valid the longest: without an end first, then the latest end;
4. by plate, so the choice is the same on every run.

Pure: no Twisted, no I/O.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

import attrs

from gateway.policy.whitelist import WhitelistEntry

__all__ = [
    "MAX_CAMERA_PLATE_CHARS",
    "CameraListRules",
    "CameraListWork",
    "CameraRow",
    "DesiredList",
    "ListCut",
    "Priority",
    "RowChange",
    "camera_can_hold",
    "camera_row",
    "desired_lists",
    "desired_rows",
    "priority",
    "row_change",
]

#: The longest plate a camera's list takes (PROTOCOL.md section 4: 7-15 characters).
MAX_CAMERA_PLATE_CHARS = 15
HOURS_SKIP = "limited to weekly hours the camera cannot enforce"


@attrs.frozen
class CameraRow:
    """One plate as a camera holds it."""

    plate: str
    blacklist: bool = False
    valid_from: datetime | None = None  # aware
    valid_until: datetime | None = None


@attrs.frozen
class CameraListRules:
    """What the camera on ``lane`` can hold: blacklist rows or not, and how
    many rows at most (None: no limit)."""

    lane: str | None
    holds_blacklist: bool = True
    capacity: int | None = None


def camera_can_hold(plate: str) -> str | None:
    """Why a camera cannot hold ``plate`` (None when it can)."""
    if len(plate) > MAX_CAMERA_PLATE_CHARS:
        return f"longer than {MAX_CAMERA_PLATE_CHARS} characters"
    try:
        plate.encode("gb2312")
    except UnicodeEncodeError:
        return "has characters outside GB2312"
    return None


def camera_row(
    entry: WhitelistEntry, rules: CameraListRules, now: datetime
) -> tuple[CameraRow | None, str | None]:
    """The row a camera with ``rules`` should hold for ``entry``, or None;
    with the reason worth telling the installer when an entry that applies
    to the lane is left out (weekly hours, a plate the camera cannot hold).

    The camera enforces nothing but validity: entries limited to weekly
    hours are not copied (the camera would let the car in at any hour)."""
    if not entry.enabled or not entry.covers_lane(rules.lane):
        return None, None
    if entry.valid_until is not None and entry.valid_until < now:
        return None, None
    if entry.blacklist and not rules.holds_blacklist:
        return None, None
    if entry.hours:
        return None, HOURS_SKIP
    why = camera_can_hold(entry.plate)
    if why is not None:
        return None, why
    row = CameraRow(
        plate=entry.plate,
        blacklist=entry.blacklist,
        valid_from=entry.valid_from,
        valid_until=entry.valid_until,
    )
    return row, None


#: How plates are ordered for a camera that cannot hold them all: lower first.
Priority = tuple[bool, bool, bool, float, str]
# Candidates kept beyond the cut, so that plates leaving the chosen ones can
# be replaced without walking the whole list.
RESERVE = 1000


def priority(entry: WhitelistEntry, lane: str | None) -> Priority:
    """Where ``entry`` goes in the order of the module docstring (lower
    first); the plate last, so no two entries tie."""
    end = entry.valid_until
    return (
        entry.blacklist,
        not (lane is not None and lane in entry.lanes),
        end is not None,
        -end.timestamp() if end is not None else 0.0,
        entry.plate,
    )


# Max-heap helpers of the heapq module (public names from Python 3.14 on). The
# private names go through getattr: typeshed does not declare them.
_heapify_max = getattr(heapq, "heapify_max", None) or getattr(heapq, "_heapify_max")  # noqa: B009
_heapreplace_max = (
    getattr(heapq, "heapreplace_max", None) or getattr(heapq, "_heapreplace_max")  # noqa: B009
)


def _smallest(
    candidates: list[tuple[Priority, WhitelistEntry]], count: int
) -> list[tuple[Priority, WhitelistEntry]]:
    """The ``count`` first candidates in priority order, found so that a
    thread doing it lets the event loop's thread in: a C sort of 100 000
    keys holds the interpreter lock throughout, so the candidates are walked
    in a Python loop against a heap of ``count``, and the heap is emptied in
    order by another (keys are unique, so a row is never compared)."""
    if count <= 0:
        return []
    chosen = candidates[:count]
    _heapify_max(chosen)
    if chosen:
        top = chosen[0]
        for index in range(count, len(candidates)):
            item = candidates[index]
            if item < top:
                _heapreplace_max(chosen, item)
                top = chosen[0]
    heapq.heapify(chosen)
    return [heapq.heappop(chosen) for _ in range(len(chosen))]


@attrs.define
class ListCut:
    """Which plates a camera with a capacity holds: the ``chosen`` ones (at
    most ``capacity``, in priority order) and a ``reserve`` of the next
    candidates, so that a change moves plates across the cut in time
    proportional to the change. ``complete`` says the reserve holds every
    candidate beyond the chosen ones; when an incomplete reserve runs dry,
    the list must be recomputed. ``wanted`` counts every candidate."""

    capacity: int
    chosen: list[Priority]
    reserve: list[Priority]
    rows: dict[str, CameraRow]  # of every chosen and reserve plate
    keys: dict[str, Priority]
    complete: bool
    wanted: int

    def _remove(self, plate: str, settle: dict[str, CameraRow | None]) -> None:
        key = self.keys.pop(plate, None)
        if key is None:
            return
        del self.rows[plate]
        for keys in (self.chosen, self.reserve):
            at = bisect.bisect_left(keys, key)
            if at < len(keys) and keys[at] == key:
                del keys[at]
                if keys is self.chosen:
                    settle[plate] = None
                return

    def update(
        self, plate: str, candidate: tuple[Priority, CameraRow] | None, was_candidate: bool
    ) -> dict[str, CameraRow | None] | None:
        """Move ``plate`` to its new place (``candidate``: its priority and
        row; None: no longer a candidate). Returns the plates whose row the
        camera should now hold or drop, or None when the reserve ran dry and
        the list must be recomputed."""
        settle: dict[str, CameraRow | None] = {}
        self._remove(plate, settle)
        self.wanted -= was_candidate
        if candidate is not None:
            key, row = candidate
            self.wanted += 1
            kept = True
            if self.chosen and key < self.chosen[-1]:
                bisect.insort(self.chosen, key)
                settle[plate] = row
            elif self.complete or (self.reserve and key < self.reserve[-1]):
                # Between the chosen and the reserve, or in it: the
                # rebalancing below takes it in if there is room.
                bisect.insort(self.reserve, key)
            else:
                kept = False  # beyond the reserve: found by the next recompute
            if kept:
                self.keys[plate], self.rows[plate] = key, row
        while len(self.chosen) > self.capacity:
            key = self.chosen.pop()
            self.reserve.insert(0, key)
            settle[key[-1]] = None
        while len(self.chosen) < self.capacity and self.reserve:
            key = self.reserve.pop(0)
            self.chosen.append(key)
            settle[key[-1]] = self.rows[key[-1]]
        if len(self.reserve) > 2 * RESERVE:
            for key in self.reserve[RESERVE:]:
                del self.keys[key[-1]], self.rows[key[-1]]
            del self.reserve[RESERVE:]
            self.complete = False
        if len(self.chosen) < self.capacity and not self.complete:
            return None
        return settle


@attrs.frozen
class DesiredList:
    """The rows a camera should hold. ``wanted`` counts the rows it would
    hold without a capacity (more than ``len(rows)`` when the list was cut);
    ``skipped`` lists (plate, why) of entries left out for a reason worth
    telling; ``cut`` is how the capacity was applied (None: no capacity)."""

    rows: dict[str, CameraRow]
    wanted: int
    skipped: tuple[tuple[str, str], ...] = ()
    cut: ListCut | None = None

    @property
    def capped(self) -> bool:
        return self.wanted > len(self.rows)


def desired_rows(
    entries: Iterable[WhitelistEntry], rules: CameraListRules, now: datetime
) -> DesiredList:
    """Everything a camera with ``rules`` should hold, capacity applied
    (see the module docstring for the order). Walks the whole list: run it
    off the reactor."""
    (desired,) = desired_lists(entries, (rules,), now)
    return desired


def desired_lists(
    entries: Iterable[WhitelistEntry], rules: Sequence[CameraListRules], now: datetime
) -> list[DesiredList]:
    """What each of several cameras should hold, in one pass over the list.

    Entries for every lane are shared: their order is the same for every
    lane (rule 2 puts a lane's own entries before them all), so they are
    ranked once, and each camera's list is its lane's own entries merged
    with that ranking. A camera's rows are shared with the other cameras'.
    Walks the whole list: run it off the reactor."""
    lanes = {rule.lane for rule in rules if rule.lane is not None}
    shared: list[tuple[Priority, WhitelistEntry]] = []
    shared_banned: list[tuple[Priority, WhitelistEntry]] = []
    own: dict[str, list[tuple[Priority, WhitelistEntry]]] = {lane: [] for lane in lanes}
    skipped_shared: list[tuple[str, str]] = []
    skipped_own: dict[str, list[tuple[str, str]]] = {lane: [] for lane in lanes}
    for entry in entries:
        if not entry.enabled or (entry.valid_until is not None and entry.valid_until < now):
            continue
        targets = (lanes & entry.lanes) if entry.lanes else None
        if targets is not None and not targets:
            continue
        why = HOURS_SKIP if entry.hours else camera_can_hold(entry.plate)
        if why is not None:
            if targets is None:
                skipped_shared.append((entry.plate, why))
            else:
                for lane in targets:
                    skipped_own[lane].append((entry.plate, why))
            continue
        if targets is None:
            (shared_banned if entry.blacklist else shared).append((priority(entry, None), entry))
        else:
            for lane in targets:
                own[lane].append((priority(entry, lane), entry))
    rows: dict[str, CameraRow] = {}

    def row_of(entry: WhitelistEntry) -> CameraRow:
        row = rows.get(entry.plate)
        if row is None:
            row = rows[entry.plate] = CameraRow(
                plate=entry.plate,
                blacklist=entry.blacklist,
                valid_from=entry.valid_from,
                valid_until=entry.valid_until,
            )
        return row

    counts = (len(shared), len(shared_banned))
    capped = [rule.capacity for rule in rules if rule.capacity is not None]
    # Only the first ones of the shared ranking can make any camera's cut.
    enough = max(capped) + RESERVE if capped else 0
    ranked = (_smallest(shared, enough), _smallest(shared_banned, enough))
    results: list[DesiredList] = []
    for rule in rules:
        mine = own.get(rule.lane, []) if rule.lane is not None else []
        skipped = tuple(skipped_shared) + tuple(skipped_own.get(rule.lane, [])) if rule.lane else tuple(skipped_shared)
        wanted = len(mine) + counts[0] + (counts[1] if rule.holds_blacklist else 0)
        if rule.capacity is None:
            chosen = [*mine, *shared, *(shared_banned if rule.holds_blacklist else ())]
            desired = {entry.plate: row_of(entry) for _, entry in chosen}
            results.append(DesiredList(rows=desired, wanted=wanted, skipped=skipped))
            continue
        streams = [sorted(mine), ranked[0]]
        if rule.holds_blacklist:
            streams.append(ranked[1])
        kept = list(itertools.islice(heapq.merge(*streams), rule.capacity + RESERVE))
        cut = ListCut(
            capacity=rule.capacity,
            chosen=[key for key, _ in kept[: rule.capacity]],
            reserve=[key for key, _ in kept[rule.capacity :]],
            rows={entry.plate: row_of(entry) for _, entry in kept},
            keys={entry.plate: key for key, entry in kept},
            complete=wanted <= rule.capacity + RESERVE,
            wanted=wanted,
        )
        desired = {key[-1]: cut.rows[key[-1]] for key in cut.chosen}
        results.append(DesiredList(rows=desired, wanted=wanted, skipped=skipped, cut=cut))
    return results


@attrs.frozen
class RowChange:
    """What a change of one plate means for one camera: the plate's priority
    and row if it is a candidate for the camera's list now (None: it is
    not), and whether it was one before the change."""

    candidate: tuple[Priority, CameraRow] | None
    was_candidate: bool


def row_change(
    entry: WhitelistEntry | None,
    previous: WhitelistEntry | None,
    rules: CameraListRules,
    now: datetime,
) -> tuple[RowChange, str | None]:
    """The :class:`RowChange` of a plate whose entry went from ``previous``
    to ``entry`` (None: none), and why the new entry is left out when that
    is worth telling."""
    was = previous is not None and camera_row(previous, rules, now)[0] is not None
    if entry is None:
        return RowChange(None, was), None
    row, why = camera_row(entry, rules, now)
    candidate = (priority(entry, rules.lane), row) if row is not None else None
    return RowChange(candidate, was), why


@attrs.define
class CameraListWork:
    """What one camera holds, and the difference still to send it.

    ``has`` is what the camera holds (when ``known``; an unknown list is
    cleared first). ``to_delete`` and ``to_add`` are the pending work, in the
    order it is sent: deletions first. With ``replace_on_change`` (ParkingCam:
    an add does not say whether it replaces a row) a changed row is deleted,
    then added again; otherwise an add replaces it.

    ``size`` is how many rows the camera holds once the work is done, and
    ``wanted`` how many it would hold without a capacity; ``capped`` says
    they differ. For a camera with a capacity, ``cut`` keeps which plates
    make the cut (:class:`ListCut`), so that edits move plates across it
    without walking the list.
    """

    has: dict[str, CameraRow] = attrs.field(factory=dict)
    known: bool = False
    replace_on_change: bool = False
    to_delete: dict[str, None] = attrs.field(factory=dict)
    to_add: dict[str, CameraRow] = attrs.field(factory=dict)
    size: int = 0
    wanted: int = 0
    capped: bool = False
    cut: ListCut | None = None

    @property
    def done(self) -> bool:
        return self.known and not self.to_delete and not self.to_add

    def reset(self) -> None:
        """Forget what the camera holds: its list is cleared and sent again."""
        self.known = False
        self.has = {}  # a new table: a recompute may be reading the old one
        self.to_delete.clear()
        self.to_add.clear()
        self.size = 0

    def replace(self, desired: DesiredList) -> None:
        """Recompute the work against the whole desired list."""
        wanted = desired.rows
        has = self.has if self.known else {}
        self.to_delete = {plate: None for plate in has if plate not in wanted}
        self.to_add = {}
        for plate, row in wanted.items():
            held = has.get(plate)
            if held == row:
                continue
            self.to_add[plate] = row
            if held is not None and self.replace_on_change:
                self.to_delete[plate] = None
        self.size = len(wanted)
        self.wanted = desired.wanted
        self.capped = desired.capped
        self.cut = desired.cut

    def _desired(self, plate: str) -> bool:
        return plate in self.to_add or (
            self.known and plate in self.has and plate not in self.to_delete
        )

    def apply(self, changes: Mapping[str, RowChange]) -> bool:
        """Apply what a change of the site's list means for this camera, in
        time proportional to the change. Returns False when a full
        recompute is needed instead (a cut whose reserve ran dry); the work
        is then to be replaced (:meth:`replace`) before anything is sent."""
        cut = self.cut
        if cut is None:
            for plate, change in changes.items():
                row = change.candidate[1] if change.candidate is not None else None
                self.size += (row is not None) - self._desired(plate)
                self.settle(plate, row)
            self.wanted = self.size
            return True
        moves: dict[str, CameraRow | None] = {}
        for plate, change in changes.items():
            moved = cut.update(plate, change.candidate, change.was_candidate)
            if moved is None:
                return False
            moves.update(moved)
        for plate, row in moves.items():
            self.settle(plate, row)
        self.size, self.wanted = len(cut.chosen), cut.wanted
        self.capped = self.wanted > self.size
        return True

    def settle(self, plate: str, row: CameraRow | None) -> None:
        """Make the pending work for ``plate`` take the camera to ``row``
        (None: to holding no row for it). ``size`` is the caller's to keep."""
        held = self.has.get(plate) if self.known else None
        if row is None:
            self.to_add.pop(plate, None)
            if held is not None:
                self.to_delete[plate] = None
            return
        if held == row:
            self.to_add.pop(plate, None)
            self.to_delete.pop(plate, None)
            return
        self.to_add[plate] = row
        if held is not None and self.replace_on_change:
            self.to_delete[plate] = None
        else:
            self.to_delete.pop(plate, None)

    def deleted(self, plates: Iterable[str]) -> None:
        """The camera confirmed these deletions."""
        for plate in plates:
            self.has.pop(plate, None)
            self.to_delete.pop(plate, None)

    def added(self, rows: Iterable[CameraRow]) -> None:
        """The camera confirmed these rows (as they were sent)."""
        for row in rows:
            self.has[row.plate] = row
            pending = self.to_add.get(row.plate)
            if pending == row:
                del self.to_add[row.plate]
            elif pending is None:
                # It left the list while its add was on its way: the camera
                # holds it now, so it goes again.
                self.to_delete[row.plate] = None
            elif self.replace_on_change:
                # Changed while on its way: an add does not replace a row.
                self.to_delete[row.plate] = None

    def cleared(self) -> None:
        """The camera confirmed its whole list is gone."""
        self.has = {}
        self.known = True
        self.to_delete.clear()
