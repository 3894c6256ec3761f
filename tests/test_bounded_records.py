"""Every input bounded before it costs: an event's raw record within its
limits (what was cut said in the record, the event, plate and decision
kept), bodies of nothing but tiny JSON values refused before they are parsed,
and the admin API's event pages bounded in bytes."""

from __future__ import annotations

import json
import zlib
from typing import Any

import pytest

from gateway.protocol import ProtocolError
from gateway.protocol.messages import PlateResult
from gateway.protocol.parse import MAX_JSON_VALUES, parse_push
from gateway.store import EventType
from gateway.store.bounded import CUT_KEY, RecordLimits, bound_record
from support.admin import ENTRANCE, AdminTestCase, Camera
from support.gateway import plate_body
from support.store import db_rows

LIMITS = RecordLimits()
HUGE_TEXT = 7_500_000


def encoded_size(record: dict[str, Any]) -> int:
    return len(json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


# ---------------------------------------------------------------- the record


def test_a_real_push_is_kept_whole_and_unflagged() -> None:
    raw = {
        "PlateResult": {"license": "京A12345", "plateid": 7, "confidence": 91, "timeStamp": {}},
        "serialno": "d85b1269-8f942256",
        "user_data": "bay 4",
        "dialect": "vzenith",
    }
    assert bound_record(raw, LIMITS) == raw


def test_a_huge_text_field_is_cut_and_the_cut_is_said() -> None:
    raw = {
        "PlateResult": {"license": "京A12345", "plateid": 7, "userData": "x" * HUGE_TEXT},
        "dialect": "vzenith",
    }
    kept = bound_record(raw, LIMITS)
    assert encoded_size(kept) <= LIMITS.max_record_bytes
    assert kept["PlateResult"]["license"] == "京A12345"
    assert kept["PlateResult"]["plateid"] == 7
    assert kept["PlateResult"]["userData"] == "x" * LIMITS.max_text_chars
    assert kept[CUT_KEY] == {
        "maxRecordBytes": 65_536,
        "parts": [
            {"path": "PlateResult.userData", "type": "text", "size": HUGE_TEXT, "kept": 4096, "why": "text"}
        ],
        "moreParts": 0,
    }


def test_long_arrays_wide_objects_and_deep_nesting_are_cut_and_said() -> None:
    deep: dict[str, Any] = {}
    inner = deep
    for _ in range(40):
        inner["next"] = {}
        inner = inner["next"]
    raw = {
        "list": [{}] * 2_500_000,
        "wide": {f"k{i}": i for i in range(1000)},
        "deep": deep,
        "k" * 5000: 1,
    }
    kept = bound_record(raw, LIMITS)
    assert encoded_size(kept) <= LIMITS.max_record_bytes
    assert len(kept["list"]) == 256
    assert len(kept["wide"]) == 256
    parts = {(part["path"][:20], part["why"]): part for part in kept[CUT_KEY]["parts"]}
    assert parts[("list", "items")]["size"] == 2_500_000
    assert parts[("wide", "items")]["size"] == 1000
    nesting = next(part for part in kept[CUT_KEY]["parts"] if part["why"] == "nesting")
    assert nesting["path"].startswith("deep.next.next")
    depth, node = 0, kept["deep"]
    while node:
        node, depth = node["next"], depth + 1
    assert depth < LIMITS.max_nesting
    key_cut = next(part for part in kept[CUT_KEY]["parts"] if part["why"] == "key")
    assert key_cut["size"] == 5000
    assert "k" * 128 in kept


def test_the_whole_record_is_capped_small_fields_first() -> None:
    # Many fields, each under the text limit, together far over the record's.
    raw: dict[str, Any] = {f"extra{i}": "y" * 4000 for i in range(200)}
    raw["license"] = "京A12345"
    raw["plateid"] = 7
    kept = bound_record(raw, LIMITS)
    assert encoded_size(kept) <= LIMITS.max_record_bytes
    assert (kept["license"], kept["plateid"]) == ("京A12345", 7)
    summary = kept[CUT_KEY]
    left_out = len(summary["parts"]) + summary["moreParts"]
    assert left_out == 200 - sum(1 for key in kept if key.startswith("extra"))
    assert all(part["why"] == "record" and part["size"] == 4000 for part in summary["parts"])


@pytest.mark.parametrize("limit", [4096, 10_000, 65_536, 1_048_576])
def test_the_record_cap_holds_for_any_limit_and_non_ascii_text(limit: int) -> None:
    limits = RecordLimits(max_record_bytes=limit, max_text_chars=1_048_576)
    raw = {f"字段{i}": "京" * 3000 + '"\\' * 100 for i in range(600)}
    kept = bound_record(raw, limits)
    assert encoded_size(kept) <= limit
    assert CUT_KEY in kept


# ---------------------------------------------------------------- the parse


def test_a_body_of_countless_tiny_values_is_refused_before_it_is_parsed() -> None:
    body = json.dumps(
        {"AlarmInfoPlate": {"serialno": "abc", "result": {"PlateResult": {"license": "A1"}},
                            "list": [[]] * (MAX_JSON_VALUES + 10)}},
        separators=(",", ":"),
    ).encode()
    with pytest.raises(ProtocolError, match="more than 100000 values"):
        parse_push(body)


def test_commas_inside_a_text_are_not_values() -> None:
    body = plate_body("abc", "京A12345", note="," * (MAX_JSON_VALUES * 3))
    message = parse_push(body)
    assert isinstance(message, PlateResult)
    assert message.raw["note"] == "," * (MAX_JSON_VALUES * 3)


# ---------------------------------------------------------------- through the camera server


class HugePushTests(AdminTestCase):
    async def test_a_push_with_a_huge_field_is_answered_and_kept_bounded(self) -> None:
        await self.build()
        camera = Camera(self.camera_server)
        answer = await camera.post(plate_body(ENTRANCE, "京A12345", plateid=9, userData="x" * HUGE_TEXT))
        self.assertIn("Response_AlarmInfoPlate", answer)
        (record,) = await self.store.recent_events(10, type=EventType.PLATE)
        self.assertEqual((record.plate, record.license), ("京A12345", "京A12345"))
        self.assertIsNotNone(record.decision_open)
        self.assertEqual(record.raw["PlateResult"]["plateid"], 9)
        cut = record.raw[CUT_KEY]["parts"]
        self.assertEqual(cut[0]["path"], "PlateResult.userData")
        self.assertEqual(cut[0]["size"], HUGE_TEXT)
        ((stored,),) = db_rows(self.state_dir, "SELECT raw_z FROM events WHERE type = 'plate'")
        self.assertLessEqual(len(zlib.decompress(stored)), LIMITS.max_record_bytes)

    async def test_event_pages_are_bounded_in_bytes_and_page_through_everything(self) -> None:
        await self.build()
        camera = Camera(self.camera_server)
        for plateid in range(40):
            # Each field under the text limit, the whole at the record's cap.
            extras = {f"extra{i}": f"{plateid:04d}" + "z" * 3996 for i in range(20)}
            answer = await camera.post(plate_body(ENTRANCE, f"京A{plateid:05d}", plateid=plateid, **extras))
            self.assertIn("Response_AlarmInfoPlate", answer)
        client = await self.operator()
        seen: list[str] = []
        pages = 0
        query = "/api/events?limit=500&type=plate"
        while True:
            reply = await client.get(query)
            self.assertEqual(reply.status, 200)
            self.assertLessEqual(len(reply.body), 1_048_576 + 64 * 1024)
            page = reply.json()
            seen += [event["id"] for event in page["events"]]
            pages += 1
            if page["next_before"] is None:
                break
            query = f"/api/events?limit=500&type=plate&before={page['next_before']}"
        self.assertGreater(pages, 1)
        self.assertEqual(len(seen), 40)
        self.assertEqual(len(set(seen)), 40)
