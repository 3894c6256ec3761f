"""One entry codec for the three sources of the plate list: a CSV row, a cloud
feed entry and an admin API body with the same content give the same entry,
and every source refuses the same things, saying where."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import attrs
import pytest

from gateway.policy.codec import MAX_NOTE_CHARS, MAX_PLATE_CHARS, EntryCodec, EntryError
from gateway.policy.csvformat import parse_whitelist_csv
from gateway.site import Lanes
from gateway.upstream.feed import parse_sync_page

SITE = ZoneInfo("Asia/Shanghai")
CODEC = EntryCodec(tz=SITE, lanes=Lanes.of_names("Entrance", "Exit"))
HEADER = "plate,enabled,blacklist,valid_from,valid_until,lanes,hours,note\n"


def from_csv(row: str) -> list[str]:
    """The errors of a one-row CSV file, or the entry's plate."""
    result = parse_whitelist_csv(HEADER + row + "\n", CODEC)
    return [f"line {e.line} {e.column}: {e.reason}" for e in result.errors] or [
        entry.plate for entry in result.entries
    ]


def feed_page(*entries: object) -> bytes:
    return json.dumps({"cursor": "1", "whitelist": {"upsert": list(entries)}}).encode()


def test_the_three_sources_give_the_same_entry() -> None:
    (from_file,) = parse_whitelist_csv(
        HEADER + "京a·12345,1,0,2025-01-01,2025-12-31,entrance;EXIT,Mon-Fri 07:00-19:00,tenant\n",
        CODEC,
    ).entries
    body = {
        "plate": "京a·12345",
        "enabled": True,
        "blacklist": False,
        "valid_from": "2025-01-01",
        "valid_until": "2025-12-31",
        "lanes": ["entrance", "EXIT"],
        "hours": "Mon-Fri 07:00-19:00",
        "note": "tenant",
    }
    from_admin = CODEC.from_json(body, "admin")
    (from_cloud,) = parse_sync_page(feed_page(body), CODEC).whitelist.upsert
    assert from_file.lanes == frozenset({"Entrance", "Exit"})  # the configured spelling
    assert from_file.plate == "京A12345"
    assert from_file.valid_until == datetime(2025, 12, 31, 15, 59, 59, 999999, tzinfo=timezone.utc)
    assert (from_file.source, from_admin.source, from_cloud.source) == ("csv", "admin", "cloud")
    assert attrs.evolve(from_admin, source="csv") == from_file
    assert attrs.evolve(from_cloud, source="csv") == from_file
    # What the admin API sends back reads back to the same entry.
    assert CODEC.from_json(CODEC.to_json(from_admin), "admin") == from_admin
    assert CODEC.from_cells(dict(zip(HEADER.strip().split(","), CODEC.to_cells(from_file), strict=True)), "csv") == from_file


@pytest.mark.parametrize(
    ("cells", "field", "reason"),
    [
        ("京A12345,,,,,Entrnace,,", "lanes", "no lane 'Entrnace' (lanes: Entrance, Exit)"),
        ("_无_,,,,,,,", "plate", "not a plate"),
        ("京A" + "1" * MAX_PLATE_CHARS + ",,,,,,,", "plate", f"at most {MAX_PLATE_CHARS} letters and digits"),
        ("京A12345,,,2025-02-01,2025-01-01,,,", "valid_until", "before valid_from"),
        ("京A12345,,,,,,,"+ "n" * (MAX_NOTE_CHARS + 1), "note", f"at most {MAX_NOTE_CHARS} characters"),
    ],
)
def test_every_source_refuses_the_same_entry_saying_where(cells: str, field: str, reason: str) -> None:
    # The CSV file: by line and column.
    assert from_csv(cells) == [f"line 2 {field}: {reason}"]
    plate, _, _, start, end, lanes, _, note = cells.split(",")
    body = {
        "plate": plate,
        "valid_from": start or None,
        "valid_until": end or None,
        "lanes": [lanes] if lanes else [],
        "note": note,
    }
    # The admin API: by field.
    with pytest.raises(EntryError) as refused:
        CODEC.from_json(body, "admin")
    assert refused.value.errors == {field: reason}
    # The cloud feed: by the entry's index in the page, the rest still taken.
    page = parse_sync_page(feed_page({"plate": "京B00001"}, body), CODEC)
    assert [entry.plate for entry in page.whitelist.upsert] == ["京B00001"]
    (rejected,) = page.whitelist.rejected
    assert rejected.startswith("upsert entry 1")
    assert f"{field}: {reason}" in rejected


def test_json_types_are_checked_and_unknown_fields_refused() -> None:
    with pytest.raises(EntryError) as refused:
        CODEC.from_json(
            {"plate": "京A12345", "enabled": "yes", "lanes": "Entrance", "colour": "red"}, "cloud"
        )
    assert refused.value.errors == {
        "colour": "unknown field",
        "enabled": "must be true or false",
        "lanes": "must be a list of lane names",
    }
    # "source" is what the API sends back: accepted and not taken from the body.
    entry = CODEC.from_json({"plate": "京A12345", "source": "cloud"}, "admin")
    assert entry.source == "admin"


def test_a_site_without_lanes_refuses_any_lane() -> None:
    codec = EntryCodec(tz=SITE)
    with pytest.raises(EntryError) as refused:
        codec.from_json({"plate": "京A12345", "lanes": ["Entrance"]}, "admin")
    assert refused.value.errors == {"lanes": "no lane 'Entrance' (lanes: none configured)"}
