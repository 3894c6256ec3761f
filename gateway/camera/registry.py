"""Every camera the gateway has heard from: liveness, command queues and
held comet polls (PROTOCOL.md section 3)."""

from __future__ import annotations

import enum
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator

import attrs
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from gateway.camera.commands import CameraCommand, CommandState, Reply
from gateway.protocol.capabilities import (
    ADVICE,
    CameraMode,
    Capability,
    Generation,
    HeartbeatMode,
    ReplyKind,
    advice_for,
)
from gateway.protocol.messages import Dialect

log = Logger()

# A comet camera posts its next poll as soon as it has read a reply, up to about
# 3 s later on a slow link (4G, a new TLS connection per poll); a camera on
# common heartbeat comes back 5 or 30 seconds after its last one. A gap shorter
# than this after an answer given at once means comet polling (PROTOCOL.md
# sections 3 and 9).
COMET_GAP_SECONDS = 4.0
#: The most cameras in no lane kept at once (any push may claim a serial number),
#: and how long one is kept once silent.
MAX_UNLISTED_CAMERAS = 1000
UNLISTED_SILENCE_SECONDS = 24 * 3600.0
# A held poll dropped sooner than this was a common heartbeat (its timeout is
# the 5 s push timeout), not a comet poll whose timeout is about 30 s.
COMMON_TIMEOUT_SECONDS = 6.0
# Without a measured interval, cameras heartbeat about every 30 seconds.
NOMINAL_HEARTBEAT_SECONDS = 30.0


class PollOutcome(str, enum.Enum):
    """Why a held comet poll was answered."""

    IMMEDIATE = "immediate"  # not held at all
    COMMAND = "command"  # a command was queued for the camera
    DEADLINE = "deadline"  # the hold time passed
    SUPERSEDED = "superseded"  # the camera sent a newer poll


StateObserver = Callable[["Camera", bool], None]


@attrs.define(eq=False)
class Camera:
    """What the gateway knows of one camera; mutable live state."""

    serialno: str
    dialect: Dialect | None = None
    address: str | None = None  # source address of its last request
    ipaddr: str | None = None  # what it says its address is
    device_name: str | None = None
    # The character encoding its pushes arrive in ("utf-8", "gb18030"), as last learnt
    # from a push that was not plain ASCII; None until then. Commands with text
    # (ParkingCam whitelist rows) are written in it.
    charset: str | None = None
    web_port: int | None = None
    # Where the camera reaches the gateway (host, port, TLS): for URLs the
    # camera is asked to call back (snapshot uploads).
    gateway_address: tuple[str, int, bool] | None = None
    lane: str | None = None
    heartbeat: HeartbeatMode = HeartbeatMode.UNKNOWN
    fixed_heartbeat: bool = False  # the configuration says which mode it uses
    generation: Generation = Generation.UNKNOWN  # told by its first plate push
    online: bool = True
    first_seen: float = 0.0
    last_seen: float = 0.0
    last_heartbeat: float | None = None
    heartbeat_interval: float | None = None  # measured between common heartbeats
    # How long this camera's polls may be held; lowered when the camera shows
    # it gives up sooner, zero when it cannot be held at all.
    hold_limit: float | None = None
    # The camera's web login from its registration: memory only, never logged.
    web_user: str | None = attrs.field(default=None, repr=False)
    web_password: str | None = attrs.field(default=None, repr=False)
    commands: deque[CameraCommand] = attrs.field(factory=deque, repr=False)
    _last_answer: float | None = attrs.field(default=None, repr=False)
    # Whether that answer was held: only a gap after an answer given at once
    # tells a comet poll from a common heartbeat.
    _last_answer_held: bool = attrs.field(default=False, repr=False)
    # Quick comebacks in a row after answers given at once, and how many make
    # a comet camera (more once the camera dropped a held registration).
    _quick_gaps: int = attrs.field(default=0, repr=False)
    _quick_gaps_needed: int = attrs.field(default=1, repr=False)
    # The advice already logged for this camera (each once).
    _advised: set[str] = attrs.field(factory=set, repr=False)
    _held: Deferred[PollOutcome] | None = attrs.field(default=None, repr=False)
    _held_since: float = attrs.field(default=0.0, repr=False)
    _silence_timer: IDelayedCall | None = attrs.field(default=None, repr=False)

    @property
    def holding(self) -> bool:
        return self._held is not None

    @property
    def mode(self) -> CameraMode:
        """What decides which of its replies this camera reads, and what in them."""
        return CameraMode(self.dialect, self.generation, self.heartbeat)

    def describe(self) -> dict[str, object]:
        """A JSON-ready view for the admin API (no credentials)."""
        return {
            "serialno": self.serialno,
            "lane": self.lane,
            "dialect": self.dialect.value if self.dialect else None,
            "address": self.address,
            "ipaddr": self.ipaddr,
            "device_name": self.device_name,
            "web_port": self.web_port,
            "heartbeat": self.heartbeat.value,
            "online": self.online,
            "last_seen": self.last_seen,
            "poll_held": self.holding,
            "queued_commands": len(self.commands),
            "firmware": self.generation.value,
            # Where an open reaches the camera: "plate" and "poll" replies, or
            # "plate" and "heartbeat" ones.
            "commands_in": sorted(kind.value for kind in self.mode.replies_for(Capability.OPEN)),
            "advice": advice_for(self.mode),
        }


class CameraRegistry(Service):
    """The cameras of the site, keyed by serial number (case-insensitive).

    ``comet_hold`` is the longest a comet poll is held; ``missed_intervals``
    heartbeat intervals of silence mark a camera offline. Cameras whose
    heartbeat mode is fixed by configuration are registered with
    :meth:`configure`.
    """

    def __init__(
        self,
        clock: IReactorTime,
        *,
        comet_hold: float = 20.0,
        missed_intervals: int = 3,
        max_unlisted: int = MAX_UNLISTED_CAMERAS,
    ) -> None:
        self.setName("cameras")
        self._clock = clock
        self.comet_hold = comet_hold
        self.missed_intervals = missed_intervals
        self.max_unlisted = max_unlisted
        self._cameras: dict[str, Camera] = {}
        # Cameras in no lane, the longest silent first: any push may claim a
        # new serial number, so they are capped and the longest silent go.
        self._unlisted: OrderedDict[str, None] = OrderedDict()
        self.forgotten = 0
        self._state_observers: list[StateObserver] = []
        self._stopped = False

    # -- lookup -----------------------------------------------------------

    def __iter__(self) -> Iterator[Camera]:
        return iter(sorted(self._cameras.values(), key=lambda c: c.serialno))

    def __len__(self) -> int:
        return len(self._cameras)

    def get(self, serialno: str) -> Camera | None:
        return self._cameras.get(serialno.casefold())

    def by_address(self, address: str) -> Camera | None:
        """The camera that last spoke from (or says it has) this address."""
        for camera in self._cameras.values():
            if camera.address == address:
                return camera
        for camera in self._cameras.values():
            if camera.ipaddr == address:
                return camera
        return None

    def held_polls(self) -> int:
        return sum(1 for c in self._cameras.values() if c.holding)

    # -- observers --------------------------------------------------------

    def on_state_change(self, observer: StateObserver) -> None:
        """Call ``observer(camera, online)`` when a camera goes on or off line."""
        self._state_observers.append(observer)

    # -- contact ----------------------------------------------------------

    def configure(self, serialno: str, *, lane: str, heartbeat: str) -> Camera:
        """Declare a camera of the configuration: its lane and, unless
        ``heartbeat`` is ``"auto"``, its heartbeat mode."""
        camera = self._ensure(serialno)
        self._unlisted.pop(camera.serialno.casefold(), None)
        camera.lane = lane
        if heartbeat != "auto":
            camera.heartbeat = HeartbeatMode(heartbeat)
            camera.fixed_heartbeat = True
        # Not heard from yet: not online until it speaks.
        camera.online = False
        return camera

    def seen(
        self,
        serialno: str,
        *,
        address: str | None,
        dialect: Dialect | None = None,
        device_name: str | None = None,
        ipaddr: str | None = None,
        charset: str | None = None,
    ) -> Camera:
        """Record any request from a camera: it is alive. ``charset`` is the encoding
        of its push, when the push said (None leaves what was learnt)."""
        camera = self._ensure(serialno)
        key = serialno.casefold()
        if key in self._unlisted:
            self._unlisted.move_to_end(key)
        now = self._clock.seconds()
        camera.last_seen = now
        if address:
            camera.address = address
        if dialect is not None:
            camera.dialect = dialect
        if device_name:
            camera.device_name = device_name
        if ipaddr:
            camera.ipaddr = ipaddr
        if charset is not None:
            camera.charset = charset
        if not camera.online:
            camera.online = True
            log.info(
                "Camera {serialno} online from {address}",
                serialno=camera.serialno,
                address=camera.address,
            )
            self._notify_state(camera)
        self._arm_silence_timer(camera)
        return camera

    def heartbeat(
        self,
        camera: Camera,
        *,
        web_port: int | None = None,
        web_user: str | None = None,
        web_password: str | None = None,
    ) -> None:
        """Record a registration (Vzenith) or heartbeat (ParkingCam) and
        learn the camera's heartbeat interval."""
        now = self._clock.seconds()
        if web_port is not None:
            camera.web_port = web_port
        if web_user is not None:
            camera.web_user = web_user
        if web_password is not None:
            camera.web_password = web_password
        if camera.last_heartbeat is not None and camera.heartbeat is not HeartbeatMode.COMET:
            gap = now - camera.last_heartbeat
            if gap > COMET_GAP_SECONDS:
                camera.heartbeat_interval = gap
        camera.last_heartbeat = now
        if camera.dialect is Dialect.PARKINGCAM and not camera.fixed_heartbeat:
            # ParkingCam heartbeats are periodic, never comet polls.
            camera.heartbeat = HeartbeatMode.COMMON
        self._arm_silence_timer(camera)

    # -- comet polls ------------------------------------------------------

    def hold_time(self, camera: Camera) -> float:
        """How long to hold this registration of ``camera``; 0 answers at once.

        Heartbeat and comet bodies are identical, so the mode is learnt from
        timing (PROTOCOL.md sections 3 and 9): the first registration is
        answered at once, and a camera whose next one arrives within a few
        seconds of an answer given at once is comet-polling; one that comes
        back later is on common heartbeat, never held (its timeout is the
        short push timeout). Gaps after a held answer are not used: a 5 s
        heartbeat held for 4 s would look like a poll.
        """
        if (
            not camera.fixed_heartbeat
            and camera._last_answer is not None
            and not camera._last_answer_held
        ):
            gap = self._clock.seconds() - camera._last_answer
            if gap > COMET_GAP_SECONDS:
                camera._quick_gaps = 0
                camera.heartbeat = HeartbeatMode.COMMON
                self._advise(camera)
            else:
                camera._quick_gaps += 1
                if camera._quick_gaps >= camera._quick_gaps_needed:
                    camera.heartbeat = HeartbeatMode.COMET
        if camera.heartbeat is not HeartbeatMode.COMET or self._has_work(camera, ReplyKind.POLL):
            return 0.0
        limit = self.comet_hold if camera.hold_limit is None else camera.hold_limit
        return min(self.comet_hold, limit)

    async def hold_poll(self, camera: Camera) -> PollOutcome:
        """Hold a comet poll until a command is queued for the camera, the
        hold time passes, or the camera sends a newer poll.

        Cancelling (the connection dropped) frees the slot at once and, if the
        camera gave up before the deadline, shortens its future holds.
        """
        if camera._held is not None:
            # The camera has given up on the older request: answer it idle.
            previous, camera._held = camera._held, None
            previous.callback(PollOutcome.SUPERSEDED)
        hold = self.hold_time(camera)
        camera._last_answer_held = hold > 0
        if hold <= 0:
            return PollOutcome.IMMEDIATE

        timer: IDelayedCall | None = None

        def cancel(d: Deferred[PollOutcome]) -> None:
            if timer is not None and timer.active():
                timer.cancel()

        waiting: Deferred[PollOutcome] = Deferred(cancel)
        timer = self._clock.callLater(hold, self._release, camera, waiting, PollOutcome.DEADLINE)
        camera._held = waiting
        camera._held_since = self._clock.seconds()
        try:
            return await waiting
        except CancelledError:
            self._poll_dropped(camera, hold)
            raise
        finally:
            if timer.active():
                timer.cancel()
            if camera._held is waiting:
                camera._held = None

    def _release(self, camera: Camera, waiting: Deferred[PollOutcome], why: PollOutcome) -> None:
        if camera._held is waiting:
            camera._held = None
        if not waiting.called:
            waiting.callback(why)

    def _poll_dropped(self, camera: Camera, hold: float) -> None:
        held_for = self._clock.seconds() - camera._held_since
        if held_for >= hold - 0.5:
            return
        if held_for < COMMON_TIMEOUT_SECONDS and not camera.fixed_heartbeat:
            # Given up within the push timeout: a common heartbeat, whose
            # reply the camera does not read (its retry after the failure
            # comes at once, so it is taken for comet again only after
            # several quick comebacks to answers given at once).
            camera.heartbeat = HeartbeatMode.COMMON
            camera._last_answer_held = False
            camera._quick_gaps = 0
            camera._quick_gaps_needed = 3
            self._advise(camera)
            log.warn(
                "Camera {serialno} dropped a registration held for {held:.1f}s: it is on "
                "common heartbeat, answered at once from now on",
                serialno=camera.serialno,
                held=held_for,
            )
            return
        # The camera's request timeout is shorter than our hold: hold less
        # from now on (or not at all) so its polls stop failing.
        new_limit = held_for - 1.0 if held_for > 2.0 else 0.0
        if camera.hold_limit is None or new_limit < camera.hold_limit:
            camera.hold_limit = new_limit
            log.warn(
                "Camera {serialno} dropped a comet poll held for {held:.1f}s; "
                "its timeout is shorter than the hold, "
                "holding its polls for {limit:.1f}s from now on",
                serialno=camera.serialno,
                held=held_for,
                limit=new_limit,
            )

    def answered(self, camera: Camera) -> None:
        """Note that a registration of ``camera`` was just answered."""
        camera._last_answer = self._clock.seconds()

    # -- commands ---------------------------------------------------------

    def queue(self, serialno: str, command: CameraCommand) -> Camera:
        """Queue a command for a camera; a held poll of it is released now."""
        camera = self._ensure(serialno)
        camera.commands.append(command)
        held = camera._held
        if held is not None and camera.mode.carries(command.capability, ReplyKind.POLL):
            self._release(camera, held, PollOutcome.COMMAND)
        return camera

    def fill_reply(self, camera: Camera, reply: Reply, kind: ReplyKind) -> list[CameraCommand]:
        """Put every queued command that ``camera`` reads in a reply of
        ``kind`` into ``reply``, and mark those delivered.

        Expired commands are dropped, never delivered late. A command that
        does not ride in this reply (the camera does not read it there, or
        its slot is taken) keeps its place, and so do the later commands of
        its capability (edits of the camera's list, serial bytes keep their
        order); commands of other capabilities go by.
        """
        self._drop_expired(camera)
        if not camera.mode.reads(kind):
            return []
        mode = camera.mode
        delivered: list[CameraCommand] = []
        waiting: set[object] = set()
        for command in list(camera.commands):
            capability = command.capability
            if capability in waiting:
                continue
            if (
                command.whole_reply() is not None
                or not mode.carries(capability, kind)
                or not command.apply(reply)
            ):
                waiting.add(capability)
                continue
            camera.commands.remove(command)
            command.delivered()
            delivered.append(command)
        return delivered

    def take_whole_reply(self, camera: Camera) -> CameraCommand | None:
        """The first command that is a heartbeat reply of its own (a
        ParkingCam whitelist command), taken off the queue and marked
        delivered."""
        self._drop_expired(camera)
        for command in camera.commands:
            if command.whole_reply() is not None:
                camera.commands.remove(command)
                command.delivered()
                return command
        return None

    def _has_work(self, camera: Camera, kind: ReplyKind) -> bool:
        mode = camera.mode
        return any(mode.carries(command.capability, kind) for command in camera.commands)

    def withdraw(self, camera: Camera, command: CameraCommand) -> bool:
        """Take a command off the queue (it expired, or was cancelled)."""
        try:
            camera.commands.remove(command)
        except ValueError:
            return False
        return True

    def _drop_expired(self, camera: Camera) -> None:
        """Drop every expired command of the camera's queue."""
        now = self._clock.seconds()
        for command in [c for c in camera.commands if c.expires_at <= now]:
            camera.commands.remove(command)
            command.fail(CommandState.EXPIRED, "not delivered before it expired")
            log.info(
                "Command {command_id} for camera {serialno} expired undelivered",
                command_id=command.id,
                serialno=camera.serialno,
            )

    # -- liveness ---------------------------------------------------------

    def expected_interval(self, camera: Camera) -> float | None:
        """Seconds between two contacts of a healthy camera, if it beats."""
        if camera.heartbeat is HeartbeatMode.COMET:
            return self.comet_hold + COMET_GAP_SECONDS
        if camera.heartbeat is HeartbeatMode.OFF:
            return None
        if camera.last_heartbeat is None:
            return None  # a camera that never beats: no silence to notice
        return camera.heartbeat_interval or NOMINAL_HEARTBEAT_SECONDS

    def _arm_silence_timer(self, camera: Camera) -> None:
        interval = self.expected_interval(camera)
        timer = camera._silence_timer
        if timer is not None and timer.active():
            timer.cancel()
        camera._silence_timer = None
        if interval is not None and not self._stopped:
            camera._silence_timer = self._clock.callLater(
                interval * self.missed_intervals, self._silent, camera
            )

    def _silent(self, camera: Camera) -> None:
        camera._silence_timer = None
        if camera.online:
            camera.online = False
            log.warn(
                "Camera {serialno} offline: silent for {missed} heartbeat intervals",
                serialno=camera.serialno,
                missed=self.missed_intervals,
            )
            self._notify_state(camera)

    def firmware(self, camera: Camera, generation: Generation) -> None:
        """Note the firmware generation a camera's plate push shows."""
        if generation is not Generation.UNKNOWN and generation is not camera.generation:
            camera.generation = generation
            self._advise(camera)

    def _advise(self, camera: Camera) -> None:
        """Tell the installer, once per camera, what to change about it."""
        code = advice_for(camera.mode)
        if code is not None and code not in camera._advised:
            camera._advised.add(code)
            log.warn("Camera {serialno}: {advice}", serialno=camera.serialno, advice=ADVICE[code])

    def _notify_state(self, camera: Camera) -> None:
        for observer in self._state_observers:
            try:
                observer(camera, camera.online)
            except Exception:
                log.failure("Camera state observer failed")

    def _ensure(self, serialno: str) -> Camera:
        key = serialno.casefold()
        camera = self._cameras.get(key)
        if camera is None:
            now = self._clock.seconds()
            camera = Camera(serialno=serialno, first_seen=now, last_seen=now)
            self._cameras[key] = camera
            self._unlisted[key] = None  # until configure() says it is a lane's
            while len(self._unlisted) > self.max_unlisted:
                oldest, _ = self._unlisted.popitem(last=False)
                self._forget(oldest)
            # And those silent for a day, the longest silent being first.
            while self._unlisted:
                oldest = next(iter(self._unlisted))
                if now - self._cameras[oldest].last_seen < UNLISTED_SILENCE_SECONDS:
                    break
                del self._unlisted[oldest]
                self._forget(oldest)
        return camera

    def _forget(self, key: str) -> None:
        """Drop a camera in no lane: its timers, its held poll, its commands."""
        camera = self._cameras.pop(key, None)
        if camera is None:
            return
        timer = camera._silence_timer
        if timer is not None and timer.active():
            timer.cancel()
        camera._silence_timer = None
        held = camera._held
        if held is not None:
            self._release(camera, held, PollOutcome.SUPERSEDED)
        for command in list(camera.commands):
            command.fail(CommandState.EXPIRED, "the camera was forgotten (in no lane, long silent)")
        camera.commands.clear()
        self.forgotten += 1
        if self.forgotten == 1:
            log.warn(
                "More than {limit} cameras in no lane have been heard from: the longest "
                "silent are forgotten from now on (camera {serialno} first)",
                limit=self.max_unlisted,
                serialno=camera.serialno,
            )

    def stopService(self) -> None:
        super().stopService()
        self.stop()

    def stop(self) -> None:
        """Cancel every timer (service shutdown); none is armed after this."""
        self._stopped = True
        for camera in self._cameras.values():
            timer = camera._silence_timer
            if timer is not None and timer.active():
                timer.cancel()
            camera._silence_timer = None
