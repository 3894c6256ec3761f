"""The local gate policy: whitelist and blacklist entries, the in-memory
index that finds them for a plate read, and the decision made from them.

Pure: no Twisted, no I/O. The store loads entries into a
:class:`WhitelistIndex` and keeps it up to date (:meth:`WhitelistIndex.upsert`,
:meth:`WhitelistIndex.remove`); a :class:`WhitelistPolicy` reads the index on
every decision.

How a read finds its entry
--------------------------

A read is compared with the list in tiers, closest first:

1. *exact*: the normalised read equals the entry's plate;
2. *confusable*: they are equal once OCR-confusable characters are folded
   (``京A0B8S5`` read for ``京AOB8S5``; see
   :func:`gateway.policy.plates.fold_plate`). Always on: Chinese plates use
   neither ``I`` nor ``O``, and the groups are the camera's known misreads;
3. *distance d*, for d = 1 .. ``max_plate_distance``: Levenshtein distance d
   between the folded forms. With ``max_plate_distance = 0`` (the default) a
   read that differs from every plate by anything other than confusable
   characters matches nothing.

Only the closest tier that holds any entry counts. Blacklist and allow
entries are matched with the same tolerance, so a blacklisted plate is never
matched more loosely than an allowed one: an exact read of an allowed plate
opens even when a blacklisted plate is one edit away, but when a blacklisted
plate matches at least as closely as every allowed one, the blacklist wins.
More generally, when several entries match equally closely the read is
ambiguous, and the most restrictive outcome stands (see
:class:`WhitelistPolicy`).

A multi-region read (``粤ZJ068澳|MX7742|ZM127``) is one car with several
plates, any of which may be the one on the list: each region is looked up as
above, and the whole read too (exactly, for an entry listing the whole
license). The closest tier over all of them counts, holding the matches of
every region that matched that closely (:meth:`WhitelistIndex.closest`). A
read costs one lookup per region (at most :data:`MAX_REGIONS` of them),
whatever the size of the list.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, time, timezone, tzinfo
from operator import ne
from typing import TypeVar

import attrs

from gateway.policy.decision import (
    BLACKLIST,
    DISABLED,
    EXPIRED,
    LOCAL,
    NO_PLATE,
    NOT_YET_VALID,
    OUTSIDE_HOURS,
    UNKNOWN,
    WHITELIST,
    WRONG_LANE,
    Decision,
    PlateQuery,
    never_open,
)
from gateway.policy.plates import (
    bounded_distance,
    deletion_variants,
    fold_plate,
    is_no_plate,
    normalise_plate,
    plate_regions,
)

__all__ = [
    "ENTRY_SOURCES",
    "MAX_PLATE_DISTANCE",
    "MAX_REGIONS",
    "PlateListChange",
    "PlateMatch",
    "WeeklyWindow",
    "WhitelistEntry",
    "WhitelistIndex",
    "WhitelistPolicy",
    "format_hours",
    "parse_hours",
]

#: Where an entry came from: a CSV import, the admin page, the cloud's sync feed, MQTT.
ENTRY_SOURCES: frozenset[str] = frozenset({"csv", "admin", "cloud", "mqtt"})

#: The largest edit distance the index supports. Beyond 2, a plate of 7 or 8
#: characters matches too many others to identify a car.
MAX_PLATE_DISTANCE = 2

#: The most regions of a multi-region read that are looked up (three-region
#: plates exist); further ones are kept in the plate but not looked up, so a
#: license of many ``|`` costs no more than this many lookups.
MAX_REGIONS = 4

# A read longer than this is looked up exactly and by confusables only: no
# listed plate is that long (the entry codec allows 32 characters), and the
# fuzzy tiers cost in proportion to the square of the read's length.
_MAX_FUZZY_READ_CHARS = 32 + MAX_PLATE_DISTANCE

_DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_DAY_WORDS: dict[str, int] = {}
for _number, _names in enumerate(
    (
        ("mon", "monday", "周一", "星期一"),
        ("tue", "tuesday", "周二", "星期二"),
        ("wed", "wednesday", "周三", "星期三"),
        ("thu", "thursday", "周四", "星期四"),
        ("fri", "friday", "周五", "星期五"),
        ("sat", "saturday", "周六", "星期六"),
        ("sun", "sunday", "周日", "周天", "星期日", "星期天"),
    )
):
    for _name in _names:
        _DAY_WORDS[_name] = _number
_EVERY_DAY_WORDS = frozenset({"daily", "每天"})
_ALL_DAYS = frozenset(range(7))


# --------------------------------------------------------------------------
# Weekly hours


def _to_days(days: Iterable[int]) -> frozenset[int]:
    return frozenset(days)


def _check_days(instance: object, attribute: object, days: frozenset[int]) -> None:
    if not days or not days <= _ALL_DAYS:
        raise ValueError(
            f"days must be a non-empty set of 0 (Monday) to 6 (Sunday), not {sorted(days)}"
        )


def _check_clock_time(instance: object, attribute: attrs.Attribute[time], value: time) -> None:
    if value.tzinfo is not None or value.microsecond:
        raise ValueError(
            f"{attribute.name} must be a local time of day to the second, not {value!r}"
        )


@attrs.frozen
class WeeklyWindow:
    """A time window repeated every week, in the site's local time.

    ``days`` are the days the window starts on (0 = Monday .. 6 = Sunday).
    ``start`` is inclusive, ``end`` exclusive. A window whose ``end`` is not
    after its ``start`` crosses midnight: ``Fri 22:00-06:00`` covers Friday
    22:00 to Saturday 06:00, ``Sun 22:00-06:00`` Sunday night to Monday
    morning, and ``Mon 00:00-00:00`` the whole of Monday.
    """

    days: frozenset[int] = attrs.field(converter=_to_days, validator=_check_days)
    start: time = attrs.field(validator=_check_clock_time)
    end: time = attrs.field(validator=_check_clock_time)

    def covers(self, local: datetime) -> bool:
        """Whether the wall-clock time ``local`` (in the site's time zone)
        falls in this window."""
        weekday = local.weekday()
        clock = local.time()
        if self.start < self.end:
            return weekday in self.days and self.start <= clock < self.end
        # Crossing midnight: the evening part belongs to the starting day,
        # the morning part to the day after it.
        return (weekday in self.days and clock >= self.start) or (
            (weekday - 1) % 7 in self.days and clock < self.end
        )


_WINDOW_RE = re.compile(
    r"^(?P<days>.+?)\s+(?P<start>\d{1,2}:\d{2}(?::\d{2})?)\s*-\s*(?P<end>\d{1,2}:\d{2}(?::\d{2})?)$"
)


def _parse_clock(text: str, *, is_end: bool) -> time:
    parts = [int(part) for part in text.split(":")]
    hour, minute = parts[0], parts[1]
    second = parts[2] if len(parts) == 3 else 0
    if is_end and (hour, minute, second) == (24, 0, 0):
        # "07:00-24:00" means until midnight: an end at 00:00 of the next day.
        return time(0, 0)
    if hour > 23 or minute > 59 or second > 59:
        raise ValueError(f"{text!r} is not a time of day (HH:MM or HH:MM:SS)")
    return time(hour, minute, second)


def _parse_day(word: str) -> int:
    day = _DAY_WORDS.get(word.lower())
    if day is None:
        raise ValueError(f"{word!r} is not a day (Mon, Tue, Wed, Thu, Fri, Sat, Sun)")
    return day


def _parse_days(text: str) -> frozenset[int]:
    compact = "".join(text.split())
    if compact.lower() in _EVERY_DAY_WORDS:
        return _ALL_DAYS
    days: set[int] = set()
    for item in compact.split(","):
        first, dash, last = item.partition("-")
        if not dash:
            days.add(_parse_day(first))
            continue
        # A range may wrap past Sunday: "Fri-Mon" is Fri, Sat, Sun, Mon.
        day, stop = _parse_day(first), _parse_day(last)
        days.add(day)
        while day != stop:
            day = (day + 1) % 7
            days.add(day)
    return frozenset(days)


def parse_hours(text: str) -> tuple[WeeklyWindow, ...]:
    """Parse the text form of weekly hours.

    Windows are separated by ``;``; each is days, then ``HH:MM-HH:MM``
    (seconds optional, ``24:00`` accepted as an end). Days are ``daily``, a
    day (``Mon``, ``Monday``, ``周一``), a range (``Mon-Fri``; ``Fri-Mon``
    wraps), or a comma-separated list of those::

        Mon-Fri 07:00-19:00; Sat 08:00-12:00
        daily 22:00-06:00

    Empty text means no restriction (an empty tuple). Raises ``ValueError``
    with the reason on anything else.
    """
    windows: list[WeeklyWindow] = []
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        match = _WINDOW_RE.match(part)
        if match is None:
            raise ValueError(f"{part!r} is not a weekly window like 'Mon-Fri 07:00-19:00'")
        windows.append(
            WeeklyWindow(
                days=_parse_days(match["days"]),
                start=_parse_clock(match["start"], is_end=False),
                end=_parse_clock(match["end"], is_end=True),
            )
        )
    return tuple(windows)


def _format_clock(value: time) -> str:
    if value.second:
        return value.strftime("%H:%M:%S")
    return value.strftime("%H:%M")


def _format_days(days: frozenset[int]) -> str:
    if days == _ALL_DAYS:
        return "daily"
    # Start after a day that is not in the set, so a run across Sunday stays
    # one range ("Sat-Mon").
    first = next(day for day in range(7) if (day - 1) % 7 not in days and day in days)
    runs: list[tuple[int, int]] = []
    for offset in range(7):
        day = (first + offset) % 7
        if day not in days:
            continue
        if runs and (runs[-1][1] + 1) % 7 == day:
            runs[-1] = (runs[-1][0], day)
        else:
            runs.append((day, day))
    return ",".join(
        _DAY_NAMES[start] if start == end else f"{_DAY_NAMES[start]}-{_DAY_NAMES[end]}"
        for start, end in runs
    )


def format_hours(windows: Iterable[WeeklyWindow]) -> str:
    """The text form of weekly hours, which :func:`parse_hours` reads back to
    the same windows: ``"Mon-Fri 07:00-19:00; Sat 08:00-12:00"``."""
    return "; ".join(
        f"{_format_days(window.days)} {_format_clock(window.start)}-{_format_clock(window.end)}"
        for window in windows
    )


# --------------------------------------------------------------------------
# Entries


def _to_windows(windows: Iterable[WeeklyWindow]) -> tuple[WeeklyWindow, ...]:
    return tuple(windows)


# Entries share their lane sets: a site has a handful of distinct ones, and
# each set is one more object the garbage collector walks per entry.
_LANE_SETS: dict[frozenset[str], frozenset[str]] = {}
_MAX_LANE_SETS = 4096


def _to_lanes(lanes: Iterable[str]) -> frozenset[str]:
    value = frozenset(lanes)
    shared = _LANE_SETS.get(value)
    if shared is not None:
        return shared
    if len(_LANE_SETS) < _MAX_LANE_SETS:
        _LANE_SETS[value] = value
    return value


def _to_utc(value: datetime | None) -> datetime | None:
    # Stored in UTC so that every comparison is between instants: two
    # datetimes with the same ZoneInfo compare by wall clock, which is wrong
    # for the repeated hour when clocks go back.
    if value is None or value.tzinfo is None or value.utcoffset() is None:
        return value
    return value.astimezone(timezone.utc)


def _check_plate(instance: object, attribute: object, plate: str) -> None:
    if is_no_plate(plate):
        raise ValueError("a whitelist entry needs a plate")


def _check_aware(
    instance: object, attribute: attrs.Attribute[datetime | None], value: datetime | None
) -> None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise ValueError(f"{attribute.name} must be timezone-aware, not {value!r}")


def _check_lanes(instance: object, attribute: object, lanes: frozenset[str]) -> None:
    for lane in lanes:
        # ";" separates lanes in the CSV form; a name there must read back.
        if not isinstance(lane, str) or not lane or lane != lane.strip() or ";" in lane:
            raise ValueError(f"{lane!r} is not a lane name")


def _check_source(instance: object, attribute: object, source: str) -> None:
    if source not in ENTRY_SOURCES:
        raise ValueError(
            f"source must be one of {', '.join(sorted(ENTRY_SOURCES))}, not {source!r}"
        )


@attrs.frozen
class WhitelistEntry:
    """One plate on the site's list: allowed, or blacklisted.

    ``plate`` is normalised on construction (``"京a·12345"`` becomes
    ``"京A12345"``). ``valid_from`` and ``valid_until`` are inclusive
    instants (stored in UTC) or ``None`` for unbounded; ``hours`` restricts
    the entry to weekly windows in site local time (empty: any time);
    ``lanes`` to named lanes (empty: every lane). A blacklist entry's lanes,
    validity and hours say where and when the ban applies.
    """

    plate: str = attrs.field(converter=normalise_plate, validator=_check_plate)
    enabled: bool = True
    blacklist: bool = False
    valid_from: datetime | None = attrs.field(
        default=None, converter=_to_utc, validator=_check_aware
    )
    valid_until: datetime | None = attrs.field(
        default=None, converter=_to_utc, validator=_check_aware
    )
    hours: tuple[WeeklyWindow, ...] = attrs.field(default=(), converter=_to_windows)
    lanes: frozenset[str] = attrs.field(
        factory=frozenset, converter=_to_lanes, validator=_check_lanes
    )
    note: str = ""
    source: str = attrs.field(default="admin", validator=_check_source)

    @valid_until.validator
    def _check_validity_order(self, attribute: object, value: datetime | None) -> None:
        if value is not None and self.valid_from is not None and value < self.valid_from:
            raise ValueError("valid_until is before valid_from")

    def covers_lane(self, lane: str | None) -> bool:
        """Whether the entry applies on ``lane`` (a camera in no lane is
        covered only by entries for every lane)."""
        return not self.lanes or lane in self.lanes

    def in_hours(self, local: datetime) -> bool:
        """Whether the site-local wall-clock time ``local`` falls in the
        entry's hours (always, when it has none)."""
        return not self.hours or any(window.covers(local) for window in self.hours)

    def restriction(self, at: datetime, lane: str | None, tz: tzinfo) -> str | None:
        """Why the entry does not apply to a read at instant ``at`` on
        ``lane``: ``WRONG_LANE``, ``NOT_YET_VALID``, ``EXPIRED`` or
        ``OUTSIDE_HOURS`` (checked in that order); ``None`` when it applies.
        ``enabled`` is not considered. ``at`` must be timezone-aware; ``tz``
        is the site's time zone, in which ``hours`` are read."""
        if not self.covers_lane(lane):
            return WRONG_LANE
        if self.valid_from is not None and at < self.valid_from:
            return NOT_YET_VALID
        if self.valid_until is not None and at > self.valid_until:
            return EXPIRED
        if self.hours and not self.in_hours(at.astimezone(tz)):
            return OUTSIDE_HOURS
        return None


@attrs.frozen
class PlateListChange:
    """One change of the site's plate list, as whoever follows the list
    receives it: the entries added or changed (``upserts``) and the plates
    removed (``deletes``). An entry that did not change is not in it, so the
    cost of following a change is the size of the change."""

    upserts: tuple[WhitelistEntry, ...] = ()
    deletes: tuple[str, ...] = ()
    #: The entries the change replaced or removed, by plate.
    previous: Mapping[str, WhitelistEntry] = attrs.field(factory=dict, eq=False, repr=False)

    def __len__(self) -> int:
        return len(self.upserts) + len(self.deletes)

    @property
    def plates(self) -> frozenset[str]:
        """Every plate the change touches."""
        return frozenset(entry.plate for entry in self.upserts) | frozenset(self.deletes)


# --------------------------------------------------------------------------
# Index


@attrs.frozen
class PlateMatch:
    """An entry found for a read, and how closely it matched."""

    entry: WhitelistEntry
    exact: bool  # the normalised read equals the entry's plate
    distance: int  # edit distance between the folded forms (0 for exact and confusable)

    @property
    def rank(self) -> int:
        """0 for exact, 1 for confusable, 1 + d for distance d: lower is closer."""
        return 0 if self.exact else 1 + self.distance


_Key = TypeVar("_Key")
# Buckets hold one value alone (the usual case: saves a list per key) or a list.
_Bucket = str | list[str]


def _bucket_add(table: dict[_Key, _Bucket], key: _Key, value: str) -> None:
    bucket = table.get(key)
    if bucket is None:
        table[key] = value
    elif isinstance(bucket, str):
        table[key] = [bucket, value]
    else:
        bucket.append(value)


def _bucket_discard(table: dict[_Key, _Bucket], key: _Key, value: str) -> None:
    bucket = table.get(key)
    if bucket is None:
        return
    if isinstance(bucket, str):
        if bucket == value:
            del table[key]
        return
    if value in bucket:
        bucket.remove(value)
        if len(bucket) == 1:
            table[key] = bucket[0]


def _bucket_members(bucket: _Bucket | None) -> Iterable[str]:
    if bucket is None:
        return ()
    if isinstance(bucket, str):
        return (bucket,)
    return bucket


def _deletion_pairs(tier: int) -> list[tuple[int, int]]:
    """The (read deletions, plate deletions) pairs first tried at ``tier``,
    with (tier, tier) last."""
    pairs = [(i, tier) for i in range(tier)] + [(tier, j) for j in range(tier)]
    return pairs + [(tier, tier)]


def _check_distance(max_distance: int) -> None:
    if not 0 <= max_distance <= MAX_PLATE_DISTANCE:
        raise ValueError(
            f"max plate distance must be 0 to {MAX_PLATE_DISTANCE}, not {max_distance}"
        )


class WhitelistIndex:
    """All whitelist and blacklist entries in memory, found by plate read.

    Entries are unique by (normalised) plate. Three tables answer a lookup:

    * by plate, for exact matches;
    * by folded plate (:func:`~gateway.policy.plates.fold_plate`), for
      confusable matches;
    * a symmetric-delete table for edit distances 1 to ``max_distance``:
      every string made by deleting 1..d characters from a folded plate,
      keyed by its hash (the strings themselves are not kept, which saves
      a quarter of the memory; a hash collision only adds a candidate that
      the distance check then drops). Two plates within distance d share
      such a string, so a lookup checks a few dozen candidates instead of
      every entry.

    Memory and build time grow with ``max_distance``. For 100 000 entries on
    a desktop CPU (a Raspberry Pi is several times slower): about 17 MB and
    0.2 s at distance 0, 60 MB and 1 s at distance 1, 220 MB and 6 s at
    distance 2. The deletion table is built only to the distance asked for
    (:meth:`ensure_distance`).
    """

    def __init__(self, entries: Iterable[WhitelistEntry] = (), *, max_distance: int = 0) -> None:
        _check_distance(max_distance)
        self._max_distance = max_distance
        self._entries: dict[str, WhitelistEntry] = {}
        self._by_folded: dict[str, _Bucket] = {}
        # _deletions[j - 1]: hash of a j-deletion variant -> folded plates.
        self._deletions: list[dict[int, _Bucket]] = [{} for _ in range(max_distance)]
        for entry in entries:
            self.upsert(entry)

    @classmethod
    def from_entries(
        cls, entries: Iterable[WhitelistEntry], *, max_distance: int = 0
    ) -> WhitelistIndex:
        """An index of ``entries``; of two entries for the same plate, the
        later one stays."""
        return cls(entries, max_distance=max_distance)

    @property
    def max_distance(self) -> int:
        """The largest edit distance :meth:`search` can serve."""
        return self._max_distance

    def ensure_distance(self, max_distance: int) -> None:
        """Extend the deletion table so that :meth:`search` serves up to
        ``max_distance`` (0 to :data:`MAX_PLATE_DISTANCE`). Never shrinks."""
        _check_distance(max_distance)
        for deletions in range(self._max_distance + 1, max_distance + 1):
            table: dict[int, _Bucket] = {}
            for folded in self._by_folded:
                for variant_hash in {
                    hash(variant) for variant in deletion_variants(folded, deletions)
                }:
                    _bucket_add(table, variant_hash, folded)
            self._deletions.append(table)
        self._max_distance = max(self._max_distance, max_distance)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, plate: object) -> bool:
        return isinstance(plate, str) and normalise_plate(plate) in self._entries

    def get(self, plate: str) -> WhitelistEntry | None:
        """The entry for exactly this plate (normalised first), if any."""
        return self._entries.get(normalise_plate(plate))

    def entries(self) -> tuple[WhitelistEntry, ...]:
        """Every entry, ordered by plate."""
        return tuple(self._entries[plate] for plate in sorted(self._entries))

    def snapshot(self) -> tuple[WhitelistEntry, ...]:
        """Every entry, in no particular order: a copy that stays as it is
        while the index changes (cheap: no sorting), for work off the reactor."""
        return tuple(self._entries.values())

    def upsert(self, entry: WhitelistEntry) -> WhitelistEntry | None:
        """Add ``entry``, or replace the entry for its plate. Returns the
        entry it replaced, if any."""
        previous = self._entries.get(entry.plate)
        self._entries[entry.plate] = entry
        if previous is not None:
            return previous
        folded = fold_plate(entry.plate)
        is_new_key = folded not in self._by_folded
        _bucket_add(self._by_folded, folded, entry.plate)
        if is_new_key:
            for deletions, table in enumerate(self._deletions, 1):
                for variant_hash in {
                    hash(variant) for variant in deletion_variants(folded, deletions)
                }:
                    _bucket_add(table, variant_hash, folded)
        return None

    def remove(self, plate: str) -> WhitelistEntry | None:
        """Remove the entry for ``plate`` (normalised first). Returns it, or
        ``None`` when there was none."""
        plate = normalise_plate(plate)
        entry = self._entries.pop(plate, None)
        if entry is None:
            return None
        folded = fold_plate(plate)
        _bucket_discard(self._by_folded, folded, plate)
        if folded not in self._by_folded:
            for deletions, table in enumerate(self._deletions, 1):
                for variant_hash in {
                    hash(variant) for variant in deletion_variants(folded, deletions)
                }:
                    _bucket_discard(table, variant_hash, folded)
        return entry

    def search(self, plate: str, max_distance: int = 0) -> Iterator[tuple[PlateMatch, ...]]:
        """The entries matching a read, closest tier first.

        Yields one non-empty tuple per tier that has matches, in order: the
        exact match; confusable matches; then matches at folded edit
        distance 1, 2 .. ``max_distance``. Each tuple is ordered by plate.
        Lazy: a caller that stops after the first tier pays for no fuzzy
        search. Raises ``ValueError`` if ``max_distance`` exceeds
        :attr:`max_distance`.
        """
        if not 0 <= max_distance <= self._max_distance:
            raise ValueError(
                f"this index serves plate distances 0 to {self._max_distance}, not {max_distance}"
            )
        return self._search(normalise_plate(plate), max_distance)

    def closest(self, read: str, max_distance: int = 0) -> tuple[PlateMatch, ...]:
        """The closest tier of entries matching a read (empty: none), ordered
        by plate.

        For a multi-region read (regions joined by ``|``) each region is
        looked up (the first :data:`MAX_REGIONS`), and the whole read exactly
        and by confusables; the closest tier over them all counts, with the
        matches of every region found that closely. One lookup per region:
        once a region matched at some tier, the next ones are searched only
        that far. Raises ``ValueError`` as :meth:`search` does.
        """
        if not 0 <= max_distance <= self._max_distance:
            raise ValueError(
                f"this index serves plate distances 0 to {self._max_distance}, not {max_distance}"
            )
        plate = normalise_plate(read)
        if "|" not in plate:
            return next(self._search(plate, max_distance), ())
        keys = [(plate, 0)]
        keys += [(region, max_distance) for region in plate_regions(plate)[:MAX_REGIONS]]
        best: dict[str, PlateMatch] = {}
        best_rank: int | None = None
        for key, distance in keys:
            if best_rank is not None:
                # Rank r is distance r - 1: nothing farther can count any more.
                distance = min(distance, max(best_rank - 1, 0))
            tier = next(self._search(key, distance), None)
            if tier is None:
                continue
            rank = tier[0].rank
            if best_rank is not None and rank > best_rank:
                continue
            if best_rank is None or rank < best_rank:
                best_rank, best = rank, {}
            for match in tier:
                best.setdefault(match.entry.plate, match)
        return tuple(best[plate] for plate in sorted(best))

    def _search(self, read: str, max_distance: int) -> Iterator[tuple[PlateMatch, ...]]:
        if not read:
            return
        if len(read) > _MAX_FUZZY_READ_CHARS:
            max_distance = 0
        exact = self._entries.get(read)
        if exact is not None:
            yield (PlateMatch(exact, exact=True, distance=0),)
        key = fold_plate(read)
        confusable = sorted(
            plate for plate in _bucket_members(self._by_folded.get(key)) if plate != read
        )
        if confusable:
            yield tuple(
                PlateMatch(self._entries[plate], exact=False, distance=0) for plate in confusable
            )
        # Symmetric delete: a folded plate at distance d from the read
        # shares a string with it made by deleting i characters from the
        # read and j from the plate, where i = substitutions + deletions and
        # j = substitutions + insertions, both <= d. Tier d tries the pairs
        # (i, j) with max(i, j) = d; candidates found early but farther away
        # wait for their own tier.
        read_deletions: list[frozenset[str]] = [frozenset((key,))]
        distances: dict[str, int] = {key: 0}
        for tier in range(1, max_distance + 1):
            read_deletions.append(deletion_variants(key, tier))
            for i, j in _deletion_pairs(tier):
                # In the last tier, a plate that only the pair (d, d) finds is
                # within reach only through d substitutions (any other edit
                # script has i or j below d and was tried before), so
                # counting differing positions is enough. This pair brings
                # most of the candidates, most of them far.
                substitutions_only = i == j == max_distance
                for variant in read_deletions[i]:
                    if j == 0:
                        # The variant is itself a folded plate.
                        candidates: Iterable[str] = (variant,) if variant in self._by_folded else ()
                    else:
                        candidates = _bucket_members(self._deletions[j - 1].get(hash(variant)))
                    for candidate in candidates:
                        if candidate in distances:
                            continue
                        if substitutions_only:
                            distances[candidate] = (
                                max_distance
                                if len(candidate) == len(key)
                                and sum(map(ne, key, candidate)) == max_distance
                                else max_distance + 1
                            )
                        else:
                            distances[candidate] = bounded_distance(key, candidate, max_distance)
            found = sorted(
                plate
                for candidate, distance in distances.items()
                if distance == tier
                for plate in _bucket_members(self._by_folded.get(candidate))
            )
            if found:
                yield tuple(
                    PlateMatch(self._entries[plate], exact=False, distance=tier) for plate in found
                )


# --------------------------------------------------------------------------
# Policy

# Among equally close matches, the decision that sorts first stands: any
# denial before any opening, the blacklist first among denials.
_SEVERITY = {
    BLACKLIST: 0,
    DISABLED: 1,
    EXPIRED: 2,
    NOT_YET_VALID: 3,
    WRONG_LANE: 4,
    OUTSIDE_HOURS: 5,
    UNKNOWN: 6,
    WHITELIST: 7,
}


def _severity(decision: Decision) -> tuple[bool, int]:
    return (decision.open, _SEVERITY.get(decision.reason, len(_SEVERITY)))


def _check_rule(rule: str, where: str) -> None:
    if rule not in ("deny", "allow"):
        raise ValueError(f"{where} must be 'deny' or 'allow', not {rule!r}")


class WhitelistPolicy:
    """The gate decision from the site's list (a ``GatePolicy``).

    ``decide`` works through, in order:

    1. :func:`~gateway.policy.decision.never_open`: offline records and
       no-plate reads are denied whatever the list says (a read that
       :func:`~gateway.policy.plates.is_no_plate` calls no plate, whatever
       the camera said, is a no-plate read too);
    2. the closest matching entries (see the module docstring: exact, then
       confusable, then edit distance up to ``max_plate_distance``; for a
       multi-region read, over all its regions);
    3. each of those entries gives a decision:

       * an enabled blacklist entry in force (lane, validity, hours) denies
         with ``BLACKLIST``;
       * an enabled allow entry in force opens with ``WHITELIST``;
       * an entry that matches but does not apply is as if the plate were
         unknown: the unknown-plate rule of the lane decides. When that rule
         denies, the reason says why the entry did not apply: ``DISABLED``,
         ``WRONG_LANE``, ``NOT_YET_VALID``, ``EXPIRED``, ``OUTSIDE_HOURS``
         (``UNKNOWN`` for a blacklist entry out of force: the plate is then
         simply unknown). When it allows, the reason is ``UNKNOWN``. So an
         exit lane that lets unknown cars out also lets out a car whose
         entry expired while it was parked.

       The matched entry still identifies the car: a looser match to another
       entry does not take over from it. When several entries match equally
       closely the read is ambiguous and the most restrictive decision
       stands: any denial over any opening, ``BLACKLIST`` first, then
       ``DISABLED``, ``EXPIRED``, ``NOT_YET_VALID``, ``WRONG_LANE``,
       ``OUTSIDE_HOURS``, ``UNKNOWN``;
    4. no match: the lane's unknown-plate rule, reason ``UNKNOWN``.

    ``Decision.plate`` is the normalised read; ``valid_until`` and ``note``
    come from the deciding entry. ``unknown_plate`` and ``lane_overrides``
    values are ``"deny"`` or ``"allow"``; ``tz`` is the site's time zone
    (weekly hours are its wall-clock time, and a naive ``PlateQuery.at`` is
    taken to be in it). The index is extended to ``max_plate_distance`` if
    needed (:meth:`WhitelistIndex.ensure_distance`) and read on every
    decision, so edits to it take effect at once.
    """

    def __init__(
        self,
        index: WhitelistIndex,
        *,
        tz: tzinfo,
        unknown_plate: str = "deny",
        lane_overrides: Mapping[str, str] | None = None,
        max_plate_distance: int = 0,
    ) -> None:
        _check_rule(unknown_plate, "unknown_plate")
        overrides = dict(lane_overrides or {})
        for lane, rule in overrides.items():
            _check_rule(rule, f"unknown_plate of lane {lane!r}")
        _check_distance(max_plate_distance)
        index.ensure_distance(max_plate_distance)
        self._index = index
        self._tz = tz
        self._unknown_plate = unknown_plate
        self._lane_overrides = overrides
        self._max_distance = max_plate_distance

    @property
    def index(self) -> WhitelistIndex:
        """The index the policy reads."""
        return self._index

    def unknown_allowed(self, lane: str | None) -> bool:
        """Whether an unlisted plate opens the barrier on ``lane``."""
        return self._lane_overrides.get(lane or "", self._unknown_plate) == "allow"

    def decide(self, query: PlateQuery) -> Decision:
        """Decide from memory; never blocks, never raises (an unexpected
        error denies, with the error's type in ``note``)."""
        fixed = never_open(query)
        if fixed is not None:
            return fixed
        plate = ""
        try:
            plate = normalise_plate(query.license)
            if is_no_plate(plate):
                return Decision(open=False, reason=NO_PLATE)  # as never_open() says it
            return self._decide(query, plate)
        except Exception as error:  # a gate decision must always be given
            return Decision(
                open=False,
                reason=UNKNOWN,
                plate=plate,
                note=f"policy error: {type(error).__name__}",
            )

    def _decide(self, query: PlateQuery, plate: str) -> Decision:
        at = query.at if query.at.utcoffset() is not None else query.at.replace(tzinfo=self._tz)
        unknown_allowed = self.unknown_allowed(query.lane)
        tier = self._index.closest(plate, self._max_distance)
        if tier:
            decisions = [
                self._entry_decision(match.entry, plate, at, query.lane, unknown_allowed)
                for match in tier
            ]
            # min() keeps the first of equals: the tier is ordered by plate.
            return min(decisions, key=_severity)
        return Decision(open=unknown_allowed, reason=UNKNOWN, source=LOCAL, plate=plate)

    def _entry_decision(
        self,
        entry: WhitelistEntry,
        plate: str,
        at: datetime,
        lane: str | None,
        unknown_allowed: bool,
    ) -> Decision:
        restriction = entry.restriction(at, lane, self._tz)
        if not entry.enabled:
            reason = DISABLED
        elif entry.blacklist:
            if restriction is None:
                return Decision(
                    open=False,
                    reason=BLACKLIST,
                    plate=plate,
                    valid_until=entry.valid_until,
                    note=entry.note,
                )
            reason = UNKNOWN
        elif restriction is None:
            return Decision(
                open=True,
                reason=WHITELIST,
                plate=plate,
                valid_until=entry.valid_until,
                note=entry.note,
            )
        else:
            reason = restriction
        return Decision(
            open=unknown_allowed,
            reason=UNKNOWN if unknown_allowed else reason,
            plate=plate,
            valid_until=entry.valid_until,
            note=entry.note,
        )
