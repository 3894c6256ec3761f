"""The whitelist CSV: import with per-row errors, export, round trip."""

from __future__ import annotations

import csv
import io
from datetime import datetime, time, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.policy.codec import (
    EntryCodec,
    format_local_datetime,
    parse_bool,
    parse_local_datetime,
)
from gateway.policy.csvformat import (
    CSV_COLUMNS,
    CsvRowError,
    format_whitelist_csv,
    parse_whitelist_csv,
)
from gateway.policy.whitelist import WeeklyWindow, WhitelistEntry, parse_hours
from gateway.site import Lanes

LANES = Lanes.of_names("north-in", "north-out", "south", "north", "east", "west")


def codec(tz: tzinfo) -> EntryCodec:
    """The codec of a site with this module's lanes."""
    return EntryCodec(tz=tz, lanes=LANES)

SITE = ZoneInfo("Asia/Shanghai")
PARIS = ZoneInfo("Europe/Paris")


def test_full_row() -> None:
    text = (
        "plate,enabled,blacklist,valid_from,valid_until,lanes,hours,note\n"
        "京a·12345,1,0,2025-01-01,2025-12-31,north-in; north-out,Mon-Fri 07:00-19:00,tenant 12\n"
    )
    result = parse_whitelist_csv(text, codec(SITE))
    assert result.errors == ()
    assert result.entries == (
        WhitelistEntry(
            plate="京A12345",
            enabled=True,
            blacklist=False,
            valid_from=datetime(2025, 1, 1, tzinfo=SITE),
            valid_until=datetime(2025, 12, 31, 23, 59, 59, 999999, tzinfo=SITE),
            lanes=frozenset({"north-in", "north-out"}),
            hours=(WeeklyWindow(days=frozenset(range(5)), start=time(7), end=time(19)),),
            note="tenant 12",
            source="csv",
        ),
    )


def test_columns_in_any_order_and_only_plate_required() -> None:
    text = "Note , PLATE,blacklist\n  VIP ,粤B12345,yes\n"
    (entry,) = parse_whitelist_csv(text, codec(SITE), "admin").entries
    assert entry == WhitelistEntry(plate="粤B12345", blacklist=True, note="  VIP ", source="admin")
    (plain,) = parse_whitelist_csv("plate\n京A12345\n", codec(SITE)).entries
    assert plain == WhitelistEntry("京A12345", source="csv")


def test_defaults_for_empty_cells() -> None:
    (entry,) = parse_whitelist_csv(
        "plate,enabled,blacklist,lanes,hours\n京A12345,,,,\n", codec(SITE)).entries
    assert (entry.enabled, entry.blacklist, entry.lanes, entry.hours) == (
        True,
        False,
        frozenset(),
        (),
    )
    assert (entry.valid_from, entry.valid_until) == (None, None)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", True),
        ("0", False),
        ("true", True),
        ("FALSE", False),
        ("Yes", True),
        (" no ", False),
        ("是", True),
        ("否", False),
    ],
)
def test_booleans(text: str, value: bool) -> None:
    assert parse_bool(text) is value


def test_utf8_with_bom_and_gb18030() -> None:
    text = "plate,note\r\n京A12345,地下车库\r\n"
    for data in (
        text.encode("utf-8-sig"),
        text.encode("utf-8"),
        text.encode("gb18030"),
        "\ufeff" + text,
    ):
        result = parse_whitelist_csv(data, codec(SITE))
        assert result.errors == ()
        assert [(e.plate, e.note) for e in result.entries] == [("京A12345", "地下车库")]


def test_dates() -> None:
    assert parse_local_datetime("2025-01-31", SITE) == datetime(2025, 1, 31, tzinfo=SITE)
    assert parse_local_datetime("2025-01-31", SITE, end_of_day=True) == datetime(
        2025, 1, 31, 23, 59, 59, 999999, tzinfo=SITE
    )
    assert parse_local_datetime("2025-01-31 08:30", SITE) == datetime(
        2025, 1, 31, 8, 30, tzinfo=SITE
    )
    assert parse_local_datetime("2025/1/31 8:30:15", SITE) == datetime(
        2025, 1, 31, 8, 30, 15, tzinfo=SITE
    )
    assert parse_local_datetime("2025-01-31T08:30:00+01:00", SITE) == datetime(
        2025, 1, 31, 7, 30, tzinfo=timezone.utc
    )
    assert parse_local_datetime("2025-01-31T08:30:00.5Z", SITE) == datetime(
        2025, 1, 31, 8, 30, 0, 500000, tzinfo=timezone.utc
    )
    assert parse_local_datetime("2025-01-31 08:30 -0330", SITE) == datetime(
        2025, 1, 31, 12, 0, tzinfo=timezone.utc
    )
    # A time given with its date keeps that time, even in valid_until.
    (entry,) = parse_whitelist_csv(
        "plate,valid_until\n京A12345,2025-01-31 18:00\n", codec(SITE)).entries
    assert entry.valid_until == datetime(2025, 1, 31, 18, 0, tzinfo=SITE)


@pytest.mark.parametrize(
    "text",
    [
        "31/01/2025",
        "2025-13-01",
        "2025-02-30",
        "2025-01-31 25:00",
        "2025-01-31+08:00",
        "tomorrow",
        "0001-01-01",
    ],
)
def test_bad_dates(text: str) -> None:
    with pytest.raises(ValueError):
        parse_local_datetime(text, SITE)


def test_bad_rows_are_reported_with_their_lines_and_good_rows_load() -> None:
    text = (
        "plate,enabled,blacklist,valid_from,valid_until,lanes,hours,note\n"  # 1
        "京A00001,1,0,,,,,ok\n"  # 2
        "京A00002,maybe,0,,,,,\n"  # 3: bad boolean
        "\n"  # 4: blank
        "京A00003,1,0,2025-31-01,,,,\n"  # 5: bad date
        '京A00004,1,0,,,,,"a note\n'  # 6: a quoted note over two lines...
        'on two lines"\n'  # 7
        "京A00005,1,0,,,,Mon 07:00,\n"  # 8: bad hours
        "京A00006,1,0,2025-02-01,2025-01-01,,,\n"  # 9: ends before it starts
        "_无_,1,0,,,,,\n"  # 10: no plate
        "京A00007,1,0,,,,,,extra\n"  # 11: too many cells
        "京A 00001,0,0,,,,,\n"  # 12: duplicate of line 2 once normalised
        "京A00008,yes,是,,2025-12-31,,,\n"  # 13
        "京A00009,x,y,,,,,\n"  # 14: two bad cells
    )
    result = parse_whitelist_csv(text, codec(SITE))
    assert [entry.plate for entry in result.entries] == ["京A00001", "京A00004", "京A00008"]
    assert result.entries[1].note == "a note\non two lines"
    assert result.entries[2].blacklist
    assert [(error.line, error.column) for error in result.errors] == [
        (3, "enabled"),
        (5, "valid_from"),
        (8, "hours"),
        (9, "valid_until"),
        (10, "plate"),
        (11, None),
        (12, "plate"),
        (14, "enabled"),
        (14, "blacklist"),
    ]
    assert "line 2" in result.errors[6].reason
    assert "maybe" in result.errors[0].reason


def test_duplicate_is_reported_even_when_the_first_row_failed() -> None:
    text = "plate,enabled\n京A12345,perhaps\n京A12345,1\n"
    result = parse_whitelist_csv(text, codec(SITE))
    assert result.entries == ()
    assert [(error.line, error.column) for error in result.errors] == [(2, "enabled"), (3, "plate")]


def test_unknown_column_loads_nothing() -> None:
    result = parse_whitelist_csv("plate,valid_untill\n京A12345,2025-01-01\n", codec(SITE))
    assert result.entries == ()
    assert result.errors == (
        CsvRowError(line=1, column="valid_untill", reason=result.errors[0].reason),
    )
    assert "unknown column" in result.errors[0].reason


@pytest.mark.parametrize(
    ("text", "line", "column"),
    [
        ("note\nsomething\n", 1, "plate"),
        ("plate,note,NOTE\n京A12345,a,b\n", 1, "note"),
        ("\n\nplate,colour\n", 3, "colour"),
        ("", 1, None),
        ("\n \n", 1, None),
    ],
)
def test_header_errors(text: str, line: int, column: str | None) -> None:
    result = parse_whitelist_csv(text, codec(SITE))
    assert result.entries == ()
    assert [(error.line, error.column) for error in result.errors] == [(line, column)]


def test_unreadable_csv_is_an_error_not_an_exception() -> None:
    unterminated = 'plate,note\n京A12345,ok\n京A12346,"never closed\n京A12347,lost\n'
    result = parse_whitelist_csv(unterminated, codec(SITE))
    assert [entry.plate for entry in result.entries] == ["京A12345"]
    assert [(error.line, error.column) for error in result.errors] == [(3, None)]
    oversized = "plate,note\n京A12345,ok\n\n京A12346," + "x" * 200_000 + "\n"
    result = parse_whitelist_csv(oversized, codec(SITE))
    assert [entry.plate for entry in result.entries] == ["京A12345"]
    assert [(error.line, error.column) for error in result.errors] == [(4, None)]


def test_format() -> None:
    entries = [
        WhitelistEntry(
            "京A12345",
            valid_from=datetime(2025, 1, 1, tzinfo=SITE),
            valid_until=datetime(2025, 12, 31, 23, 59, 59, 999999, tzinfo=SITE),
            lanes=frozenset({"south", "north"}),
            hours=parse_hours("Mon-Fri 07:00-19:00; Sat 08:00-12:00"),
            note='says "hi", twice',
        ),
        WhitelistEntry(
            "粤B77777",
            enabled=False,
            blacklist=True,
            valid_from=datetime(2025, 3, 1, 8, 30, tzinfo=timezone.utc),
        ),
    ]
    text = format_whitelist_csv(entries, codec(SITE))
    assert text.split("\r\n") == [
        ",".join(CSV_COLUMNS),
        "京A12345,1,0,2025-01-01,2025-12-31,north;south,Mon-Fri 07:00-19:00; Sat 08:00-12:00,"
        '"says ""hi"", twice"',
        "粤B77777,0,1,2025-03-01 16:30:00,,,,",
        "",
    ]


def test_format_falls_back_to_utc_when_local_time_is_ambiguous() -> None:
    # 02:30 on 2025-10-26 happens twice in Paris; the second one is 01:30 UTC.
    second = datetime(2025, 10, 26, 2, 30, tzinfo=PARIS, fold=1)
    assert format_local_datetime(second, PARIS) == "2025-10-26T01:30:00Z"
    first = datetime(2025, 10, 26, 2, 30, tzinfo=PARIS, fold=0)
    assert format_local_datetime(first, PARIS) == "2025-10-26 02:30:00"
    assert format_local_datetime(datetime(2025, 1, 1, 0, 0, 0, 1, tzinfo=PARIS), PARIS) == (
        "2024-12-31T23:00:00.000001Z"
    )


# --------------------------------------------------------------------------
# Round trip

PROVINCES = "京沪粤苏浙川"
instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(timezone.utc)
)
# Whole days, whole seconds and arbitrary instants all occur in practice.
validity = st.one_of(
    st.none(),
    instants,
    instants.map(lambda value: value.replace(microsecond=0)),
    st.dates(min_value=datetime(2000, 1, 1).date(), max_value=datetime(2099, 1, 1).date()).map(
        lambda day: datetime.combine(day, time(0), tzinfo=SITE)
    ),
)
windows = st.builds(
    WeeklyWindow,
    days=st.frozensets(st.integers(0, 6), min_size=1),
    start=st.times().map(lambda value: value.replace(microsecond=0)),
    end=st.times().map(lambda value: value.replace(microsecond=0)),
)
lane_names = st.sampled_from(LANES.names)


@st.composite
def entries(draw: st.DrawFn) -> WhitelistEntry:
    start = draw(validity)
    end = draw(validity)
    if start is not None and end is not None and end < start:
        start, end = end, start
    if end is not None and end.tzinfo is SITE:
        end = end + timedelta(days=1) - timedelta(microseconds=1)  # a whole day, as a date reads
    return WhitelistEntry(
        plate=draw(st.sampled_from(PROVINCES))
        + draw(st.text(alphabet="ABCDEFGHJK0123456789", min_size=5, max_size=7)),
        enabled=draw(st.booleans()),
        blacklist=draw(st.booleans()),
        valid_from=start,
        valid_until=end,
        hours=tuple(draw(st.lists(windows, max_size=3))),
        lanes=frozenset(draw(st.lists(lane_names, max_size=3))),
        note=draw(st.text(alphabet=st.characters(blacklist_categories=["Cs"]))),
        source="csv",
    )


@given(
    st.lists(entries(), max_size=5, unique_by=lambda entry: entry.plate),
    st.sampled_from([SITE, PARIS, timezone.utc]),
)
def test_round_trip(listed: list[WhitelistEntry], tz: ZoneInfo) -> None:
    text = format_whitelist_csv(listed, codec(tz))
    result = parse_whitelist_csv(text, codec(tz))
    assert result.errors == ()
    assert list(result.entries) == listed
    assert parse_whitelist_csv(text.encode("utf-8-sig"), codec(tz)).entries == result.entries


@pytest.mark.parametrize("piece", [1, 2, 3, 7, 64 * 1024])
@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-8", "gb18030"])
def test_a_file_is_decoded_piece_by_piece_whatever_the_piece_size(
    piece: int, encoding: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Large files are decoded a piece at a time (so the reading thread lets
    the event loop in); a character or a line end cut between two pieces
    reads as if whole."""
    import gateway.policy.csvformat as csvformat

    monkeypatch.setattr(csvformat, "_PIECE", piece)
    text = 'plate,note\r\n京A12345,"粤 a\r\nb"\r\n京A22222,x\r京A33333,\n'
    result = parse_whitelist_csv(text.encode(encoding), codec(SITE))
    assert result.errors == ()
    assert [(e.plate, e.note) for e in result.entries] == [
        ("京A12345", "粤 a\r\nb"),
        ("京A22222", "x"),
        ("京A33333", ""),
    ]


def test_cells_a_spreadsheet_would_run_are_exported_as_text_and_read_back() -> None:
    codec = EntryCodec(tz=ZoneInfo("Asia/Shanghai"), lanes=LANES)
    entries = [
        WhitelistEntry(plate="京A00001", note='=HYPERLINK("http://x.example","pay")', source="admin"),
        WhitelistEntry(plate="京A00002", note="+86 138 0000 0000", source="admin"),
        WhitelistEntry(plate="京A00003", note="@SUM(A1:A9)", source="admin"),
        WhitelistEntry(plate="京A00004", note="- VIP, gate 2", source="admin"),
        WhitelistEntry(plate="京A00005", note="'quoted' already", source="admin"),
    ]
    text = format_whitelist_csv(entries, codec)
    notes = [row[CSV_COLUMNS.index("note")] for row in csv.reader(io.StringIO(text))][1:]
    assert notes == [
        '\'=HYPERLINK("http://x.example","pay")',
        "'+86 138 0000 0000",
        "'@SUM(A1:A9)",
        "'- VIP, gate 2",
        "'quoted' already",
    ]
    read = parse_whitelist_csv(text, codec, "admin")
    assert read.errors == ()
    assert [entry.note for entry in read.entries] == [entry.note for entry in entries]
