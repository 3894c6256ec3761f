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

from collections.abc import Iterable, Mapping
from datetime import datetime

import attrs

from gateway.policy.whitelist import WhitelistEntry

__all__ = [
    "MAX_CAMERA_PLATE_CHARS",
    "CameraListRules",
    "CameraListWork",
    "CameraRow",
    "DesiredList",
    "camera_can_hold",
    "camera_row",
    "desired_rows",
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


def _priority(entry: WhitelistEntry, lane: str | None) -> tuple[bool, bool, bool, float, str]:
    end = entry.valid_until
    return (
        entry.blacklist,
        not (lane is not None and lane in entry.lanes),
        end is not None,
        -end.timestamp() if end is not None else 0.0,
        entry.plate,
    )


@attrs.frozen
class DesiredList:
    """The rows a camera should hold. ``wanted`` counts the rows it would
    hold without a capacity (more than ``len(rows)`` when the list was cut);
    ``skipped`` lists (plate, why) of entries left out for a reason worth
    telling."""

    rows: dict[str, CameraRow]
    wanted: int
    skipped: tuple[tuple[str, str], ...] = ()

    @property
    def capped(self) -> bool:
        return self.wanted > len(self.rows)


def desired_rows(
    entries: Iterable[WhitelistEntry], rules: CameraListRules, now: datetime
) -> DesiredList:
    """Everything a camera with ``rules`` should hold, capacity applied
    (see the module docstring for the order). Walks the whole list: run it
    off the reactor."""
    chosen: list[tuple[WhitelistEntry, CameraRow]] = []
    skipped: list[tuple[str, str]] = []
    for entry in entries:
        row, why = camera_row(entry, rules, now)
        if row is not None:
            chosen.append((entry, row))
        elif why is not None:
            skipped.append((entry.plate, why))
    wanted = len(chosen)
    if rules.capacity is not None and wanted > rules.capacity:
        chosen.sort(key=lambda pair: _priority(pair[0], rules.lane))
        del chosen[rules.capacity :]
    return DesiredList(
        rows={row.plate: row for _, row in chosen}, wanted=wanted, skipped=tuple(skipped)
    )


@attrs.define
class CameraListWork:
    """What one camera holds, and the difference still to send it.

    ``has`` is what the camera holds (when ``known``; an unknown list is
    cleared first). ``to_delete`` and ``to_add`` are the pending work, in the
    order it is sent: deletions first. With ``replace_on_change`` (ParkingCam:
    an add does not say whether it replaces a row) a changed row is deleted,
    then added again; otherwise an add replaces it.

    ``size`` is how many rows the camera holds once the work is done, and
    ``wanted`` how many it would hold without a capacity. ``capped`` says the
    last full recompute cut the list to the capacity: which plates make the
    cut can then change with any edit, so edits ask for a recompute instead
    (:meth:`apply` returns False).
    """

    has: dict[str, CameraRow] = attrs.field(factory=dict)
    known: bool = False
    replace_on_change: bool = False
    to_delete: dict[str, None] = attrs.field(factory=dict)
    to_add: dict[str, CameraRow] = attrs.field(factory=dict)
    size: int = 0
    wanted: int = 0
    capped: bool = False

    @property
    def done(self) -> bool:
        return self.known and not self.to_delete and not self.to_add

    def reset(self) -> None:
        """Forget what the camera holds: its list is cleared and sent again."""
        self.known = False
        self.has.clear()
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

    def _desired(self, plate: str) -> bool:
        return plate in self.to_add or (
            self.known and plate in self.has and plate not in self.to_delete
        )

    def apply(self, changes: Mapping[str, CameraRow | None], capacity: int | None) -> bool:
        """Apply the rows that changed (plate -> the row the camera should
        now hold, None: none), in time proportional to the change. Returns
        False, changing nothing, when a full recompute is needed instead:
        the list is cut to the capacity, or would now exceed it."""
        if self.capped:
            return False
        growth = sum((row is not None) - self._desired(plate) for plate, row in changes.items())
        if capacity is not None and self.size + growth > capacity:
            return False
        for plate, row in changes.items():
            self.settle(plate, row)
        self.size += growth
        self.wanted = self.size
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
            if self.to_add.get(row.plate) == row:
                del self.to_add[row.plate]

    def cleared(self) -> None:
        """The camera confirmed its whole list is gone."""
        self.has.clear()
        self.known = True
        self.to_delete.clear()
