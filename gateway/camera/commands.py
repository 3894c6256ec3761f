"""Commands queued for a camera and delivered in its next reply.

HTTP gives the gateway no way to call a camera: every command rides in the
reply to a request the camera made (PROTOCOL.md section 1). A command
therefore waits in the camera's queue until a reply it fits in is built.

A command goes ``queued`` -> ``delivered`` (a reply carrying it was sent) and,
for commands the camera confirms (a snapshot upload, a whitelist result),
-> ``completed``; or it ends ``expired`` (not delivered in time: an open
command must never fire minutes late) or ``failed``. :attr:`done` fires with
the final state.
"""

from __future__ import annotations

import abc
import enum
import itertools
from typing import Any

import attrs
from twisted.internet.defer import Deferred

from gateway.protocol.capabilities import Capability
from gateway.protocol.replies import (
    HeartbeatReply,
    IoControl,
    PlateReply,
    TriggerImageRequest,
    VoiceRequest,
    WhitelistOperate,
)


@attrs.define
class SerialReply:
    """The reply to a serial push (``Response_SerialData``): serial bytes only."""

    serial: list[tuple[int, bytes]] = attrs.field(factory=list)


Reply = PlateReply | HeartbeatReply | SerialReply


class CommandState(str, enum.Enum):
    QUEUED = "queued"
    DELIVERED = "delivered"
    COMPLETED = "completed"
    EXPIRED = "expired"
    FAILED = "failed"


_ids = itertools.count(1)


def _next_id(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}"


@attrs.define(eq=False)
class CameraCommand(abc.ABC):
    """A command for one camera. Subclasses say how it fits in a reply.

    ``confirmed`` commands stay open after delivery until the camera's answer
    arrives (:meth:`complete`) or they time out.
    """

    expires_at: float  # clock seconds
    id: str = attrs.field(default="")
    camera: str = ""  # serial number, set when queued
    state: CommandState = CommandState.QUEUED
    reason: str = ""
    # Set when queued for a camera that reads this command only in a plate
    # reply (a Vzenith camera on common heartbeat): it waits for a car.
    waits_for: str = ""
    # Who asked, when not the admin page or the cloud: "mqtt".
    origin: str = ""
    # The person who asked, by name (the admin page and API).
    operator: str = ""
    result: Any = None
    done: Deferred[CameraCommand] = attrs.field(factory=Deferred, repr=False)

    kind = "command"
    confirmed = False

    @property
    @abc.abstractmethod
    def capability(self) -> Capability:
        """What the command asks the camera to do (gateway.protocol.capabilities):
        each kind of command says."""

    def __attrs_post_init__(self) -> None:
        if not self.id:
            self.id = _next_id(self.kind)

    def apply(self, reply: Reply) -> bool:
        """Write this command into ``reply``; False when it does not fit
        (wrong kind of reply, or the slot is already taken)."""
        return False

    def whole_reply(self) -> bytes | None:
        """The entire reply body, for commands that are a reply of their own
        (ParkingCam whitelist commands)."""
        return None

    def describe(self) -> dict[str, Any]:
        described: dict[str, Any] = {
            "id": self.id,
            "type": self.kind,
            "camera": self.camera,
            "state": self.state.value,
        }
        if self.waits_for and self.state is CommandState.QUEUED:
            described["waits_for"] = self.waits_for
        return described

    # -- life cycle -------------------------------------------------------

    def delivered(self) -> None:
        self.state = CommandState.DELIVERED
        if not self.confirmed:
            self._finish()

    def complete(self, result: Any = None) -> None:
        if self.state in (CommandState.COMPLETED, CommandState.EXPIRED, CommandState.FAILED):
            return
        self.state = CommandState.COMPLETED
        self.result = result
        self._finish()

    def fail(self, state: CommandState, reason: str) -> None:
        if self.done.called:
            return
        self.state = state
        self.reason = reason
        self._finish()

    def _finish(self) -> None:
        if not self.done.called:
            self.done.callback(self)


@attrs.define(eq=False)
class OpenBarrier(CameraCommand):
    """Pulse the barrier relay on ``channel``."""

    channel: int = 0
    kind = "open"
    capability = Capability.OPEN

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

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "channel": self.channel}


@attrs.define(eq=False)
class IoOutput(CameraCommand):
    """Drive an IO output (``ivs_ioctrl``): hold a barrier open (1), close it
    (0) or pulse it (2). ParkingCam cameras can only close (``shutoff``)."""

    io: int = 0
    value: int = 2
    delay_ms: int = 500
    kind = "io"

    @property
    def capability(self) -> Capability:
        return {0: Capability.CLOSE, 1: Capability.HOLD_OPEN}.get(self.value, Capability.OPEN)

    def apply(self, reply: Reply) -> bool:
        if isinstance(reply, PlateReply):
            if reply.io_control is not None:
                return False
            reply.io_control = IoControl(io=self.io, value=self.value, delay=self.delay_ms)
            return True
        if isinstance(reply, HeartbeatReply) and self.value == 0:
            reply.shutoff = True
            return True
        return False

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "io": self.io, "value": self.value}


@attrs.define(eq=False)
class SendSerial(CameraCommand):
    """Bytes the camera writes to its serial port ``channel``."""

    channel: int = 0
    data: bytes = b""
    kind = "serial"
    capability = Capability.SERIAL

    def apply(self, reply: Reply) -> bool:
        reply.serial.append((self.channel, self.data))
        return True

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "channel": self.channel, "bytes": len(self.data)}


@attrs.define(eq=False)
class ManualTrigger(CameraCommand):
    """Ask the camera for a software-triggered recognition (a new plate push
    with triggerType 4)."""

    kind = "trigger"
    capability = Capability.TRIGGER

    def apply(self, reply: Reply) -> bool:
        if isinstance(reply, PlateReply):
            reply.manual_trigger = True
            return True
        return False


@attrs.define(eq=False)
class Speak(CameraCommand):
    """Speak text through the camera (newer firmware)."""

    text: str = ""
    volume: int = 100
    kind = "say"
    capability = Capability.SPEAK

    def apply(self, reply: Reply) -> bool:
        if isinstance(reply, PlateReply) and reply.voice is None:
            reply.voice = VoiceRequest(text=self.text, volume=self.volume)
            return True
        return False


@attrs.define(eq=False)
class Snapshot(CameraCommand):
    """Ask the camera to grab a frame and upload it to ``url``; completed by
    the camera's ``TriggerImage`` push (the JPEG is the result)."""

    url: str = ""
    port: int = 80
    kind = "snapshot"
    capability = Capability.SNAPSHOT
    confirmed = True

    def apply(self, reply: Reply) -> bool:
        if isinstance(reply, PlateReply):
            if reply.trigger_image is not None:
                return False
            reply.trigger_image = TriggerImageRequest(port=self.port, url=self.url, absolute=True)
            return True
        return False


@attrs.define(eq=False)
class CameraWhitelistEdit(CameraCommand):
    """Edit a Vzenith camera's own whitelist (at most 5 rows per reply)."""

    operation: WhitelistOperate | None = None
    kind = "whitelist"
    capability = Capability.WHITELIST

    def apply(self, reply: Reply) -> bool:
        if isinstance(reply, PlateReply) and reply.whitelist is None and self.operation:
            reply.whitelist = self.operation
            return True
        return False


@attrs.define(eq=False)
class ParkingCamWhitelistCommand(CameraCommand):
    """A ParkingCam whitelist command: the entire heartbeat reply; confirmed
    by the camera's ``Response_*`` push."""

    body: bytes = b""
    operation: str = ""  # add | delete | delete_all | query
    kind = "whitelist"
    capability = Capability.WHITELIST
    confirmed = True

    def whole_reply(self) -> bytes:
        return self.body
