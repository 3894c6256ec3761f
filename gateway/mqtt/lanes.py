"""Each lane's retained state on ``<prefix>/lane/<slug>/state``, following
the events as they are published: the last plate with its decision, reason
and time, whether the camera is online, when the barrier last opened."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import attrs

from gateway.mqtt.settings import lane_slug
from gateway.site import Lanes
from gateway.store import EventRecord, EventType
from gateway.upstream.events import dump_json, format_time

__all__ = ["LaneState", "LaneStates", "lane_topic"]

# Command results that mean the barrier's relay was pulsed.
_OPENED = frozenset({"delivered", "completed"})


def lane_topic(prefix: str, lane_name: str, leaf: str) -> str:
    return f"{prefix}/lane/{lane_slug(lane_name)}/{leaf}"


@attrs.define
class LaneState:
    """What a late subscriber needs to show a lane."""

    lane: str
    camera: str
    plate: str | None = None
    decision: bool | None = None
    reason: str | None = None
    at: datetime | None = None
    event_id: str | None = None
    camera_online: bool | None = None
    barrier_opened_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "lane": self.lane,
            "camera": self.camera,
            "plate": self.plate,
            "decision": None if self.decision is None else ("open" if self.decision else "denied"),
            "reason": self.reason,
            "time": format_time(self.at),
            "event_id": self.event_id,
            "camera_online": self.camera_online,
            "barrier_opened_at": format_time(self.barrier_opened_at),
        }

    def follow(self, record: EventRecord) -> bool:
        """Take ``record`` into the state; whether it changed."""
        before = attrs.evolve(self)
        if record.type is EventType.PLATE:
            self.plate = record.plate or record.license
            self.decision = record.decision_open
            self.reason = record.decision_reason
            self.at = record.received_at
            self.event_id = record.id
            if record.decision_open:
                self.barrier_opened_at = record.received_at
        elif record.type is EventType.CAMERA_ONLINE:
            self.camera_online = True
        elif record.type is EventType.CAMERA_OFFLINE:
            self.camera_online = False
        elif record.type is EventType.COMMAND_RESULT:
            command = record.raw.get("command")
            if (
                isinstance(command, dict)
                and command.get("type") == "open"
                and command.get("outcome") in _OPENED
            ):
                self.barrier_opened_at = record.received_at
        return self != before


class LaneStates:
    """The lanes' states; ``publish(topic, payload)`` sends one retained."""

    def __init__(self, lanes: Lanes, prefix: str, publish: Callable[[str, bytes], None]) -> None:
        self._prefix = prefix
        self._publish = publish
        self.states = {lane.name: LaneState(lane.name, lane.camera) for lane in lanes}
        self._lanes = lanes

    def lane_of(self, record: EventRecord) -> str | None:
        lane = self._lanes.named(record.lane) if record.lane else None
        if lane is None and record.camera:
            lane = self._lanes.for_camera(record.camera)
        return lane.name if lane is not None else None

    def follow(self, record: EventRecord) -> None:
        name = self.lane_of(record)
        if name is not None and self.states[name].follow(record):
            self.publish(name)

    def publish(self, name: str) -> None:
        state = self.states[name]
        self._publish(lane_topic(self._prefix, name, "state"), dump_json(state.to_json()))

    def publish_all(self) -> None:
        for name in self.states:
            self.publish(name)
