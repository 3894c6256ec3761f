"""Commands queued for a camera and delivered in its next reply.

HTTP gives the gateway no way to call a camera: every command rides in the
reply to a request the camera made (PROTOCOL.md section 1). A command
therefore waits in the camera's queue until a reply it fits in is built.
"""

from __future__ import annotations

import enum
import itertools
from typing import Protocol, Union

import attrs

from gateway.protocol.replies import HeartbeatReply, PlateReply


@attrs.define
class SerialReply:
    """The reply to a serial push (``Response_SerialData``): serial bytes only."""

    serial: list[tuple[int, bytes]] = attrs.field(factory=list)


Reply = Union[PlateReply, HeartbeatReply, SerialReply]


class CommandState(str, enum.Enum):
    QUEUED = "queued"
    DELIVERED = "delivered"
    COMPLETED = "completed"
    EXPIRED = "expired"
    FAILED = "failed"


class CameraCommand(Protocol):
    """What the registry needs of a command."""

    id: str
    expires_at: float  # clock seconds; a command must never fire late
    state: CommandState

    def apply(self, reply: Reply) -> bool:
        """Write this command into ``reply``; False when it does not fit
        (wrong kind of reply, or the slot is already taken)."""


_ids = itertools.count(1)


def _next_id(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}"


@attrs.define(eq=False)
class OpenBarrier:
    """Pulse the barrier relay on ``channel``."""

    channel: int
    expires_at: float
    id: str = attrs.field(factory=lambda: _next_id("open"))
    state: CommandState = CommandState.QUEUED

    def apply(self, reply: Reply) -> bool:
        if isinstance(reply, PlateReply):
            if reply.open_channel is not None and reply.open_channel != self.channel:
                return False  # one relay per reply; the other channel goes next time
            reply.open_channel = self.channel
            return True
        if isinstance(reply, HeartbeatReply):
            reply.open = True
            return True
        return False


@attrs.define(eq=False)
class SendSerial:
    """Bytes the camera writes to its serial port ``channel``."""

    channel: int
    data: bytes
    expires_at: float
    id: str = attrs.field(factory=lambda: _next_id("serial"))
    state: CommandState = CommandState.QUEUED

    def apply(self, reply: Reply) -> bool:
        reply.serial.append((self.channel, self.data))
        return True


@attrs.define(eq=False)
class ManualTrigger:
    """Ask the camera for a software-triggered recognition."""

    expires_at: float
    id: str = attrs.field(factory=lambda: _next_id("trigger"))
    state: CommandState = CommandState.QUEUED

    def apply(self, reply: Reply) -> bool:
        # ParkingCam heartbeats have no such field: the command waits for
        # that camera's next plate reply (or expires).
        if isinstance(reply, PlateReply):
            reply.manual_trigger = True
            return True
        return False
