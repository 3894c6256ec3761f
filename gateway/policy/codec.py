"""The one codec of plate list entries: the admin API's JSON, the CSV file's
cells and the cloud sync feed's JSON all become a :class:`WhitelistEntry`
through :class:`EntryCodec`, with one set of checks:

* ``plate``: normalised (:func:`~gateway.policy.plates.normalise_plate`);
  not a no-plate read; at most :data:`MAX_PLATE_CHARS` letters and digits;
* ``enabled``, ``blacklist``: yes/no (JSON ``true``/``false``; in CSV
  ``1``/``0``, ``true``/``false``, ``yes``/``no``, ``是``/``否``); empty or
  absent means enabled, not blacklisted;
* ``valid_from``, ``valid_until``: ``YYYY-MM-DD``, ``YYYY-MM-DD HH:MM[:SS]``
  in site local time (``/`` also accepted between date parts), or ISO 8601
  with an offset; a ``valid_until`` date alone means the end of that day;
  ``valid_until`` may not be before ``valid_from``;
* ``lanes``: names of configured lanes, matched without regard to case and
  stored in the configuration's spelling; an unknown lane refuses the entry
  (it would otherwise be denied ``wrong_lane`` on every lane, silently);
* ``hours``: weekly windows (:func:`~gateway.policy.whitelist.parse_hours`);
* ``note``: free text, at most :data:`MAX_NOTE_CHARS` characters.

Errors name the field and the reason (:class:`EntryError`), so the admin API
answers them per field, the CSV import per line and column, the sync feed per
entry index. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from typing import Any

import attrs

from gateway.policy.plates import is_no_plate, normalise_plate
from gateway.policy.whitelist import (
    ENTRY_SOURCES,
    WeeklyWindow,
    WhitelistEntry,
    format_hours,
    parse_hours,
)
from gateway.site import Lanes

__all__ = [
    "ENTRY_FIELDS",
    "MAX_HOURS_CHARS",
    "MAX_NOTE_CHARS",
    "MAX_PLATE_CHARS",
    "EntryCodec",
    "EntryError",
    "format_local_datetime",
    "parse_bool",
    "parse_local_datetime",
]

#: The fields of an entry, in the order the CSV export writes them.
ENTRY_FIELDS: tuple[str, ...] = (
    "plate",
    "enabled",
    "blacklist",
    "valid_from",
    "valid_until",
    "lanes",
    "hours",
    "note",
)
MAX_PLATE_CHARS = 32
MAX_NOTE_CHARS = 1000
MAX_HOURS_CHARS = 512
MAX_LANES = 64
# JSON keys accepted beside the fields: "source" is sent back as it was read
# (every entry is stored with the source of the request that brought it).
_IGNORED_JSON_KEYS = frozenset({"source"})

_TRUE = frozenset({"1", "true", "yes", "是"})
_FALSE = frozenset({"0", "false", "no", "否"})

_END_OF_DAY = time(23, 59, 59, 999999)

_DATETIME_RE = re.compile(
    r"^(?P<year>\d{4})(?P<sep>[-/])(?P<month>\d{1,2})(?P=sep)(?P<day>\d{1,2})"
    r"(?:[ T](?P<hour>\d{1,2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:\.(?P<fraction>\d{1,6}))?)?"
    r"\s*(?P<offset>Z|[+-]\d{2}:?\d{2})?)?$",
    re.IGNORECASE,
)


def parse_bool(text: str) -> bool:
    """``1``/``0``, ``true``/``false``, ``yes``/``no``, ``是``/``否`` (any
    case, surrounding spaces ignored). Raises ``ValueError`` otherwise."""
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(f"{text!r} is not a yes/no value (1/0, true/false, yes/no, 是/否)")


def parse_local_datetime(text: str, tz: tzinfo, *, end_of_day: bool = False) -> datetime:
    """A timezone-aware datetime from ``YYYY-MM-DD[ HH:MM[:SS]]`` in site
    local time ``tz``, or from ISO 8601 with an offset.

    A date alone is the start of that day, or with ``end_of_day`` its last
    instant (23:59:59.999999): how "valid until 2025-01-31" is meant. Raises
    ``ValueError`` with the reason on anything else.
    """
    match = _DATETIME_RE.match(text.strip())
    if match is None:
        raise ValueError(
            f"{text!r} is not a date (YYYY-MM-DD, YYYY-MM-DD HH:MM[:SS] or ISO 8601 with offset)"
        )
    try:
        day = date(int(match["year"]), int(match["month"]), int(match["day"]))
        if match["hour"] is None:
            clock = _END_OF_DAY if end_of_day else time(0)
        else:
            clock = time(
                int(match["hour"]),
                int(match["minute"]),
                int(match["second"] or 0),
                int((match["fraction"] or "0").ljust(6, "0")),
            )
        offset = match["offset"]
        zone = tz if offset is None else _fixed_offset(offset)
        value = datetime.combine(day, clock, tzinfo=zone)
        # Years at the edge of the calendar cannot be compared with times in
        # other zones; find out here rather than in the middle of a decision.
        value.astimezone(timezone.utc)
        return value
    except (ValueError, OverflowError) as error:
        raise ValueError(f"{text!r} is not a valid date: {error}") from None


def _fixed_offset(text: str) -> timezone:
    if text.upper() == "Z":
        return timezone.utc
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:])
    if hours > 23 or minutes > 59:
        raise ValueError(f"{text} is not a UTC offset")
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def _same_instant(a: datetime, b: datetime) -> bool:
    # Datetimes sharing a tzinfo compare by wall clock, ignoring fold;
    # comparing in UTC tells the two occurrences of a repeated hour apart.
    return a.astimezone(timezone.utc) == b.astimezone(timezone.utc)


def format_local_datetime(value: datetime, tz: tzinfo, *, end_of_day: bool = False) -> str:
    """The text :func:`parse_local_datetime` reads back to the same instant.

    Site local time when that is exact: ``YYYY-MM-DD`` for the start of a day
    (with ``end_of_day``: for its last instant), else ``YYYY-MM-DD
    HH:MM:SS``. ISO 8601 in UTC otherwise (fractions of a second, or a wall
    time that occurs twice when clocks go back).
    """
    try:
        local = value.astimezone(tz)
    except OverflowError:  # the first or last hours of the calendar
        return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    day_only = local.date().isoformat()
    if local.time() == (_END_OF_DAY if end_of_day else time(0)):
        if _same_instant(parse_local_datetime(day_only, tz, end_of_day=end_of_day), value):
            return day_only
    if not local.microsecond:
        text = local.strftime("%Y-%m-%d %H:%M:%S")
        if _same_instant(parse_local_datetime(text, tz), value):
            return text
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")



class EntryError(ValueError):
    """Why an entry was refused: ``errors`` maps a field (None: the entry as
    a whole) to the reason."""

    def __init__(self, errors: Mapping[str | None, str]) -> None:
        self.errors: dict[str | None, str] = dict(errors)
        super().__init__(
            "; ".join(
                reason if field is None else f"{field}: {reason}"
                for field, reason in self.errors.items()
            )
        )


def _json_flag(value: Any, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _cell_flag(value: Any, default: bool) -> bool:
    text = value.strip() if isinstance(value, str) else ""
    return parse_bool(text) if text else default


@attrs.frozen
class EntryCodec:
    """Reads and writes entries for the site with lanes ``lanes`` in time
    zone ``tz`` (dates without an offset are site local time)."""

    tz: tzinfo
    lanes: Lanes = Lanes()

    # -- reading ------------------------------------------------------------

    def from_json(self, value: Any, source: str, *, plate: str | None = None) -> WhitelistEntry:
        """An entry from a JSON object (admin API, cloud feed). ``plate``,
        when given, is the plate of the request's address: the body may omit
        it, and may not name another. Raises :class:`EntryError`."""
        if not isinstance(value, Mapping):
            raise EntryError({None: f"an entry must be a JSON object, not {type(value).__name__}"})
        errors: dict[str | None, str] = {}
        for key in value:
            if key not in ENTRY_FIELDS and key not in _IGNORED_JSON_KEYS:
                errors[str(key)] = "unknown field"
        raw_plate = value.get("plate", plate)
        if plate is not None and isinstance(raw_plate, str):
            if normalise_plate(raw_plate) != plate:
                errors["plate"] = f"differs from the plate in the address ({plate})"
        flags: dict[str, bool] = {}
        for name, default in (("enabled", True), ("blacklist", False)):
            try:
                flags[name] = _json_flag(value.get(name), default)
            except ValueError as error:
                errors[name] = str(error)
        texts: dict[str, str] = {}
        for name in ("valid_from", "valid_until", "hours", "note"):
            item = value.get(name)
            if item is None:
                texts[name] = ""
            elif isinstance(item, str):
                texts[name] = item
            else:
                errors[name] = "must be text or null"
        raw_lanes = value.get("lanes")
        lanes: list[str] = []
        if raw_lanes is None:
            pass
        elif isinstance(raw_lanes, list) and all(isinstance(lane, str) for lane in raw_lanes):
            lanes = raw_lanes
        else:
            errors["lanes"] = "must be a list of lane names"
        return self._build(raw_plate, flags, texts, lanes, source, errors)

    def from_cells(self, cells: Mapping[str, str], source: str) -> WhitelistEntry:
        """An entry from the cells of one CSV row (column name -> text;
        absent columns are empty). Raises :class:`EntryError`."""
        errors: dict[str | None, str] = {}

        def cell(column: str) -> str:
            # Spreadsheets pad cells; the note alone is kept exactly as written.
            text = cells.get(column) or ""
            return text if column == "note" else text.strip()

        flags: dict[str, bool] = {}
        for name, default in (("enabled", True), ("blacklist", False)):
            try:
                flags[name] = _cell_flag(cell(name), default)
            except ValueError as error:
                errors[name] = str(error)
        texts = {name: cell(name) for name in ("valid_from", "valid_until", "hours", "note")}
        lanes = [lane for lane in cell("lanes").split(";") if lane.strip()]
        return self._build(cell("plate"), flags, texts, lanes, source, errors)

    def _build(
        self,
        raw_plate: Any,
        flags: Mapping[str, bool],
        texts: Mapping[str, str],
        raw_lanes: Iterable[str],
        source: str,
        errors: dict[str | None, str],
    ) -> WhitelistEntry:
        if source not in ENTRY_SOURCES:
            raise ValueError(f"unknown entry source {source!r}")
        plate = ""
        if not isinstance(raw_plate, str):
            errors.setdefault("plate", "required")
        else:
            plate = normalise_plate(raw_plate)
            if is_no_plate(plate):
                errors.setdefault("plate", "not a plate")
            elif len(plate) > MAX_PLATE_CHARS:
                errors.setdefault("plate", f"at most {MAX_PLATE_CHARS} letters and digits")
        instants: dict[str, datetime | None] = {"valid_from": None, "valid_until": None}
        for name in instants:
            text = texts.get(name, "").strip()
            if text and name not in errors:
                try:
                    instants[name] = parse_local_datetime(
                        text, self.tz, end_of_day=name == "valid_until"
                    )
                except ValueError as error:
                    errors[name] = str(error)
        start, end = instants["valid_from"], instants["valid_until"]
        if start is not None and end is not None and end < start:
            errors["valid_until"] = "before valid_from"
        lanes: list[str] = []
        for name in raw_lanes:
            lane = self.lanes.canonical(name)
            if lane is None:
                errors["lanes"] = f"no lane {name.strip()!r} (lanes: {self.lanes.describe()})"
                break
            if lane not in lanes:
                lanes.append(lane)
        if len(lanes) > MAX_LANES:
            errors["lanes"] = f"at most {MAX_LANES} lanes"
        hours_text = texts.get("hours", "")
        hours: tuple[WeeklyWindow, ...] = ()
        if len(hours_text) > MAX_HOURS_CHARS:
            errors["hours"] = f"at most {MAX_HOURS_CHARS} characters"
        elif "hours" not in errors:
            try:
                hours = parse_hours(hours_text)
            except ValueError as error:
                errors["hours"] = str(error)
        note = texts.get("note", "")
        if len(note) > MAX_NOTE_CHARS:
            errors["note"] = f"at most {MAX_NOTE_CHARS} characters"
        if errors:
            raise EntryError(errors)
        try:
            return WhitelistEntry(
                plate=plate,
                enabled=flags["enabled"],
                blacklist=flags["blacklist"],
                valid_from=start,
                valid_until=end,
                hours=hours,
                lanes=frozenset(lanes),
                note=note,
                source=source,
            )
        except (ValueError, OverflowError) as error:
            raise EntryError({None: str(error)}) from None

    # -- writing ------------------------------------------------------------

    def to_json(self, entry: WhitelistEntry) -> dict[str, Any]:
        """The JSON object :meth:`from_json` reads back to an equal entry
        (times in the site's time zone, with their offset)."""

        def iso(value: datetime | None) -> str | None:
            return None if value is None else value.astimezone(self.tz).isoformat()

        return {
            "plate": entry.plate,
            "enabled": entry.enabled,
            "blacklist": entry.blacklist,
            "valid_from": iso(entry.valid_from),
            "valid_until": iso(entry.valid_until),
            "lanes": sorted(entry.lanes),
            "hours": format_hours(entry.hours),
            "note": entry.note,
            "source": entry.source,
        }

    def to_cells(self, entry: WhitelistEntry) -> tuple[str, ...]:
        """The CSV cells, in :data:`ENTRY_FIELDS` order, that
        :meth:`from_cells` reads back to an equal entry."""
        return (
            entry.plate,
            "1" if entry.enabled else "0",
            "1" if entry.blacklist else "0",
            "" if entry.valid_from is None else format_local_datetime(entry.valid_from, self.tz),
            (
                ""
                if entry.valid_until is None
                else format_local_datetime(entry.valid_until, self.tz, end_of_day=True)
            ),
            ";".join(sorted(entry.lanes)),
            format_hours(entry.hours),
            entry.note,
        )
