"""What the camera server hands on for keeping: camera events."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

import attrs

from gateway.policy.decision import Decision
from gateway.protocol.messages import Message


class EventNotKept(Exception):
    """The gateway could not keep an event durably: the camera must not be
    told it was received."""


@attrs.frozen
class CameraEvent:
    """Something a camera reported (or that happened to a camera), as the
    gateway received it.

    ``open_channel`` is the relay the reply pulses (None: the barrier stays
    shut). ``resent`` marks an event the camera had sent before: it carries
    the first reception's decision, to be answered the same way again.
    """

    id: str
    kind: str  # plate | io | serial | snapshot | whitelist_result | camera_online | camera_offline
    camera: str  # serial number, or "@<address>" for a camera that gave none
    lane: str | None
    received_at: datetime
    message: Message | None = None
    decision: Decision | None = None
    repeat: bool = False
    open_channel: int | None = None
    resent: bool = False
    details: Mapping[str, Any] = attrs.field(factory=dict)


class EventRecorder(Protocol):
    async def record(self, event: CameraEvent) -> CameraEvent:
        """Keep ``event`` durably; return it as kept (for a re-sent push, the
        event as first received). Raise :class:`EventNotKept` when it cannot
        be kept."""
