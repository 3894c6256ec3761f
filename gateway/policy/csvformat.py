"""The plate list as CSV: what site staff import from and export to a
spreadsheet, and what the watched plate list file holds.

Columns (header row required, any order, names case-insensitive; only
``plate`` is required)::

    plate, enabled, blacklist, valid_from, valid_until, lanes, hours, note

Each row's cells are read by the one entry codec
(:class:`gateway.policy.codec.EntryCodec`), with the same checks as the
admin API and the cloud feed; ``lanes`` are separated by ``;`` and must name
configured lanes (any case). Bytes are read as UTF-8 (with or without the
BOM spreadsheets add), else as GB18030, the encoding of Chinese Windows
spreadsheets.

Pure: no I/O.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterable, Iterator, Sequence

import attrs

from gateway.policy.codec import ENTRY_FIELDS, EntryCodec, EntryError
from gateway.policy.plates import is_no_plate, normalise_plate
from gateway.policy.whitelist import ENTRY_SOURCES, WhitelistEntry

__all__ = [
    "CSV_COLUMNS",
    "CsvImport",
    "CsvRowError",
    "format_whitelist_csv",
    "guard_cell",
    "parse_whitelist_csv",
]

#: The columns of the CSV, in the order the export writes them.
CSV_COLUMNS: tuple[str, ...] = ENTRY_FIELDS


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


# Files are decoded a piece at a time: decoding 20 MB in one call would hold
# the interpreter lock (and so the event loop, although this runs in a
# thread) for as long as it takes.
_PIECE = 64 * 1024


def _encoding(data: bytes) -> str:
    """UTF-8 (with or without a BOM) if the whole file is, else GB18030."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        for start in range(0, len(data), _PIECE):
            decoder.decode(data[start : start + _PIECE])
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return "gb18030"
    return "utf-8-sig"


def _lines(data: str | bytes) -> Iterator[str]:
    """The file's lines, each with its line end, split as ``csv`` wants
    (on ``\r``, ``\n`` and ``\r\n`` only)."""
    if isinstance(data, str):
        yield from io.StringIO(data.removeprefix("\ufeff"), newline="")
        return
    encoding = _encoding(data)
    decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
    pending = ""
    for start in range(0, len(data), _PIECE):
        text = pending + decoder.decode(data[start : start + _PIECE])
        pending = ""
        if text.endswith("\r"):
            text, pending = text[:-1], "\r"  # its "\n" may open the next piece
        for line in io.StringIO(text, newline=""):
            if line.endswith(("\n", "\r")):
                yield line
            else:
                pending = line + pending
    tail = pending + decoder.decode(b"", final=True)
    if tail:
        yield tail


def _read_header(cells: Sequence[str], line: int) -> tuple[list[str], list[CsvRowError]]:
    names = [name.strip().lower() for name in cells]
    errors: list[CsvRowError] = []
    seen: set[str] = set()
    for name, original in zip(names, cells, strict=True):
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


def parse_whitelist_csv(
    data: str | bytes, codec: EntryCodec, source: str = "csv"
) -> CsvImport:
    """Read a plate list CSV (see the module docstring for the columns).

    Every row that is valid becomes an entry with ``source``; every row that
    is not is skipped and reported with its 1-based line number, the column
    and the reason. A plate that appears twice is an error on the later
    line. Blank rows are ignored. A header with an unknown, repeated or
    missing column loads nothing: a misspelt ``valid_until`` must not load
    every row as valid for ever. Text that is not CSV (an unterminated
    quote, say) stops the reading there, with an error on that line; the
    rows before it load.
    """
    if source not in ENTRY_SOURCES:
        raise ValueError(f"unknown entry source {source!r}")
    # strict: an unterminated quote is an error, not a note that swallows
    # the rest of the file.
    reader = csv.reader(_lines(data), strict=True)
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
            # Fewer cells than columns: the missing ones are empty.
            row = {name: _unguarded(cell) for name, cell in zip(names, cells, strict=False)}
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
                entries.append(codec.from_cells(row, source))
            except EntryError as error:
                errors.extend(
                    CsvRowError(row_line, column, reason) for column, reason in error.errors.items()
                )
    except csv.Error as error:
        errors.append(
            CsvRowError(line, None, f"not readable as CSV ({error}); reading stopped here")
        )
    if names is None:
        errors.append(CsvRowError(1, None, "no header row (plate, enabled, blacklist, ...)"))
    return CsvImport(entries=tuple(entries), errors=tuple(errors))


def format_whitelist_csv(entries: Iterable[WhitelistEntry], codec: EntryCodec) -> str:
    """The CSV text of ``entries``, with a header row, which
    :func:`parse_whitelist_csv` reads back to equal entries (given the same
    codec and each entry's ``source``). Dates are written in site local
    time where that is exact. No BOM: add one when serving the file to a
    spreadsheet that needs it to recognise UTF-8."""
    output = io.StringIO()
    writer = csv.writer(output, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for entry in entries:
        writer.writerow([guard_cell(cell) for cell in codec.to_cells(entry)])
    return output.getvalue()


# A cell a spreadsheet would run as a formula (=, +, -, @, or a tab or
# carriage return before one) is written with a leading apostrophe, which
# spreadsheets show as text; reading the file back drops it again.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def guard_cell(cell: str) -> str:
    """``cell`` as a spreadsheet shows it as text: with a leading apostrophe
    when it would otherwise run as a formula (``=``, ``+``, ``-``, ``@``, a
    tab or a carriage return first). Every CSV the gateway writes for people
    goes through this."""
    return "'" + cell if cell.startswith(_FORMULA_START) else cell


def _unguarded(cell: str) -> str:
    if cell.startswith("'") and cell[1:].startswith(_FORMULA_START):
        return cell[1:]
    return cell
