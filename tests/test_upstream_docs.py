"""The upstream API documents: the OpenAPI file is valid OpenAPI 3.1 and
describes what the gateway really sends; the Markdown page names every
setting, header and status, and its signature example verifies a request
the gateway signed."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from unittest import TestCase

import attrs
import jsonschema
import yaml
from openapi_spec_validator import validate

from gateway.store import EventRecord, EventType, ImageState
from gateway.upstream.events import command_result_record, decide_body, event_json, events_body
from gateway.upstream.settings import UpstreamSettings
from gateway.upstream.signing import new_message_id, secret_key, signature_headers

DOCS = Path(__file__).resolve().parents[1] / "docs"
API = DOCS / "upstream-api.md"
OPENAPI = DOCS / "upstream-openapi.yaml"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)


def load_spec() -> dict[str, Any]:
    spec = yaml.safe_load(OPENAPI.read_text(encoding="utf-8"))
    assert isinstance(spec, dict)
    return spec


def schema_check(spec: dict[str, Any], name: str, instance: Any) -> None:
    jsonschema.validate(
        instance,
        {"$ref": f"#/components/schemas/{name}", "components": spec["components"]},
        cls=jsonschema.Draft202012Validator,
    )


class OpenApiTests(TestCase):
    def test_valid_openapi_31_with_every_request(self) -> None:
        spec = load_spec()
        validate(spec)
        self.assertEqual(spec["openapi"], "3.1.0")
        self.assertEqual(
            {(path, method) for path, item in spec["paths"].items() for method in item},
            {
                ("/events", "post"),
                ("/images/{event_id}/{kind}", "put"),
                ("/decide", "post"),
                ("/sync", "get"),
            },
        )
        for item in spec["paths"].values():
            for operation in item.values():
                refs = {p.get("$ref") for p in operation["parameters"]}
                for name in ("WebhookId", "WebhookTimestamp", "WebhookSignature", "GatewayId"):
                    self.assertIn(f"#/components/parameters/{name}", refs)

    def test_the_gateways_bodies_match_the_schemas(self) -> None:
        spec = load_spec()
        plate = EventRecord(
            id="p-abcdefghijklmnopqrstuvwxyz",
            type=EventType.PLATE,
            received_at=NOW,
            camera="cam-1",
            lane="Exit",
            camera_time=NOW,
            plate="京A12345",
            license="京A12345",
            decision_open=True,
            decision_reason="whitelist",
            decision_source="local",
            raw={"PlateResult": {"license": "京A12345"}},
            image_crop=ImageState.PRESENT,
        )
        io = EventRecord(id="io-abcdefghijklmnopqrstuvwxyz", type=EventType.IO, received_at=NOW)
        result = command_result_record("k1", "open", "cam-1", "rejected", received_at=NOW)
        schema_check(spec, "EventBatch", json.loads(events_body("site-7", [plate, io, result])))
        # What operators did, answering that read.
        operator = {"name": "olga", "role": "operator", "via": "session"}
        queued = {"id": "open-17", "type": "open", "camera": "cam-1", "state": "queued", "channel": 2}
        actions = [
            EventRecord(
                id=f"{prefix}-abcdefghijklmnopqrstuvwxyz",
                type=kind,
                received_at=NOW,
                camera="cam-1",
                lane="Exit",
                plate="京A12345",
                license="京A1234S",
                decision_open=opened,
                decision_reason=None if opened is None else "visitor",
                decision_source=None if opened is None else "operator",
                answers=plate.id,
                raw={"operator": operator, "reason": "visitor", "note": "n", **extra},
            )
            for prefix, kind, opened, extra in (
                ("open", EventType.OPERATOR_OPEN, True, {"command": queued}),
                ("fix", EventType.PLATE_CORRECTION, None, {"read_plate": "京A1234S"}),
                ("manual", EventType.MANUAL_ENTRY, False, {}),
            )
        ]
        batch = json.loads(events_body("site-7", actions))
        schema_check(spec, "EventBatch", batch)
        self.assertEqual(
            [(e["answers"], e["operator"]["name"], e["reason"]) for e in batch["events"]],
            [(plate.id, "olga", "visitor")] * 3,
        )
        with self.assertRaises(jsonschema.ValidationError):
            schema_check(spec, "Event", {**batch["events"][0], "operator": {"name": "x"}})
        undecided = event_json(attrs.evolve(plate, decision_open=None))
        schema_check(spec, "DecideRequest", json.loads(decide_body("site-7", undecided)))
        with self.assertRaises(jsonschema.ValidationError):
            schema_check(spec, "Event", {**event_json(plate), "type": "parking"})
        schema_check(
            spec,
            "SyncPage",
            {
                "cursor": "c",
                "more": False,
                "whitelist": {"replace": False, "upsert": [{"plate": "京A1"}], "delete": []},
                "commands": [{"id": "k", "camera": "cam-1", "type": "serial", "data": "aGk="}],
            },
        )
        with self.assertRaises(jsonschema.ValidationError):
            schema_check(spec, "Command", {"id": "k", "camera": "c", "type": "serial"})


class MarkdownTests(TestCase):
    def test_every_setting_header_and_status_is_documented(self) -> None:
        text = API.read_text(encoding="utf-8")
        for field in attrs.fields(UpstreamSettings):
            if field.name != "gateway_id":  # it is [gateway] id
                self.assertIn(f"`{field.name}`", text)
        for word in (
            "webhook-id",
            "webhook-timestamp",
            "webhook-signature",
            "anpr-gateway-id",
            "Retry-After",
            "`408`",
            "`409`",
            "`429`",
            "`5xx`",
            "`401`",
            "`403`",
            "`404`",
            "cache_until",
            "`more`",
            "`replace: true`",
            "dead letters",
            "command_result",
        ):
            self.assertIn(word, text)

    def test_the_verification_example_verifies_a_gateway_request(self) -> None:
        text = API.read_text(encoding="utf-8")
        example = re.search(r"```python\n(.*?)```", text, re.DOTALL)
        assert example is not None
        namespace: dict[str, Any] = {}
        exec(compile(example.group(1), str(API), "exec"), namespace)
        verify = namespace["verify"]

        body = b'{"gateway":"site-7","events":[]}'
        headers = signature_headers(secret_key(SECRET), new_message_id(), int(time.time()), body)
        self.assertTrue(verify(SECRET, headers, body))
        self.assertFalse(verify(SECRET, headers, body + b" "))
        old = signature_headers(secret_key(SECRET), "msg_1", int(time.time()) - 3600, body)
        self.assertFalse(verify(SECRET, old, body))
        get = signature_headers(secret_key(SECRET), "msg_2", int(time.time()), b"")
        self.assertTrue(verify(SECRET, get, b""))
