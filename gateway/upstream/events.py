"""Stored events as the cloud receives them. Pure: no I/O.

The JSON of one event is documented in docs/upstream-api.md; the shapes here
are that contract.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from gateway.policy.plates import normalise_plate
from gateway.store import (
    OPERATOR_EVENT_TYPES,
    EventRecord,
    EventType,
    ImageState,
    new_event_id,
)

__all__ = [
    "COMMAND_OUTCOMES",
    "command_result_record",
    "decide_body",
    "dump_json",
    "event_json",
    "events_body",
    "format_time",
    "image_kinds_of",
    "parse_time",
]

#: How a command from the sync feed ended, as reported in ``command_result`` events.
COMMAND_OUTCOMES = frozenset({"delivered", "completed", "expired", "failed", "rejected"})


def format_time(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with microseconds and ``Z``: ``2025-03-01T12:00:00.123456Z``."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("times sent upstream must be timezone-aware")
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: Any, what: str) -> datetime | None:
    """An ISO 8601 time with a UTC offset (or ``Z``) from the cloud; None for
    null. Raises ``ValueError`` naming ``what`` otherwise: a time without an
    offset would be read in whichever zone the gateway is in."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{what} must be an ISO 8601 time string, not {value!r}")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"{what} is not an ISO 8601 time: {value!r}") from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValueError(f"{what} must carry a UTC offset or Z: {value!r}")
    return parsed


def image_kinds_of(record: EventRecord, wanted: Iterable[str]) -> list[str]:
    """The kinds in ``wanted`` whose image is on disk for ``record`` (these
    will be uploaded after the event is accepted)."""
    wanted_set = set(wanted)
    return [
        kind
        for kind in ("full", "crop")
        if kind in wanted_set and record.image_state(kind) is ImageState.PRESENT
    ]


def event_json(record: EventRecord, image_kinds: Iterable[str] = ()) -> dict[str, Any]:
    """One event as sent upstream.

    ``image_kinds`` are the kinds the gateway uploads (the ``images``
    setting); the event lists those it holds, so the cloud knows which
    ``PUT /images/{id}/{kind}`` to expect.
    """
    body: dict[str, Any] = {
        "id": record.id,
        "type": record.type.value,
        "camera": record.camera,
        "lane": record.lane,
        "received_at": format_time(record.received_at),
        "camera_time": format_time(record.camera_time),
    }
    decision = None
    if record.decision_open is not None:
        decision = {
            "open": record.decision_open,
            "reason": record.decision_reason,
            "source": record.decision_source or "local",
        }
    if record.type is EventType.PLATE:
        body.update(
            plate=record.plate or normalise_plate(record.license),
            license=record.license,
            offline=record.offline,
            decision=decision,
            repeat=record.repeat,
        )
    if record.type is EventType.COMMAND_RESULT:
        command = record.raw.get("command")
        body["command"] = dict(command) if isinstance(command, Mapping) else None
    if record.type in OPERATOR_EVENT_TYPES:
        # What someone at the booth did, and for which read.
        operator = record.raw.get("operator")
        command = record.raw.get("command")
        body.update(
            answers=record.answers,
            operator=dict(operator) if isinstance(operator, Mapping) else None,
            reason=str(record.raw.get("reason") or ""),
            note=str(record.raw.get("note") or ""),
            plate=record.plate,
            license=record.license,
            decision=decision,
            command=dict(command) if isinstance(command, Mapping) else None,
        )
    body["images"] = image_kinds_of(record, image_kinds)
    body["raw"] = dict(record.raw)
    return body


def dump_json(value: Any) -> bytes:
    """Compact UTF-8 JSON, the form of every body the gateway sends."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode(
        "utf-8"
    )


def events_body(
    gateway_id: str, records: Sequence[EventRecord], image_kinds: Iterable[str] = ()
) -> bytes:
    """The body of ``POST /events``: ``{"gateway": ..., "events": [...]}``."""
    kinds = tuple(image_kinds)
    return dump_json(
        {"gateway": gateway_id, "events": [event_json(record, kinds) for record in records]}
    )


def decide_body(gateway_id: str, event: Mapping[str, Any]) -> bytes:
    """The body of ``POST /decide``: ``{"gateway": ..., "event": {...}}``."""
    return dump_json({"gateway": gateway_id, "event": dict(event)})


def command_result_record(
    command_id: str,
    command_type: str | None,
    camera: str | None,
    outcome: str,
    *,
    received_at: datetime,
    lane: str | None = None,
    detail: str = "",
    origin: str = "",
    extra: Mapping[str, Any] | None = None,
) -> EventRecord:
    """The event that tells the cloud how one of its commands ended.

    ``outcome`` is one of :data:`COMMAND_OUTCOMES`; ``detail`` says why
    (for ``rejected`` and ``failed``) in a line of text. ``origin`` says who
    asked when it was not the cloud (``mqtt``); ``extra`` adds fields of the
    command (the plate of a whitelist command).
    """
    if outcome not in COMMAND_OUTCOMES:
        raise ValueError(f"unknown command outcome {outcome!r}")
    command: dict[str, Any] = {
        "id": command_id,
        "type": command_type,
        "outcome": outcome,
        "detail": detail,
        **(extra or {}),
    }
    if origin:
        command["origin"] = origin
    return EventRecord(
        id=new_event_id("cmd"),
        type=EventType.COMMAND_RESULT,
        received_at=received_at,
        camera=camera,
        lane=lane,
        raw={"command": command},
    )
