"""Acting on a lane now: the command API used by the admin page and the
cloud's sync feed.

Every command is queued for its camera and delivered in the camera's next
reply (a held comet poll is answered at once). A camera that is offline or
unknown is refused at once rather than left to hang; a command not delivered
before its expiry is withdrawn, so an open command never fires minutes late
when a camera reconnects. Each command's outcome becomes a ``command_result``
event.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from gateway.bus import EventBus
from gateway.camera.commands import (
    CameraCommand,
    CommandState,
    IoOutput,
    ManualTrigger,
    OpenBarrier,
    SendSerial,
    Snapshot,
    Speak,
)
from gateway.camera.events import CameraEvent, EventNotKept, EventRecorder
from gateway.camera.registry import Camera, CameraRegistry
from gateway.protocol.capabilities import Capability, describe_mode
from gateway.site import Lanes
from gateway.store.ids import new_event_id
from gateway.upstream.feed import CloudCommand

log = Logger()

C = TypeVar("C", bound=CameraCommand)

DEFAULT_EXPIRY_SECONDS = 30.0
DEFAULT_SNAPSHOT_TIMEOUT_SECONDS = 15.0
SNAPSHOT_PATH = "/snapshot/"


class CommandRefused(Exception):
    """A command that cannot be sent; ``str()`` says why, for the caller."""


class UnknownCamera(CommandRefused):
    pass


class CameraOffline(CommandRefused):
    pass


class NotSupported(CommandRefused):
    pass


class CommandFailed(Exception):
    """A command that was sent but did not achieve its end."""

    def __init__(self, command: CameraCommand) -> None:
        super().__init__(f"{command.kind} command {command.id} {command.state.value}: {command.reason}")
        self.command = command


class CameraControl:
    """Commands to cameras, by serial number."""

    def __init__(
        self,
        *,
        clock: IReactorTime,
        registry: CameraRegistry,
        lanes: Lanes,
        recorder: EventRecorder | None = None,
        expiry: float = DEFAULT_EXPIRY_SECONDS,
        snapshot_timeout: float = DEFAULT_SNAPSHOT_TIMEOUT_SECONDS,
        display_say: Callable[[Camera, str], bool] | None = None,
        bus: EventBus | None = None,
    ) -> None:
        self._clock = clock
        self._registry = registry
        self._lanes = lanes
        self.recorder = recorder
        self.expiry = expiry
        self.snapshot_timeout = snapshot_timeout
        # Speak through the lane's display/voice board when it has one.
        self.display_say = display_say
        self.bus = bus
        self._timers: dict[str, IDelayedCall] = {}
        self._snapshots: dict[str, Snapshot] = {}

    # -- the API ----------------------------------------------------------

    def open(
        self, serialno: str, channel: int | None = None, **origin: Any
    ) -> OpenBarrier:
        """Pulse the barrier relay (the lane's barrier channel by default).

        Every command method takes ``command_id`` (the caller's own id, e.g.
        the cloud's), ``expires_at`` (clock seconds, at most the default
        expiry from now), ``origin`` (what asked, kept in the command's
        result event) and ``operator`` (the person who asked, kept there
        too) as keywords."""
        camera = self._online(serialno)
        return self.submit(
            camera,
            OpenBarrier(channel=self._channel(camera, channel), **self._identity(**origin)),
        )

    def hold_open(self, serialno: str, channel: int | None = None, **origin: Any) -> IoOutput:
        """Hold the barrier open (IO output on) until :meth:`close`."""
        camera = self._online(serialno)
        return self.submit(
            camera, IoOutput(io=self._channel(camera, channel), value=1, **self._identity(**origin))
        )

    def close(self, serialno: str, channel: int | None = None, **origin: Any) -> IoOutput:
        """Close the barrier (IO output off; ParkingCam ``shutoff``)."""
        camera = self._online(serialno)
        return self.submit(
            camera, IoOutput(io=self._channel(camera, channel), value=0, **self._identity(**origin))
        )

    def trigger(self, serialno: str, **origin: Any) -> ManualTrigger:
        """Ask for a software-triggered recognition (a new plate push)."""
        camera = self._online(serialno)
        return self.submit(camera, ManualTrigger(**self._identity(**origin)))

    def send_serial(self, serialno: str, channel: int, data: bytes, **origin: Any) -> SendSerial:
        """Bytes the camera writes to its serial port ``channel`` (0 or 1)."""
        if channel not in (0, 1):
            raise CommandRefused(f"serial channel must be 0 or 1, got {channel}")
        if not data:
            raise CommandRefused("no serial data to send")
        camera = self._online(serialno)
        return self.submit(
            camera, SendSerial(channel=channel, data=data, **self._identity(**origin))
        )

    def say(self, serialno: str, text: str, **origin: Any) -> CameraCommand | None:
        """Speak (and show) ``text`` on the lane: through the lane's display
        and voice board when it has one, else through the camera's speaker."""
        if not text.strip():
            raise CommandRefused("nothing to say")
        camera = self._online(serialno)
        if self.display_say is not None and self.display_say(camera, text):
            return None
        if camera.mode.refusal(Capability.SPEAK) is not None:
            raise NotSupported(
                f"camera {camera.serialno} ({describe_mode(camera.mode)}) has no voice output "
                "and its lane no display"
            )
        return self.submit(camera, Speak(text=text, **self._identity(**origin)))

    async def snapshot(
        self, serialno: str, timeout: float | None = None, **origin: Any
    ) -> bytes:
        """Ask the camera for a frame and wait for its upload (a JPEG)."""
        camera = self._online(serialno)
        address = camera.gateway_address
        if address is None:
            raise CommandRefused(f"camera {camera.serialno} has not yet reached the gateway")
        host, port, secure = address
        command = Snapshot(port=port, **self._identity(**origin))
        scheme = "https" if secure else "http"
        host_part = f"[{host}]" if ":" in host else host
        command.url = f"{scheme}://{host_part}:{port}{SNAPSHOT_PATH}{command.id}"
        self._snapshots[command.id] = command
        self.submit(camera, command, confirm_within=timeout or self.snapshot_timeout)
        await command.done
        if command.state is not CommandState.COMPLETED:
            raise CommandFailed(command)
        image: bytes = command.result
        return image

    # -- camera answers -----------------------------------------------------

    def snapshot_arrived(self, camera: Camera, path: str, image: bytes) -> bool:
        """Complete the snapshot this upload answers: the one named in the
        upload's path, else the oldest one delivered to this camera."""
        command = None
        if SNAPSHOT_PATH in path:
            command = self._snapshots.get(path.rsplit("/", 1)[-1])
        if command is None:
            waiting = [
                c
                for c in self._snapshots.values()
                if c.state is CommandState.DELIVERED and c.camera == camera.serialno
            ]
            command = waiting[0] if waiting else None
        if command is None:
            return False
        command.complete(image)
        return True

    # -- mechanism ------------------------------------------------------------

    def submit(self, camera: Camera, command: C, *, confirm_within: float | None = None) -> C:
        """Queue ``command`` for ``camera`` with its expiry (and, for a
        command the camera confirms, the time it has to answer)."""
        mode = camera.mode
        refusal = mode.refusal(command.capability)
        if refusal is not None:
            raise NotSupported(f"camera {camera.serialno} ({describe_mode(mode)}): {refusal}")
        if mode.waits_for_plate(command.capability):
            command.waits_for = "plate"
            command.reason = (
                "waits for the camera's next plate read: on common heartbeat it reads "
                "no other reply (switch it to comet polling)"
            )
        command.camera = camera.serialno
        now = self._clock.seconds()
        deadline = command.expires_at - now
        if confirm_within is not None:
            deadline = confirm_within
        self._timers[command.id] = self._clock.callLater(
            max(deadline, 0.0), self._timed_out, camera, command
        )
        command.done.addBoth(self._finished, camera)
        self._registry.queue(camera.serialno, command)
        log.info(
            "Command {command_id} ({kind}) queued for camera {serialno}",
            command_id=command.id,
            kind=command.kind,
            serialno=camera.serialno,
            command=command.describe(),
        )
        return command

    def _timed_out(self, camera: Camera, command: CameraCommand) -> None:
        self._timers.pop(command.id, None)
        if command.state is CommandState.QUEUED:
            self._registry.withdraw(camera, command)
            command.fail(CommandState.EXPIRED, "not delivered before it expired (camera silent)")
        elif not command.done.called:
            command.fail(CommandState.FAILED, "the camera did not answer in time")

    def _finished(self, command: CameraCommand, camera: Camera) -> CameraCommand:
        timer = self._timers.pop(command.id, None)
        if timer is not None and timer.active():
            timer.cancel()
        self._snapshots.pop(command.id, None)
        log.info(
            "Command {command_id} ({kind}) for camera {serialno}: {state}{reason}",
            command_id=command.id,
            kind=command.kind,
            serialno=camera.serialno,
            state=command.state.value,
            reason=f" ({command.reason})" if command.reason else "",
        )
        if self.bus is not None:
            self.bus.publish("command", {**command.describe(), "reason": command.reason})
        if self.recorder is not None:
            Deferred.fromCoroutine(self._record(camera, command)).addErrback(
                lambda failure: log.failure("Recording a command result failed", failure)
            )
        return command

    async def _record(self, camera: Camera, command: CameraCommand) -> None:
        assert self.recorder is not None
        # The shape the upstream API documents for command results.
        details: dict[str, Any] = {
            "command": {
                "id": command.id,
                "type": command.kind,
                "outcome": command.state.value,
                "detail": command.reason,
            }
        }
        described = command.describe()
        for key in ("channel", "bytes", "io", "value"):
            if key in described:
                details["command"][key] = described[key]
        if command.origin:
            details["command"]["origin"] = command.origin
        if command.operator:
            details["command"]["operator"] = command.operator
        if isinstance(command, Snapshot) and isinstance(command.result, bytes):
            details["command"]["image_bytes"] = len(command.result)
        try:
            await self.recorder.record(
                CameraEvent(
                    id=new_event_id("command_result"),
                    kind="command_result",
                    camera=camera.serialno,
                    lane=camera.lane,
                    received_at=datetime.fromtimestamp(self._clock.seconds(), tz=timezone.utc),
                    details=details,
                )
            )
        except EventNotKept as error:
            log.warn(
                "The result of command {command_id} could not be kept: {reason}",
                command_id=command.id,
                reason=str(error),
            )

    def _online(self, serialno: str) -> Camera:
        camera = self._registry.get(serialno)
        if camera is None:
            raise UnknownCamera(f"no camera {serialno} is known to this gateway")
        if not camera.online:
            raise CameraOffline(f"camera {camera.serialno} is offline")
        return camera

    def _channel(self, camera: Camera, channel: int | None) -> int:
        if channel is None:
            lane = self._lanes.for_camera(camera.serialno)
            return lane.barrier_channel if lane else 0
        if not 0 <= channel <= 3:
            raise CommandRefused(f"barrier channel must be 0-3, got {channel}")
        return channel

    def _identity(
        self,
        *,
        command_id: str | None = None,
        expires_at: float | None = None,
        origin: str | None = None,
        operator: str | None = None,
    ) -> dict[str, Any]:
        """A command's id and expiry (the caller's, or ours), its origin and
        the person who asked."""
        latest = self._clock.seconds() + self.expiry
        identity: dict[str, Any] = {
            "expires_at": latest if expires_at is None else min(expires_at, latest)
        }
        if command_id:
            identity["id"] = command_id
        if origin:
            identity["origin"] = origin
        if operator:
            identity["operator"] = operator
        return identity


class CloudCommands:
    """The cloud's commands (from its sync feed) carried out through
    :class:`CameraControl`, keeping the cloud's command id, so the
    ``command_result`` event the cloud receives names its own command.

    A command that cannot be sent raises ``ValueError`` with the reason, which
    the link reports to the cloud as rejected.
    """

    def __init__(self, control: CameraControl, clock: IReactorTime) -> None:
        self._control = control
        self._clock = clock

    async def submit(self, command: CloudCommand) -> None:
        kind = command.type
        serialno = command.camera
        fields = command.fields
        origin: dict[str, Any] = {"command_id": command.id}
        if command.expires_at is not None:
            expires_at = command.expires_at.timestamp()
            if expires_at <= self._clock.seconds():
                raise ValueError("it expired before it arrived")
            origin["expires_at"] = expires_at
        control = self._control
        try:
            if kind == "open":
                control.open(serialno, fields.get("channel"), **origin)
            elif kind == "trigger":
                control.trigger(serialno, **origin)
            elif kind == "serial":
                control.send_serial(
                    serialno, fields.get("channel") or 0, fields.get("data") or b"", **origin
                )
            elif kind == "display":
                text = "\n".join(fields.get("lines") or ()) or fields.get("voice") or ""
                control.say(serialno, text, **origin)
            elif kind == "snapshot":
                control._online(serialno)  # refused at once, not later
                # The image arrives as a snapshot event (with the image) later;
                # the command's own result event says how it ended.
                waiting = Deferred.fromCoroutine(control.snapshot(serialno, **origin))
                waiting.addErrback(lambda failure: failure.trap(CommandFailed, CommandRefused))
            else:
                raise ValueError(f"unknown command type {kind!r}")
        except CommandRefused as error:
            raise ValueError(str(error)) from None
