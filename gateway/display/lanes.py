"""Lane displays: what each lane's LED board shows and says, and how it gets there.

A lane's board is reached one of two ways (``DisplaySettings.via``):

* through the camera: frames ride in a camera reply (``serialData``), and the camera writes
  them to its serial port. A plate decision's frames go into the reply to that plate push
  (:attr:`Delivery.REPLY`); everything else (idle text, clock, test messages, events) is
  queued for the camera's next reply through the ``queue_camera_serial`` callback
  (:attr:`Delivery.QUEUED`);
* through a serial port of the gateway (:attr:`Delivery.PORT`), paced and bounded by
  :class:`~gateway.serial.ports.SerialPorts`.

After a message the lane's idle text comes back after the lane's dwell time; an idle text
showing the time is refreshed each minute, one with free spaces when the count changes.
Board clocks are set at start, hourly, and when a camera comes back online.

A message queued for a camera that a newer message makes stale (an idle text not yet
delivered when a plate is read) is withdrawn, so a camera never writes an old message
right after the new one.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, tzinfo
from typing import Any

import attrs
from twisted.application.service import MultiService
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from gateway.display.settings import LaneDisplay
from gateway.display.templates import (
    REASON_TEXTS,
    MessageTemplate,
    message_key,
    render,
    render_voice,
)
from gateway.policy import decision as reasons
from gateway.policy.decision import Decision
from gateway.protocol.board import (
    MAX_LINES,
    MAX_VOICE_BYTES,
    Colour,
    Line,
    SetClock,
    ShowLines,
    Speak,
    encode_frame,
    encode_text,
)
from gateway.serial.ports import SerialPorts
from gateway.timers import Every

__all__ = [
    "CLOCK_FRAME_TTL_SECONDS",
    "CameraSerialQueue",
    "Delivery",
    "DisplayOutput",
    "DisplayOverride",
    "EVENT_FRAME_TTL_SECONDS",
    "IDLE_FRAME_TTL_SECONDS",
    "LaneDisplays",
    "NoDisplay",
    "Withdraw",
]

log = Logger()

#: How long a clock frame may wait for its camera's next reply: a late clock frame sets a
#: wrong time, so it is short (a camera on 30 s heartbeats still gets it).
CLOCK_FRAME_TTL_SECONDS = 45.0
#: How long an idle text may wait for its camera (the minute refresh sends a new one).
IDLE_FRAME_TTL_SECONDS = 90.0
#: How long an event or test message may wait for its camera.
EVENT_FRAME_TTL_SECONDS = 30.0

#: Withdraws a frame queued for a camera if it has not been delivered yet.
Withdraw = Callable[[], None]

#: ``queue_camera_serial(camera serial number, serial channel, frame, expires_at)`` queues
#: one frame for the camera's next reply (``expires_at`` in clock seconds) and returns a
#: :data:`Withdraw` for it (or None when the frame cannot be withdrawn).
CameraSerialQueue = Callable[[str, int, bytes, float], Withdraw | None]


class Delivery(str, enum.Enum):
    """Where a display output went."""

    REPLY = "reply"  # the caller puts ``camera_serial`` into the reply it is building
    QUEUED = "queued"  # queued for the camera's next reply
    PORT = "port"  # written to the gateway's serial port
    NONE = "none"  # nothing to show, or no display on this lane


class NoDisplay(KeyError):
    """The lane has no display configured (or no such lane)."""

    def __str__(self) -> str:
        return f"lane {self.args[0]!r} has no display"


def _override_lines(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        raise TypeError("display lines must be a sequence of str, not one str")
    lines = tuple(value)
    if not all(isinstance(line, str) for line in lines):
        raise TypeError("display lines must be str")
    return lines


@attrs.frozen
class DisplayOverride:
    """Display lines and voice text chosen by the cloud for one decision.

    They replace the lane's templates as literal text (no fields). ``lines=None`` keeps
    the template's lines, ``()`` shows no lines; ``voice=None`` keeps the template's
    voice, ``""`` says nothing. Offline records and repeated reads ignore overrides: their
    car is gone, or was answered already.
    """

    lines: tuple[str, ...] | None = attrs.field(default=None, converter=_override_lines)
    voice: str | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.instance_of(str))
    )


@attrs.frozen
class DisplayOutput:
    """What a lane's display was given.

    ``frames`` are the board frames in order. For :attr:`Delivery.REPLY` they must go into
    the reply being built, on the camera's serial ``channel``: see :attr:`camera_serial`.
    ``lines`` / ``voice`` are the rendered text, for logs and the admin page.
    """

    lane: str
    delivery: Delivery
    frames: tuple[bytes, ...] = ()
    channel: int | None = None
    port: str | None = None
    lines: tuple[str, ...] = ()
    voice: str | None = None

    @property
    def camera_serial(self) -> list[tuple[int, bytes]]:
        """``(serial channel, frame)`` items for ``PlateReply.serial`` (REPLY only)."""
        if self.delivery is not Delivery.REPLY or self.channel is None:
            return []
        return [(self.channel, frame) for frame in self.frames]


@attrs.define(eq=False)
class _Lane:
    spec: LaneDisplay
    free_spaces: int | None
    idle_timer: IDelayedCall | None = None
    showing_idle: bool = False
    last_idle: tuple[tuple[str, ...], str | None] | None = None
    # Withdraw handles of frames queued for the camera that a newer message makes stale.
    stale_on_next: list[Withdraw] = attrs.Factory(list)
    # ... and of the last clock frame queued, which a newer clock frame replaces (a camera
    # away for days must not collect a clock frame every hour).
    clock_pending: list[Withdraw] = attrs.Factory(list)

    @property
    def name(self) -> str:
        return self.spec.lane


class LaneDisplays(MultiService):
    """The displays and voice boards of every lane that has one.

    ``clock`` times dwell, refreshes and clock sync; ``tz`` is the site's time zone (the
    boards show local time); ``ports`` carries lanes reached ``via = "serial"``;
    ``queue_camera_serial`` carries frames for lanes reached ``via = "camera"`` that are not
    part of a plate reply. Start it as a service: it sets the board clocks and shows each
    lane's idle text.
    """

    def __init__(
        self,
        *,
        clock: IReactorTime,
        lanes: Sequence[LaneDisplay],
        tz: tzinfo,
        ports: SerialPorts | None = None,
        queue_camera_serial: CameraSerialQueue | None = None,
        clock_sync_seconds: float = 3600.0,
    ) -> None:
        super().__init__()
        self._clock = clock
        self._tz = tz
        self._ports = ports
        self._queue = queue_camera_serial
        self._lanes: dict[str, _Lane] = {}
        for spec in lanes:
            key = spec.lane.casefold()
            if key in self._lanes:
                raise ValueError(f"lane {spec.lane!r} has two displays")
            settings = spec.settings
            if settings.via == "serial":
                if ports is None or settings.port not in ports:
                    raise ValueError(
                        f"lane {spec.lane!r}: its display's serial port {settings.port!r} "
                        "is not configured"
                    )
            elif queue_camera_serial is None:
                raise ValueError(
                    f"lane {spec.lane!r}: a display via the camera needs queue_camera_serial"
                )
            self._lanes[key] = _Lane(spec=spec, free_spaces=settings.free_spaces)
        self._minute_tick: IDelayedCall | None = None
        Every(clock, clock_sync_seconds, self.sync_clocks, name="display-clocks").setServiceParent(self)

    # -- queries ------------------------------------------------------------

    @property
    def lanes(self) -> list[str]:
        """Names of the lanes with a display."""
        return [state.name for state in self._lanes.values()]

    def has_display(self, lane: str) -> bool:
        return lane.casefold() in self._lanes

    def _lane(self, lane: str) -> _Lane:
        try:
            return self._lanes[lane.casefold()]
        except KeyError:
            raise NoDisplay(lane) from None

    # -- messages -------------------------------------------------------------

    def frames_for_decision(
        self,
        lane: str,
        decision: Decision,
        plate: str,
        overrides: DisplayOverride | None = None,
    ) -> DisplayOutput:
        """The message for a plate decision on ``lane``.

        Via the camera, the frames are returned for the reply to that plate push
        (:attr:`DisplayOutput.camera_serial`) and anything still queued for the display is
        withdrawn; via a serial port they are written at once. The idle text comes back
        after the lane's dwell time. ``plate`` is the plate as read (what drivers see on
        their car). A lane without a display gets ``Delivery.NONE``.

        Never raises: this runs on the plate path, where a display problem must not cost
        the driver the barrier. A failure is logged and gives ``Delivery.NONE``.
        """
        state = self._lanes.get(lane.casefold())
        if state is None:
            return DisplayOutput(lane=lane, delivery=Delivery.NONE)
        try:
            spec = state.spec
            key = message_key(decision.open, decision.reason)
            template = spec.settings.message(key, spec.direction)
            if decision.reason in (reasons.OFFLINE_RECORD, reasons.DUPLICATE):
                overrides = None
            values = self._values(
                state, plate=plate, reason=decision.reason, valid_until=decision.valid_until
            )
            return self._show(state, template, values, overrides, reply=True)
        except Exception:
            log.failure("Display message for a plate on lane {lane} failed", lane=state.name)
            return DisplayOutput(lane=state.name, delivery=Delivery.NONE)

    def frames_for_event(
        self,
        lane: str,
        message: MessageTemplate,
        *,
        plate: str | None = None,
        ttl_seconds: float = EVENT_FRAME_TTL_SECONDS,
    ) -> DisplayOutput:
        """Show ``message`` (templates, rendered now) for an event that has no reply of
        its own, e.g. a barrier opened from the admin page. Via the camera it is queued
        for the camera's next reply (until ``ttl_seconds``); via a port it is written.
        A lane without a display gets ``Delivery.NONE``."""
        state = self._lanes.get(lane.casefold())
        if state is None:
            return DisplayOutput(lane=lane, delivery=Delivery.NONE)
        values = self._values(state, plate=plate)
        return self._show(state, message, values, None, reply=False, ttl_seconds=ttl_seconds)

    def test_message(self, lane: str, text: str, *, speak: bool = True) -> DisplayOutput:
        """Show ``text`` (literal; one display line per text line) and, with ``speak``,
        say it: the admin page's display test. Raises :class:`NoDisplay` for a lane
        without a display."""
        state = self._lane(lane)
        lines = tuple(part.strip() for part in text.splitlines() if part.strip())
        voice = "，".join(lines) if speak and lines else ""
        override = DisplayOverride(lines=lines, voice=voice)
        return self._show(state, MessageTemplate(), {}, override, reply=False, force_lines=True)

    def send_raw(
        self, lane: str, data: bytes, *, ttl_seconds: float = EVENT_FRAME_TTL_SECONDS
    ) -> DisplayOutput:
        """Send ``data`` as is to the lane's board path (a board or command this gateway
        does not encode itself). Raises :class:`NoDisplay` for a lane without a display."""
        state = self._lane(lane)
        return self._deliver(
            state, (bytes(data),), reply=False, ttl_seconds=ttl_seconds, supersede=False
        )

    # -- idle text ------------------------------------------------------------

    def restore_idle(self, lane: str | None = None) -> None:
        """Show the idle text now on ``lane`` (every lane when None), cancelling a pending
        restore."""
        for state in self._selected(lane):
            self._cancel_timer(state)
            self._show_idle(state, force=True)

    def cancel_idle(self, lane: str) -> None:
        """Keep the current message: cancel the pending idle restore of ``lane``."""
        self._cancel_timer(self._lane(lane))

    def set_free_spaces(self, lane: str, free: int | None) -> None:
        """Update ``{free}`` for ``lane``; an idle display shows the new count now."""
        if free is not None and (isinstance(free, bool) or not isinstance(free, int) or free < 0):
            raise ValueError(f"free spaces must be a non-negative int or None, not {free!r}")
        state = self._lane(lane)
        state.free_spaces = free
        if state.showing_idle:
            self._show_idle(state, force=False)

    def camera_online(self, camera: str) -> None:
        """A camera (re)appeared: set its boards' clocks and show their idle text again,
        as what was queued while it was away has expired."""
        wanted = camera.casefold()
        for state in self._lanes.values():
            spec = state.spec
            if spec.settings.via != "camera" or spec.camera.casefold() != wanted:
                continue
            self._sync_board(state)
            if state.idle_timer is None:
                self._show_idle(state, force=True)

    # -- clocks -----------------------------------------------------------------

    def sync_clocks(self) -> None:
        """Set every board's clock to the site's local time now."""
        seen: set[tuple[Any, ...]] = set()
        for state in self._lanes.values():
            settings = state.spec.settings
            if settings.via == "serial":
                board: tuple[Any, ...] = ("serial", settings.port, settings.address)
            else:
                board = (
                    "camera",
                    state.spec.camera.casefold(),
                    settings.camera_channel,
                    settings.address,
                )
            if board in seen:
                continue
            seen.add(board)
            self._sync_board(state)

    def _sync_board(self, state: _Lane) -> None:
        frame = encode_frame(SetClock(self._now()), state.spec.settings.address)
        previous, state.clock_pending = state.clock_pending, []
        for withdraw in previous:
            withdraw()
        self._deliver(
            state,
            (frame,),
            reply=False,
            ttl_seconds=CLOCK_FRAME_TTL_SECONDS,
            supersede=False,
            keep=state.clock_pending,
        )

    # -- service ----------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.sync_clocks()
        self.restore_idle()
        self._schedule_minute_tick()

    def stopService(self) -> Any:
        if self._minute_tick is not None and self._minute_tick.active():
            self._minute_tick.cancel()
        self._minute_tick = None
        for state in self._lanes.values():
            self._cancel_timer(state)
        return super().stopService()

    def _schedule_minute_tick(self) -> None:
        # Just past the next minute boundary, so a "{time}" idle text changes with the clock.
        delay = 60.0 - (self._clock.seconds() % 60.0) + 0.05
        self._minute_tick = self._clock.callLater(delay, self._on_minute)

    def _on_minute(self) -> None:
        self._minute_tick = None
        try:
            for state in self._lanes.values():
                if state.showing_idle and state.idle_timer is None:
                    self._show_idle(state, force=False)
        except Exception:
            log.failure("Refreshing the idle displays failed")
        self._schedule_minute_tick()

    # -- internals ----------------------------------------------------------------

    def _selected(self, lane: str | None) -> Iterable[_Lane]:
        if lane is None:
            return list(self._lanes.values())
        return [self._lane(lane)]

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.seconds(), tz=self._tz)

    def _values(
        self,
        state: _Lane,
        *,
        plate: str | None = None,
        reason: str | None = None,
        valid_until: datetime | None = None,
    ) -> dict[str, str | None]:
        now = self._now()
        until: str | None = None
        if valid_until is not None:
            local = valid_until.astimezone(self._tz) if valid_until.tzinfo else valid_until
            until = local.strftime("%Y-%m-%d")
        return {
            "plate": plate.strip() if plate and plate.strip() else None,
            "lane": state.name,
            "reason": REASON_TEXTS.get(reason, reason) if reason else None,
            "valid_until": until,
            "time": now.strftime("%H:%M"),
            "date": now.strftime("%Y-%m-%d"),
            "free": None if state.free_spaces is None else str(state.free_spaces),
        }

    def _compose(
        self,
        template: MessageTemplate,
        values: Mapping[str, str | None],
        overrides: DisplayOverride | None,
    ) -> tuple[bool, tuple[str, ...], str | None]:
        """(show lines?, rendered lines, voice text or None)."""
        if overrides is not None and overrides.lines is not None:
            show, lines = bool(overrides.lines), overrides.lines
        else:
            rendered = (render(line, values) for line in template.lines)
            show, lines = bool(template.lines), tuple(line for line in rendered if line is not None)
        if overrides is not None and overrides.voice is not None:
            voice = overrides.voice.strip() or None
        elif template.voice is not None:
            voice = render_voice(template.voice, values) or None
        else:
            voice = None
        return show, lines, voice

    def _frames(
        self, state: _Lane, show: bool, lines: tuple[str, ...], voice: str | None, colour: Colour
    ) -> tuple[bytes, ...]:
        settings = state.spec.settings
        address = settings.address
        frames: list[bytes] = []
        if show:
            count = min(settings.display_lines, MAX_LINES)
            padded = (lines + ("",) * count)[:count]
            voice_fits = voice is not None and len(encode_text(voice, 1 << 16)) <= MAX_VOICE_BYTES
            command = ShowLines(
                [Line(text, line=index, colour=colour) for index, text in enumerate(padded)],
                voice=voice if voice_fits else None,
            )
            frames.append(encode_frame(command, address))
            if voice is not None and not voice_fits:
                # Too long for the display packet's voice block: a speak frame of its own.
                frames.append(encode_frame(Speak(voice), address))
        elif voice is not None:
            frames.append(encode_frame(Speak(voice), address))
        return tuple(frames)

    def _show(
        self,
        state: _Lane,
        template: MessageTemplate,
        values: Mapping[str, str | None],
        overrides: DisplayOverride | None,
        *,
        reply: bool,
        ttl_seconds: float = EVENT_FRAME_TTL_SECONDS,
        force_lines: bool = False,
    ) -> DisplayOutput:
        show, lines, voice = self._compose(template, values, overrides)
        show = show or force_lines
        if not show and voice is None:
            return DisplayOutput(lane=state.name, delivery=Delivery.NONE)
        frames = self._frames(state, show, lines, voice, template.colour)
        if show:
            # A message holds the display for the dwell time; the idle text follows.
            self._cancel_timer(state)
            state.showing_idle = False
            state.idle_timer = self._clock.callLater(
                state.spec.settings.dwell_seconds, self._idle_due, state
            )
        output = self._deliver(state, frames, reply=reply, ttl_seconds=ttl_seconds, supersede=show)
        return attrs.evolve(output, lines=lines if show else (), voice=voice)

    def _deliver(
        self,
        state: _Lane,
        frames: tuple[bytes, ...],
        *,
        reply: bool,
        ttl_seconds: float,
        supersede: bool,
        keep: list[Withdraw] | None = None,
    ) -> DisplayOutput:
        """Send ``frames`` the lane's way. ``supersede``: this message makes what is still
        queued for the display stale (withdrawn now), and is itself withdrawable by the
        next one; ``keep`` collects the withdraw handles of what is queued here."""
        settings = state.spec.settings
        if settings.via == "serial":
            assert self._ports is not None and settings.port is not None
            for frame in frames:
                self._ports.send(settings.port, frame)
            return DisplayOutput(
                lane=state.name, delivery=Delivery.PORT, frames=frames, port=settings.port
            )
        if supersede:
            stale, state.stale_on_next = state.stale_on_next, []
            for withdraw_stale in stale:
                withdraw_stale()
        channel = settings.camera_channel
        if reply:
            return DisplayOutput(
                lane=state.name, delivery=Delivery.REPLY, frames=frames, channel=channel
            )
        assert self._queue is not None
        if supersede:
            keep = state.stale_on_next
        expires_at = self._clock.seconds() + ttl_seconds
        for frame in frames:
            withdraw = self._queue(state.spec.camera, channel, frame, expires_at)
            if keep is not None and withdraw is not None:
                keep.append(withdraw)
        return DisplayOutput(
            lane=state.name, delivery=Delivery.QUEUED, frames=frames, channel=channel
        )

    def _idle_due(self, state: _Lane) -> None:
        state.idle_timer = None
        try:
            self._show_idle(state, force=True)
        except Exception:
            log.failure("Restoring the idle text of lane {lane} failed", lane=state.name)

    def _show_idle(self, state: _Lane, *, force: bool) -> None:
        spec = state.spec
        template = spec.settings.idle_message(spec.direction)
        show, lines, voice = self._compose(template, self._values(state), None)
        rendered = (lines, voice)
        state.showing_idle = True
        if not force and rendered == state.last_idle:
            return
        state.last_idle = rendered
        if not show and voice is None:
            return
        frames = self._frames(state, show, lines, voice, template.colour)
        self._deliver(
            state, frames, reply=False, ttl_seconds=IDLE_FRAME_TTL_SECONDS, supersede=True
        )

    def _cancel_timer(self, state: _Lane) -> None:
        if state.idle_timer is not None and state.idle_timer.active():
            state.idle_timer.cancel()
        state.idle_timer = None
