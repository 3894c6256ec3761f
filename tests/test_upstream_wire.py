"""The pure parts of the cloud link: settings, signing vectors (checked
against an independent computation), the event JSON, answers of /decide and
/sync, Retry-After, status classes, back-off and the link state."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import datetime, timedelta, timezone
from typing import Any
from unittest import TestCase
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock

from gateway.policy.codec import EntryCodec, EntryError
from gateway.schema import ConfigError
from gateway.site import Lanes
from gateway.store import EventRecord, EventType, ImageState
from gateway.upstream.decisions import CloudDecision, parse_decision
from gateway.upstream.events import command_result_record, event_json, events_body
from gateway.upstream.feed import command_from_json, parse_sync_page
from gateway.upstream.http import Verdict, classify, parse_retry_after
from gateway.upstream.link import Backoff, FailureKind, Link, LinkFailure, LinkState
from gateway.upstream.settings import ImagePolicy, UpstreamSettings
from gateway.upstream.signing import secret_key, sign, signature_headers

CODEC = EntryCodec(tz=ZoneInfo("Asia/Shanghai"), lanes=Lanes.of_names("Entry", "Exit"))

UTC = timezone.utc
NOW = datetime(2025, 3, 1, 12, 0, 0, 250000, tzinfo=UTC)
KEY = b"0123456789abcdef0123456789abcdef"
SECRET = "whsec_" + base64.b64encode(KEY).decode()


def independent_signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(key, digestmod=hashlib.sha256)
    mac.update(msg_id.encode())
    mac.update(b".")
    mac.update(str(timestamp).encode())
    mac.update(b".")
    mac.update(body)
    return "v1," + base64.b64encode(mac.digest()).decode()


class SigningTests(TestCase):
    def test_published_standard_webhooks_example(self) -> None:
        key = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        self.assertEqual(
            sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}'),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        )

    def test_vectors_against_an_independent_computation(self) -> None:
        vectors = [
            ("msg_1", 1740830400, b'{"gateway":"site-7","events":[]}'),
            ("msg_2", 0, b""),  # a GET: signed over an empty body
            ("msg_3", 4102444800, "车牌 京A12345".encode()),
            ("msg_4", 1740830401, bytes(range(256))),  # an image
        ]
        for msg_id, timestamp, body in vectors:
            self.assertEqual(
                sign(KEY, msg_id, timestamp, body),
                independent_signature(KEY, msg_id, timestamp, body),
            )
        headers = signature_headers(KEY, "msg_9", 1740830400, b"{}")
        self.assertEqual(
            headers,
            {
                "webhook-id": "msg_9",
                "webhook-timestamp": "1740830400",
                "webhook-signature": independent_signature(KEY, "msg_9", 1740830400, b"{}"),
            },
        )

    @given(
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1),
        st.integers(0, 2**40),
        st.binary(),
    )
    def test_any_request(self, msg_id: str, timestamp: int, body: bytes) -> None:
        self.assertEqual(
            sign(KEY, msg_id, timestamp, body), independent_signature(KEY, msg_id, timestamp, body)
        )

    def test_secrets(self) -> None:
        self.assertEqual(secret_key(SECRET), KEY)
        short = "whsec_" + base64.b64encode(b"short").decode()
        for bad in ("0123456789abcdef", "whsec_not*base64", short):
            with self.assertRaises(ValueError) as raised:
                secret_key(bad)
            self.assertNotIn(bad, str(raised.exception))  # never repeats the secret
        with self.assertRaises(ValueError):
            sign(KEY, "msg.with.dots", 1, b"")


class SettingsTests(TestCase):
    def test_defaults(self) -> None:
        config = UpstreamSettings(
            url="https://cloud.example.org/anpr/", secret=SECRET, gateway_id="g1"
        )
        self.assertEqual(config.url, "https://cloud.example.org/anpr")
        self.assertEqual(
            (
                config.decision_timeout_seconds,
                config.sync_interval_seconds,
                config.images,
                config.batch_size,
                config.outbox_max_events,
                config.max_backoff_seconds,
                config.request_timeout_seconds,
            ),
            (1.5, 10.0, ImagePolicy.CROP, 200, 1_000_000, 300.0, 30.0),
        )
        self.assertEqual(config.signing_key, KEY)
        self.assertTrue(config.https)
        self.assertNotIn(SECRET, repr(config))
        self.assertEqual(ImagePolicy("all").kinds, ("full", "crop"))
        self.assertEqual(ImagePolicy("none").kinds, ())

    def test_bad_settings_name_the_key(self) -> None:
        good: dict[str, Any] = dict(url="https://c.example.org", secret=SECRET, gateway_id="g1")
        cases: list[tuple[dict[str, Any], str]] = [
            ({"url": "ftp://c.example.org"}, "url"),
            ({"url": "https://c.example.org/x?y=1"}, "url"),
            ({"url": "https://user:pw@c.example.org"}, "url"),
            ({"secret": "hunter2"}, "secret"),
            ({"gateway_id": ""}, "gateway_id"),
            ({"decision_timeout_seconds": 0}, "decision_timeout_seconds"),
            ({"sync_interval_seconds": 0.5}, "sync_interval_seconds"),
            ({"images": "thumbnails"}, "images"),
            ({"batch_size": 0}, "batch_size"),
            ({"batch_size": 2.5}, "batch_size"),
            ({"outbox_max_events": 5}, "outbox_max_events"),
            ({"max_backoff_seconds": True}, "max_backoff_seconds"),
            ({"request_timeout_seconds": 601}, "request_timeout_seconds"),
            ({"client_key": "/k.pem"}, "client_key"),
        ]
        for change, key in cases:
            with self.assertRaises(ConfigError, msg=str(change)) as raised:
                UpstreamSettings(**{**good, **change})
            self.assertEqual(raised.exception.path, key)
        with self.assertRaises(ConfigError) as raised:
            UpstreamSettings(**{**good, "secret": "whsec_c2hvcnQ="})
        self.assertNotIn("c2hvcnQ", str(raised.exception))


def plate(**fields: Any) -> EventRecord:
    values: dict[str, Any] = dict(
        id="p-abcdefghijklmnopqrstuvwxyz",
        type=EventType.PLATE,
        received_at=NOW,
        camera="cam-1",
        lane="Exit",
        camera_time=datetime(2025, 3, 1, 19, 59, 58, tzinfo=timezone(timedelta(hours=8))),
        plate="京A12345",
        license="京A12345",
        decision_open=False,
        decision_reason="unknown",
        decision_source="cloud",
        raw={"PlateResult": {"license": "京A12345", "confidence": 88}},
        image_full=ImageState.PRESENT,
        image_crop=ImageState.EXPIRED,
    )
    values.update(fields)
    return EventRecord(**values)


class EventJsonTests(TestCase):
    def test_plate_event(self) -> None:
        self.assertEqual(
            event_json(plate(), ("full", "crop")),
            {
                "id": "p-abcdefghijklmnopqrstuvwxyz",
                "type": "plate",
                "camera": "cam-1",
                "lane": "Exit",
                "received_at": "2025-03-01T12:00:00.250000Z",
                "camera_time": "2025-03-01T11:59:58.000000Z",
                "plate": "京A12345",
                "license": "京A12345",
                "offline": False,
                "decision": {"open": False, "reason": "unknown", "source": "cloud"},
                "repeat": False,
                "images": ["full"],  # the crop expired: not announced
                "raw": {"PlateResult": {"license": "京A12345", "confidence": 88}},
            },
        )
        undecided = event_json(plate(decision_open=None, plate="", license="京a·12345"))
        self.assertIsNone(undecided["decision"])
        self.assertEqual(undecided["plate"], "京A12345")
        self.assertEqual(undecided["images"], [])

    def test_other_events_and_the_batch_body(self) -> None:
        online = EventRecord(
            id="online-abcdefghijklmnopqrst",
            type=EventType.CAMERA_ONLINE,
            received_at=NOW,
            camera="cam-2",
        )
        self.assertEqual(
            event_json(online),
            {
                "id": "online-abcdefghijklmnopqrst",
                "type": "camera_online",
                "camera": "cam-2",
                "lane": None,
                "received_at": "2025-03-01T12:00:00.250000Z",
                "camera_time": None,
                "images": [],
                "raw": {},
            },
        )
        result = command_result_record(
            "k1", "open", "cam-2", "completed", received_at=NOW, lane="Exit"
        )
        self.assertEqual(
            event_json(result)["command"],
            {"id": "k1", "type": "open", "outcome": "completed", "detail": ""},
        )
        with self.assertRaises(ValueError):
            command_result_record("k1", "open", "cam-2", "exploded", received_at=NOW)
        body = events_body("site-7", [online, plate()], ("crop",))
        self.assertEqual(json.loads(body)["gateway"], "site-7")
        self.assertEqual([e["id"] for e in json.loads(body)["events"]], [online.id, plate().id])
        self.assertIn("京A12345".encode(), body)  # UTF-8, not \\u escapes


class DecisionParsingTests(TestCase):
    def test_answers(self) -> None:
        self.assertEqual(parse_decision(b'{"open": true}'), CloudDecision(open=True))
        full = parse_decision(
            json.dumps(
                {
                    "open": False,
                    "display": ["Unpaid", "Please pay"],
                    "voice": "Please pay at the kiosk",
                    "reason": "unpaid",
                    "cache_until": "2025-03-01T20:15:00+08:00",
                }
            ).encode()
        )
        self.assertEqual(full.cache_until, datetime(2025, 3, 1, 12, 15, tzinfo=UTC))
        self.assertEqual((full.display, full.reason), (("Unpaid", "Please pay"), "unpaid"))
        for bad in (
            b"<html>",
            b"[]",
            b'{"open": 1}',
            b'{"open": true, "display": "one line"}',
            b'{"open": true, "cache_until": "2025-03-01T20:15:00"}',
            b'{"open": true, "voice": 3}',
        ):
            with self.assertRaises(ValueError, msg=bad):
                parse_decision(bad)


class FeedParsingTests(TestCase):
    def test_entry(self) -> None:
        entry = CODEC.from_json(
            {
                "plate": "粤b 12345",
                "enabled": False,
                "blacklist": True,
                "valid_from": "2025-01-01T00:00:00+08:00",
                "valid_until": None,
                "lanes": ["Entry", "Exit"],
                "hours": "Mon-Fri 07:00-19:00; Sat 08:00-12:00",
                "note": "banned",
            },
            "cloud",
        )
        self.assertEqual(entry.plate, "粤B12345")
        self.assertEqual((entry.enabled, entry.blacklist, entry.source), (False, True, "cloud"))
        self.assertEqual(entry.valid_from, datetime(2024, 12, 31, 16, 0, tzinfo=UTC))
        self.assertEqual(entry.lanes, frozenset({"Entry", "Exit"}))
        self.assertEqual(len(entry.hours), 2)
        for bad in (
            {"plate": ""},
            {"plate": "京A1", "enabled": "yes"},
            {"plate": "京A1", "lanes": "Entry"},
            {"plate": "京A1", "hours": "whenever"},
            {"plate": "京A1", "lanes": ["Parking"]},
            {
                "plate": "京A1",
                "valid_from": "2025-02-01T00:00Z",
                "valid_until": "2025-01-01T00:00Z",
            },
        ):
            with self.assertRaises(EntryError, msg=str(bad)):
                CODEC.from_json(bad, "cloud")

    def test_commands(self) -> None:
        serial = command_from_json(
            {"id": "c1", "camera": " cam-1 ", "type": "serial", "data": "aGk=", "channel": 0}
        )
        self.assertEqual(
            (serial.id, serial.camera, serial.type, serial.expires_at),
            ("c1", "cam-1", "serial", None),
        )
        self.assertEqual(serial.fields, {"channel": 0, "data": b"hi"})
        opened = command_from_json(
            {"id": "c2", "camera": "cam-1", "type": "open", "expires_at": "2025-03-01T12:00:05Z"}
        )
        self.assertEqual(opened.expires_at, datetime(2025, 3, 1, 12, 0, 5, tzinfo=UTC))
        self.assertEqual(opened.fields, {"channel": None})
        for bad in (
            {"camera": "cam-1", "type": "open"},
            {"id": "c", "type": "open"},
            {"id": "c", "camera": "cam-1", "type": "reboot"},
            {"id": "c", "camera": "cam-1", "type": "open", "channel": 99},
            {"id": "c", "camera": "cam-1", "type": "serial", "data": "***"},
            {"id": "c", "camera": "cam-1", "type": "serial", "data": ""},
            {"id": "c", "camera": "cam-1", "type": "display", "lines": []},
            {"id": "c", "camera": "cam-1", "type": "display", "lines": ["a"] * 9},
        ):
            with self.assertRaises(ValueError, msg=str(bad)):
                command_from_json(bad)

    def test_page(self) -> None:
        page = parse_sync_page(
            json.dumps(
                {
                    "cursor": "42",
                    "more": True,
                    "whitelist": {
                        "replace": False,
                        "upsert": [{"plate": "京A1"}, {"plate": 5}],
                        "delete": ["京b2", None],
                    },
                    "commands": [{"id": "k", "camera": "c", "type": "open"}, {"id": "j"}],
                }
            ).encode(),
            CODEC,
        )
        self.assertEqual((page.cursor, page.more), ("42", True))
        self.assertEqual([e.plate for e in page.whitelist.upsert], ["京A1"])
        self.assertEqual(page.whitelist.delete, ("京B2",))
        self.assertEqual(len(page.whitelist.rejected), 2)
        self.assertEqual([c.id for c in page.commands], ["k"])
        self.assertEqual(page.rejected_commands[0].id, "j")
        minimal = parse_sync_page(b'{"cursor": ""}', CODEC)
        self.assertTrue(minimal.whitelist.empty)
        self.assertEqual((minimal.more, minimal.commands), (False, ()))
        for bad in (b"nope", b"[]", b"{}", b'{"cursor": 1}', b'{"cursor": "", "more": "no"}'):
            with self.assertRaises(ValueError, msg=bad):
                parse_sync_page(bad, CODEC)


class HttpSemanticsTests(TestCase):
    def test_classes(self) -> None:
        self.assertEqual(classify(200), Verdict.ACCEPTED)
        self.assertEqual(classify(204), Verdict.ACCEPTED)
        for status in (408, 409, 429, 500, 502, 503, 504, 301, 302):
            self.assertEqual(classify(status), Verdict.TRANSIENT, status)
        self.assertEqual(classify(401), Verdict.AUTH)
        self.assertEqual(classify(403), Verdict.AUTH)
        self.assertEqual(classify(404), Verdict.ENDPOINT)
        self.assertEqual(classify(405), Verdict.ENDPOINT)
        for status in (400, 410, 413, 415, 422):
            self.assertEqual(classify(status), Verdict.REJECTED, status)

    def test_retry_after(self) -> None:
        self.assertEqual(parse_retry_after("120", NOW), 120.0)
        self.assertEqual(parse_retry_after(" 0 ", NOW), 0.0)
        self.assertEqual(parse_retry_after("Sat, 01 Mar 2025 12:02:00 GMT", NOW), 119.75)
        self.assertEqual(parse_retry_after("Sat, 01 Mar 2025 11:00:00 GMT", NOW), 0.0)
        self.assertEqual(parse_retry_after("99999", NOW), 3600.0)
        self.assertIsNone(parse_retry_after(None, NOW))
        self.assertIsNone(parse_retry_after("soon", NOW))
        self.assertIsNone(parse_retry_after("-5", NOW))


class BackoffAndLinkTests(TestCase):
    def test_full_jitter_capped(self) -> None:
        draws = iter([1.0, 1.0, 1.0, 0.25, 1.0, 0.0] + [1.0] * 100)
        backoff = Backoff(cap=10.0, random=lambda: next(draws))
        self.assertEqual([backoff.next_delay() for _ in range(6)], [1, 2, 4, 2, 10, 0])
        self.assertEqual(max(backoff.next_delay() for _ in range(80)), 10.0)
        backoff.reset()
        self.assertEqual(backoff.next_delay(), 1.0)

    def test_state_is_the_worst_channel_and_observable(self) -> None:
        clock = Clock()
        clock.advance(1000)
        link = Link(clock)
        seen: list[LinkState] = []
        proven: list[int] = []
        link.on_change(lambda status: seen.append(status.state))
        link.on_proven(lambda: proven.append(1))
        self.assertEqual(link.state, LinkState.CONNECTING)
        link.succeeded("sync")
        self.assertEqual(link.state, LinkState.UP)
        link.failed("delivery", LinkFailure(FailureKind.SERVER, "HTTP 503"), 1030)
        status = link.status
        self.assertEqual(
            (status.state, status.last_error, status.retry_at),
            (LinkState.BACKING_OFF, "HTTP 503", datetime.fromtimestamp(1030, tz=UTC)),
        )
        clock.advance(5)
        link.failed("sync", LinkFailure(FailureKind.AUTH, "HTTP 401"), 1305)
        self.assertEqual(link.state, LinkState.DOWN)
        self.assertEqual(link.status.since, datetime.fromtimestamp(1005, tz=UTC))
        link.succeeded("sync")
        self.assertEqual(link.state, LinkState.BACKING_OFF)
        link.settled("delivery")
        self.assertEqual(link.state, LinkState.UP)
        self.assertEqual(
            seen,
            [
                LinkState.UP,
                LinkState.BACKING_OFF,
                LinkState.DOWN,
                LinkState.BACKING_OFF,
                LinkState.UP,
            ],
        )
        self.assertEqual(len(proven), 2)
