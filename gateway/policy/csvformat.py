"""The whitelist as CSV: what site staff import from and export to a
spreadsheet.

Columns (header row required, any order, names case-insensitive; only
``plate`` is required)::

    plate, enabled, blacklist, valid_from, valid_until, lanes, hours, note

* ``enabled``, ``blacklist``: ``1``/``0``, ``true``/``false``, ``yes``/``no``,
  ``是``/``否``; empty means enabled, not blacklisted.
* ``valid_from``, ``valid_until``: ``YYYY-MM-DD``, ``YYYY-MM-DD HH:MM`` or
  ``YYYY-MM-DD HH:MM:SS`` in site local time (``/`` also accepted between
  date parts, as spreadsheets write them), or ISO 8601 with an offset
  (``2025-01-31T08:00:00+08:00``, ``...Z``). A ``valid_until`` date alone
  means the end of that day. Empty means unbounded.
* ``lanes``: lane names separated by ``;``; empty means every lane.
* ``hours``: weekly windows, ``Mon-Fri 07:00-19:00; Sat 08:00-12:00``
  (see :func:`gateway.policy.whitelist.parse_hours`); empty means any time.
* ``note``: free text, kept as written.

Bytes are read as UTF-8 (with or without the BOM spreadsheets add), else as
GB18030, the encoding of Chinese Windows spreadsheets.

Pure: no I/O.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence
from datetime import date, datetime, time, timedelta, timezone, tzinfo

import attrs

from gateway.policy.plates import is_no_plate, normalise_plate
from gateway.policy.whitelist import (
    ENTRY_SOURCES,
    WeeklyWindow,
    WhitelistEntry,
    format_hours,
    parse_hours,
)

__all__ = [
    "CSV_COLUMNS",
    "CsvImport",
    "CsvRowError",
    "format_local_datetime",
    "format_whitelist_csv",
    "parse_bool",
    "parse_local_datetime",
    "parse_whitelist_csv",
]

#: The columns of the whitelist CSV, in the order the export writes them.
CSV_COLUMNS: tuple[str, ...] = (
    "plate",
    "enabled",
    "blacklist",
    "valid_from",
    "valid_until",
    "lanes",
    "hours",
    "note",
)

_TRUE = frozenset({"1", "true", "yes", "是"})
_FALSE = frozenset({"0", "false", "no", "否"})

_END_OF_DAY = time(23, 59, 59, 999999)

_DATETIME_RE = re.compile(
    r"^(?P<year>\d{4})(?P<sep>[-/])(?P<month>\d{1,2})(?P=sep)(?P<day>\d{1,2})"
    r"(?:[ T](?P<hour>\d{1,2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:\.(?P<fraction>\d{1,6}))?)?"
    r"\s*(?P<offset>Z|[+-]\d{2}:?\d{2})?)?$",
    re.IGNORECASE,
)


@attrs.frozen
class CsvRowError:
    """Why one row (or the header) was not loaded. ``line`` is the 1-based
    line of the file where the row starts; ``column`` is the offending
    column, or ``None`` when the row as a whole is wrong."""

    line: int
    column: str | None
    reason: str


@attrs.frozen
class CsvImport:
    """The result of reading a whitelist CSV: the rows that loaded, and an
    error for each row that did not. A header error loads nothing."""

    entries: tuple[WhitelistEntry, ...]
    errors: tuple[CsvRowError, ...]


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


def _decode(data: str | bytes) -> str:
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = data.decode("gb18030", errors="replace")
    else:
        text = data
    return text.removeprefix("\ufeff")


class _RowErrors(Exception):
    """The errors of one row, raised to skip it."""

    def __init__(self, errors: list[tuple[str | None, str]]) -> None:
        super().__init__(errors)
        self.errors = errors


def _entry_from_row(cells: dict[str, str], source: str, tz: tzinfo) -> WhitelistEntry:
    errors: list[tuple[str | None, str]] = []

    def cell(column: str) -> str:
        # Spreadsheets pad cells; the note alone is kept exactly as written.
        value = cells.get(column, "")
        return value if column == "note" else value.strip()

    plate = normalise_plate(cell("plate"))
    if is_no_plate(plate):
        errors.append(("plate", "no plate"))

    flags: dict[str, bool] = {"enabled": True, "blacklist": False}
    for column in ("enabled", "blacklist"):
        if cell(column):
            try:
                flags[column] = parse_bool(cell(column))
            except ValueError as error:
                errors.append((column, str(error)))

    instants: dict[str, datetime | None] = {"valid_from": None, "valid_until": None}
    for column in ("valid_from", "valid_until"):
        if cell(column):
            try:
                instants[column] = parse_local_datetime(
                    cell(column), tz, end_of_day=column == "valid_until"
                )
            except ValueError as error:
                errors.append((column, str(error)))
    valid_from, valid_until = instants["valid_from"], instants["valid_until"]
    if valid_from is not None and valid_until is not None and valid_until < valid_from:
        errors.append(("valid_until", "before valid_from"))

    hours: tuple[WeeklyWindow, ...] = ()
    try:
        hours = parse_hours(cell("hours"))
    except ValueError as error:
        errors.append(("hours", str(error)))

    lanes = frozenset(lane.strip() for lane in cell("lanes").split(";") if lane.strip())

    if errors:
        raise _RowErrors(errors)
    try:
        return WhitelistEntry(
            plate=plate,
            enabled=flags["enabled"],
            blacklist=flags["blacklist"],
            valid_from=valid_from,
            valid_until=valid_until,
            hours=hours,
            lanes=lanes,
            note=cell("note"),
            source=source,
        )
    except (ValueError, OverflowError) as error:
        raise _RowErrors([(None, str(error))]) from None


def _read_header(cells: Sequence[str], line: int) -> tuple[list[str], list[CsvRowError]]:
    names = [name.strip().lower() for name in cells]
    errors: list[CsvRowError] = []
    seen: set[str] = set()
    for name, original in zip(names, cells):
        if name not in CSV_COLUMNS:
            errors.append(
                CsvRowError(
                    line, original.strip(), f"unknown column (known: {', '.join(CSV_COLUMNS)})"
                )
            )
        elif name in seen:
            errors.append(CsvRowError(line, name, "column appears twice"))
        seen.add(name)
    if "plate" not in seen:
        errors.append(CsvRowError(line, "plate", "the header has no plate column"))
    return names, errors


def parse_whitelist_csv(data: str | bytes, source: str = "csv", *, tz: tzinfo) -> CsvImport:
    """Read a whitelist CSV (see the module docstring for the columns).

    Every row that is valid becomes an entry with ``source``; every row that
    is not is skipped and reported with its 1-based line number, the column
    and the reason. A plate that appears twice is an error on the later
    line. Blank rows are ignored. A header with an unknown, repeated or
    missing column loads nothing: a misspelt ``valid_until`` must not load
    every row as valid for ever. Text that is not CSV (an unterminated
    quote, say) stops the reading there, with an error on that line; the
    rows before it load. Dates without an offset are in ``tz``, the site's
    time zone.
    """
    # strict: an unterminated quote is an error, not a note that swallows
    # the rest of the file.
    if source not in ENTRY_SOURCES:
        raise ValueError(f"unknown entry source {source!r}")
    reader = csv.reader(io.StringIO(_decode(data), newline=""), strict=True)
    entries: list[WhitelistEntry] = []
    errors: list[CsvRowError] = []
    first_lines: dict[str, int] = {}
    names: list[str] | None = None
    line = 1
    try:
        for cells in reader:
            # reader.line_num is the last physical line of the row just read
            # (a quoted note may span lines); report the row's first line.
            row_line, line = line, reader.line_num + 1
            if not any(cell.strip() for cell in cells):
                continue
            if names is None:
                names, header_errors = _read_header(cells, row_line)
                if header_errors:
                    return CsvImport(entries=(), errors=tuple(header_errors))
                continue
            if len(cells) > len(names):
                errors.append(
                    CsvRowError(
                        row_line,
                        None,
                        f"{len(cells)} cells, but the header has {len(names)} columns",
                    )
                )
                continue
            row = dict(zip(names, cells))
            plate = normalise_plate(row.get("plate", ""))
            if plate in first_lines:
                errors.append(
                    CsvRowError(
                        row_line, "plate", f"{plate} is already on line {first_lines[plate]}"
                    )
                )
                continue
            if not is_no_plate(plate):
                first_lines[plate] = row_line
            try:
                entries.append(_entry_from_row(row, source, tz))
            except _RowErrors as row_errors:
                errors.extend(
                    CsvRowError(row_line, column, reason) for column, reason in row_errors.errors
                )
    except csv.Error as error:
        errors.append(
            CsvRowError(line, None, f"not readable as CSV ({error}); reading stopped here")
        )
    if names is None:
        errors.append(CsvRowError(1, None, "no header row (plate, enabled, blacklist, ...)"))
    return CsvImport(entries=tuple(entries), errors=tuple(errors))


def format_whitelist_csv(entries: Iterable[WhitelistEntry], tz: tzinfo) -> str:
    """The CSV text of ``entries``, with a header row, which
    :func:`parse_whitelist_csv` reads back to equal entries (given the same
    ``tz`` and each entry's ``source``). Dates are written in site local
    time where that is exact. No BOM: add one when serving the file to a
    spreadsheet that needs it to recognise UTF-8."""
    output = io.StringIO()
    writer = csv.writer(output, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for entry in entries:
        writer.writerow(
            (
                entry.plate,
                "1" if entry.enabled else "0",
                "1" if entry.blacklist else "0",
                "" if entry.valid_from is None else format_local_datetime(entry.valid_from, tz),
                (
                    ""
                    if entry.valid_until is None
                    else format_local_datetime(entry.valid_until, tz, end_of_day=True)
                ),
                ";".join(sorted(entry.lanes)),
                format_hours(entry.hours),
                entry.note,
            )
        )
    return output.getvalue()
