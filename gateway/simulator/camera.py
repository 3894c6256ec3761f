"""A simulated ANPR camera: pushes, heartbeats, retries, and what replies make it do.

The camera is the HTTP client. It runs three loops on the reactor it is given:

* the **producer** reads plates (and IO / serial input) on schedule;
* the **sender** pushes one request at a time, in order, on its kept-alive
  connection, re-sends failed pushes, stores what could not be delivered and
  uploads stored records one by one once the server answers again;
* the **heartbeat** loop registers (common heartbeat or comet polling;
  ParkingCam: JSON heartbeats).

Replies are read with the firmware's own rules (:mod:`gateway.simulator.firmware`):
only the replies and the fields this camera's dialect, firmware generation and
heartbeat mode read (PROTOCOL.md sections 3, 4, 7 and 9). Their effects are
kept as observable state: relay pulses, bytes written to each serial port, IO
outputs, voice texts and the camera's own whitelist; and every reply field is
recorded as executed or ignored, with the kind of reply it came in.
"""

from __future__ import annotations

import random
from collections import Counter, OrderedDict, deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import attrs
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from gateway.simulator import jpeg
from gateway.simulator.bodies import (
    JSON_CONTENT_TYPE,
    CameraIdentity,
    PlateEvent,
    PlateImages,
    camera_time_text,
    encode_json,
    heartbeat_body,
    io_body,
    make_boundary,
    plate_body,
    registration_form,
    serial_body,
    snapshot_body,
)
from gateway.simulator.config import CameraConfig
from gateway.simulator.firmware import (
    HeldPlate,
    ReplyEffects,
    SnapshotRequest,
    VoiceRequest,
    apply_parkingcam_command,
    apply_whitelist_edit,
    local_open_allowed,
)
from gateway.simulator.http import CameraHttpClient, ChunkedReply, HttpReply, TransportFailure
from gateway.simulator.plates import PlateRead, PlateSource, read_for_license
from gateway.simulator.report import CameraEvent, RelayPulse, percentile

__all__ = ["SimulatedCamera"]

EventSink = Callable[[CameraEvent], None]

# Trigger types: 1 video, 2 IO input, 4 software, 8 virtual coil.
_TRIGGER_WEIGHTS = ((1, 70), (8, 20), (2, 10))
_SOFTWARE_TRIGGER = 4
# Where the plate sits in generated scenes (block coordinates), by picture number.
_PLATE_BOXES = ((14, 20), (17, 21), (12, 19), (16, 22))
# Kept reasons for refused reply fields, for the report.
_REJECTED_EXAMPLES = 20
# (reply kind, field) entries kept in ``executed`` / ``ignored``; the counters
# go on counting past it.
_FIELD_LOG_LIMIT = 10_000
# Request kinds of the registration / heartbeat loops; every other kind is the
# sender's (plate pushes and everything queued with them).
_HEARTBEAT_KINDS = frozenset({"heartbeat", "comet"})


@attrs.define
class _Job:
    """One push waiting for the sender."""

    kind: str  # plate, io, serial, snapshot, whitelist_response
    run: Callable[[], Awaitable[None]]
    live_plate: bool = False


@attrs.define
class _PendingPlate:
    """A ParkingCam plate re-sent until the server says ``retransfer_stop``."""

    key: int
    event: PlateEvent
    body: bytes
    sends: int = 0
    local_checked: bool = False
    timer: IDelayedCall | None = None


class SimulatedCamera:
    """One camera. ``start()`` it, ``stop()`` it, read its state or ``report()``.

    Observable state (read-only for callers): ``relay_pulses``,
    ``barrier_closes``, ``serial_written`` (bytes per serial channel),
    ``io_outputs``, ``voices``, ``whitelist``, ``pushes`` / ``replies`` /
    ``failures`` (counters by request kind), ``offline_pending``;
    ``executed`` and ``ignored``: ``(reply kind, field)`` for every reply
    field the camera acted on / did not read (reply kinds:
    :data:`gateway.simulator.firmware.REPLY_KINDS`), counted in
    ``executed_counts`` / ``ignored_counts``; ``chunked_failures``.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        config: CameraConfig,
        on_event: EventSink | None = None,
        http: CameraHttpClient | None = None,
    ) -> None:
        self._reactor = reactor
        self.config = config
        self.identity = CameraIdentity(
            serialno=config.serialno,
            ipaddr=config.ipaddr,
            dialect=config.dialect,
            device_name=config.effective_device_name,
        )
        self._on_event = on_event
        self._rng = random.Random(f"{config.seed}:{config.serialno}")
        self.firmware = config.firmware
        self._plates = PlateSource(
            self._rng,
            config.plate_list,
            offset=config.index * 7,
            no_plate_rate=config.no_plate_rate,
            three_region_rate=config.three_region_rate,
            no_plate_texts=config.no_plate_texts,
            control_char_rate=config.control_char_rate,
        )
        self._http = http or CameraHttpClient(
            reactor, config.bind_address, config.tls_ca, decodes_chunked=config.decodes_chunked
        )
        self._owns_http = http is None

        # What the camera did (observable).
        self.relay_pulses: list[RelayPulse] = []
        self.barrier_closes: list[float] = []
        self.io_outputs: dict[int, int] = {0: 0, 1: 0, 2: 0, 3: 0}
        self.io_controls: list[dict[str, Any]] = []
        self.serial_written: dict[int, bytearray] = {0: bytearray(), 1: bytearray()}
        self.serial_short_items = 0
        self.voices: list[VoiceRequest] = []
        self.whitelist: dict[str, HeldPlate] = {row.plate: row for row in config.whitelist}
        self.whitelist_ignored_rows = 0
        self.pushes: Counter[str] = Counter()
        self.replies: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.unreadable_replies = 0
        self.rejected_fields = 0
        self.rejected_examples: list[str] = []
        self.plateid_echo_missing = 0
        self.executed: list[tuple[str, str]] = []
        self.ignored: list[tuple[str, str]] = []
        self.executed_counts: Counter[tuple[str, str]] = Counter()
        self.ignored_counts: Counter[tuple[str, str]] = Counter()
        self.chunked_failures = 0
        self.latencies: list[float] = []
        # (sent at, seconds to the complete reply) of every plate push, and
        # when each failed plate push was sent: for benchmarks over time.
        self.plate_timings: list[tuple[float, float]] = []
        self.plate_failures: list[float] = []
        self.plates_read = 0
        # Plate results some server answered: (plateid, license), live or offline.
        self.answered_plates: list[tuple[int, str]] = []
        self.manual_triggers = 0
        self.snapshots_requested = 0
        self.local_opens = 0
        self.last_failure: str | None = None
        self.online: bool | None = None

        # Offline records (Vzenith "disconnect retransmission").
        self._offline: deque[PlateEvent] = deque()
        self.offline_stored = 0
        self.offline_delivered = 0
        self.offline_dropped = 0
        self.offline_interrupted = 0
        self._upload_paused = False
        self._offline_next_try = 0.0
        self._offline_inflight: Deferred[None] | None = None

        # ParkingCam retransmission queue.
        self._retransfer: OrderedDict[int, _PendingPlate] = OrderedDict()
        self.retransfer_stopped = 0
        self.retransfer_dropped = 0

        # Loop machinery.
        self._jobs: deque[_Job] = deque()
        self._current: _Job | None = None
        self._wake: Deferred[None] | None = None
        self._nudge_call: IDelayedCall | None = None
        self._interrupt_call: IDelayedCall | None = None
        self._tasks: list[Deferred[None]] = []
        self._produced = False
        self._started = False
        self._stopping = False
        self._done_waiters: list[Deferred[None]] = []
        self._plateid = config.first_plateid - 1
        self._sequence = 0
        self._started_at = 0.0
        self._outage_started: float | None = None
        # Answers to the sender's requests, to pause the link after each one.
        self._push_answers = 0
        self._image_cache: dict[tuple[str, int, int], bytes] = {}

    # ------------------------------------------------------------------ control

    def start(self) -> None:
        """Start reading plates, pushing and heartbeating."""
        if self._started:
            return
        self._started = True
        self._started_at = self._camera_time()
        loops: list[Callable[[], Awaitable[None]]] = [self._sender, self._producer]
        if self.config.heartbeat != "off":
            if self.config.dialect == "parkingcam":
                loops.append(self._parkingcam_heartbeat)
            elif self.config.heartbeat == "comet":
                loops.append(self._comet)
            else:
                loops.append(self._common_heartbeat)
        for loop in loops:
            task: Deferred[None] = Deferred.fromCoroutine(loop())  # type: ignore[arg-type]
            task.addErrback(self._loop_failed, loop.__name__)
            self._tasks.append(task)

    def stop(self) -> Deferred[None]:
        """Stop everything: cancel requests in flight and timers, close connections."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        timers = [pending.timer for pending in self._retransfer.values()]
        for timer in [*timers, self._nudge_call, self._interrupt_call]:
            if timer is not None and timer.active():
                timer.cancel()
        self._fire_done()
        if self._owns_http:
            return self._http.close()
        return succeed(None)

    def when_done(self) -> Deferred[None]:
        """Fires when all plates are read and everything is delivered or given up:
        nothing queued, offline records uploaded, ParkingCam plates confirmed."""
        waiter: Deferred[None] = Deferred()
        if self.drained:
            waiter.callback(None)
        else:
            self._done_waiters.append(waiter)
        return waiter

    @property
    def drained(self) -> bool:
        """True when there is nothing left to send."""
        return (
            self._produced
            and not self._jobs
            and self._current is None
            and self._offline_inflight is None
            and not self._offline
            and not self._retransfer
        )

    @property
    def produced(self) -> bool:
        """True once every scheduled plate, IO event and serial input was read."""
        return self._produced

    @property
    def uploading(self) -> bool:
        """An offline record is on its way to the server right now."""
        return self._offline_inflight is not None

    @property
    def offline_pending(self) -> int:
        """Stored records not yet confirmed by ``ContinuePushOffline``."""
        return len(self._offline)

    def trigger(self, trigger_type: int = _SOFTWARE_TRIGGER) -> None:
        """Recognise the next car now (as a manual trigger would)."""
        self._recognise(next(self._plates), trigger_type)

    def read_plate(self, license: str, trigger_type: int = 1) -> None:
        """A car with plate ``license`` passes now."""
        self._recognise(read_for_license(license), trigger_type)

    # ------------------------------------------------------------- the sender

    def _enqueue(self, job: _Job) -> None:
        self._jobs.append(job)
        if job.live_plate and self._offline_inflight is not None:
            # A live result interrupts the offline upload; the interrupted
            # record is sent again afterwards. Done from a fresh stack so the
            # upload is never cancelled from inside its own reply handling.
            self._interrupt_call = self._reactor.callLater(0, self._interrupt_upload)
        self._nudge()

    def _interrupt_upload(self) -> None:
        if self._offline_inflight is not None and self._jobs and not self._stopping:
            self._offline_inflight.cancel()

    def _nudge(self) -> None:
        """Wake the sender on the next reactor turn (never from inside the caller)."""
        if self._stopping or (self._nudge_call is not None and self._nudge_call.active()):
            return
        self._nudge_call = self._reactor.callLater(0, self._fire_wake)

    def _fire_wake(self) -> None:
        self._nudge_call = None
        wake, self._wake = self._wake, None
        if wake is not None and not wake.called:
            wake.callback(None)

    async def _idle(self, delay: float | None) -> None:
        self._wake = Deferred()
        timer = None if delay is None else self._reactor.callLater(max(0.0, delay), self._fire_wake)
        try:
            await self._wake
        finally:
            self._wake = None
            if timer is not None and timer.active():
                timer.cancel()

    async def _sender(self) -> None:
        while True:
            answers = self._push_answers
            if self._jobs:
                job = self._current = self._jobs.popleft()
                try:
                    await job.run()
                except CancelledError:
                    raise
                except Exception:
                    # One broken push must not stop the camera.
                    self.log.failure(
                        "camera {serialno}: {kind} push failed",
                        serialno=self.config.serialno,
                        kind=job.kind,
                    )
                finally:
                    self._current = None
                await self._link_pause(answers)
                continue
            if self._offline_upload_due():
                upload = Deferred.fromCoroutine(self._upload_next_offline())
                self._offline_inflight = upload
                try:
                    await upload
                except CancelledError:
                    if self._stopping:
                        raise
                    self.offline_interrupted += 1
                    self._emit(
                        "offline", "upload interrupted by a live result; record will be sent again"
                    )
                finally:
                    self._offline_inflight = None
                await self._link_pause(answers)
                continue
            if self.drained:
                self._fire_done()
            delay = None
            if self._offline and not self._upload_paused:
                delay = self._offline_next_try - self._reactor.seconds()
            await self._idle(delay)

    async def _link_pause(self, answers_before: int) -> None:
        """On a slow link the next push leaves ``link_delay`` after an answer."""
        if self.config.link_delay and self._push_answers != answers_before:
            await self._sleep(self.config.link_delay)

    def _fire_done(self) -> None:
        waiters, self._done_waiters = self._done_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _offline_upload_due(self) -> bool:
        return (
            bool(self._offline)
            and not self._upload_paused
            and self._reactor.seconds() >= self._offline_next_try
        )

    # ---------------------------------------------------------------- requests

    def _url(self, server: str, path: str) -> str:
        parts = urlsplit(server)
        return f"{parts.scheme}://{parts.netloc}{path}"

    async def _post(
        self, kind: str, url: str, body: bytes, content_type: str, timeout: float | None = None
    ) -> HttpReply | TransportFailure:
        self.pushes[kind] += 1
        sent = self._reactor.seconds()
        try:
            reply = await self._http.post(url, body, content_type, timeout or self.config.timeout)
        except TransportFailure as failure:
            self.failures[kind] += 1
            self.last_failure = f"{kind}: {failure}"
            if isinstance(failure, ChunkedReply):
                self.chunked_failures += 1
            if kind == "plate":
                self.plate_failures.append(sent)
            return failure
        if kind not in _HEARTBEAT_KINDS:
            self._push_answers += 1
        self.replies[kind] += 1
        self.latencies.append(reply.elapsed)
        if kind == "plate":
            self.plate_timings.append((sent, reply.elapsed))
        return reply

    async def _round(
        self,
        kind: str,
        path: str,
        body: bytes,
        servers: Sequence[str],
        content_type: str = JSON_CONTENT_TYPE,
    ) -> list[tuple[str, HttpReply | TransportFailure]]:
        """One delivery attempt. With main priority: the main server, then the
        alternates in turn while they fail; otherwise all servers at once."""
        if self.config.main_priority:
            results: list[tuple[str, HttpReply | TransportFailure]] = []
            for server in servers:
                outcome = await self._post(kind, self._url(server, path), body, content_type)
                results.append((server, outcome))
                if isinstance(outcome, HttpReply):
                    break
            return results
        outcomes = await _gather(
            [self._post(kind, self._url(server, path), body, content_type) for server in servers]
        )
        return list(zip(servers, outcomes, strict=True))

    async def _push(
        self,
        kind: str,
        path: str,
        body: bytes,
        on_reply: Callable[[HttpReply], None],
        on_first_failure: Callable[[], None] | None = None,
        label: str = "",
        resend: int | None = None,
    ) -> bool:
        """Push with the firmware's re-sends (the same body each time).

        True if any server answered. ``on_first_failure`` runs once when no
        server answered the first attempt.
        """
        resend = self.config.resend if resend is None else resend
        servers = list(self.config.servers)
        answered = False
        for attempt in range(1 + resend):
            attempt_kind = kind if attempt == 0 else kind + "_resend"
            results = await self._round(attempt_kind, path, body, servers)
            replies = [(server, r) for server, r in results if isinstance(r, HttpReply)]
            failed = [(server, r) for server, r in results if isinstance(r, TransportFailure)]
            for _, reply in replies:
                self._emit(
                    "push",
                    f"{attempt_kind} {label}-> {reply.code} in {reply.elapsed * 1000:.0f} ms",
                )
                on_reply(reply)
            for server, failure in failed:
                note = (
                    f"(re-send {attempt + 1}/{resend} follows)"
                    if attempt < resend
                    else "(given up)"
                )
                self._emit("fail", f"{kind} {label}to {server}: {failure} {note}")
            if replies:
                answered = True
                self._server_up()
            elif attempt == 0 and on_first_failure is not None:
                on_first_failure()
            if self.config.main_priority:
                if replies:
                    break
            else:
                servers = [server for server, _ in failed]
                if not servers:
                    break
        if not answered:
            self._server_down()
        return answered

    def _server_up(self) -> None:
        if self.online is not True:
            if self.online is False:
                self._emit("online", "server answers again")
            self.online = True
            self._outage_started = None
        if self._offline:
            self._offline_next_try = 0.0
            self._nudge()

    def _server_down(self) -> None:
        if self.online is not False:
            self._emit("offline", "server unreachable")
            self.online = False
            self._outage_started = self._camera_time()

    # ------------------------------------------------------------- plate pushes

    def _camera_time(self) -> float:
        return float(self._reactor.seconds()) + self.config.clock_offset

    def _camera_datetime(self) -> datetime:
        return datetime.fromtimestamp(self._camera_time())

    def _recognise(self, read: PlateRead, trigger_type: int) -> None:
        self._plateid += 1
        self._sequence += 1
        now = self._camera_time()
        left = self._rng.randint(60, 900)
        top = self._rng.randint(300, 600)
        event = PlateEvent(
            read=read,
            plateid=self._plateid,
            trigger_type=trigger_type,
            sec=int(now),
            usec=int((now % 1) * 1_000_000),
            direction=self._rng.choice((0, 3, 3, 4, 4)),
            confidence=self._rng.randint(75, 99) if read.has_plate else 0,
            time_used=self._rng.randint(18, 60),
            rect=(left, top, left + 96 + (8 if len(read.license) == 8 else 0), top + 28),
            sequence=self._sequence,
        )
        self.plates_read += 1
        if self.config.dialect == "parkingcam":
            self._queue_parkingcam_plate(event)
        else:
            self._enqueue(_Job("plate", lambda: self._run_plate(event), live_plate=True))

    def _label(self, event: PlateEvent) -> str:
        # Only newer Vzenith firmware sends a plateid.
        sends_plateid = self.config.dialect == "vzenith" and self.config.newer_firmware
        plateid = f" plateid={event.plateid}" if sends_plateid else ""
        return f"{event.read.license}{plateid} trigger={event.trigger_type} "

    def _images(self, event: PlateEvent) -> PlateImages:
        mode = self.config.images
        if mode == "none":
            return PlateImages()
        comment = (
            f"{self.config.serialno} {event.plateid} {event.read.license} {event.sec}.{event.usec:06d}"
        ).encode()
        color = event.read.color_type
        full = crop = None
        if mode in ("full", "both"):
            box = event.sequence % len(_PLATE_BOXES)
            key = ("full", color, box)
            if key not in self._image_cache:
                self._image_cache[key] = jpeg.scene_image(color, _PLATE_BOXES[box])
            full = jpeg.pad_jpeg(
                jpeg.add_comment(self._image_cache[key], comment), self.config.image_bytes
            )
        if mode in ("crop", "both"):
            key = ("crop", color, 0)
            if key not in self._image_cache:
                self._image_cache[key] = jpeg.crop_image(color)
            crop = jpeg.add_comment(self._image_cache[key], comment)
            if full is None:
                crop = jpeg.pad_jpeg(crop, self.config.image_bytes)
        return PlateImages(full, crop)

    def _plate_bytes(self, event: PlateEvent, offline: bool) -> bytes:
        extra = None
        beside: dict[str, Any] = {}
        if self.config.dialect == "parkingcam":
            listed = local_open_allowed(self.whitelist, event.read.license, self._camera_datetime())
            # PROTOCOL.md sections 7 and 9: realplate is a JSON boolean; openflag
            # and the site fields sit beside serialno, not in PlateResult.
            extra = {
                "Whitelist": 2 if listed else 0,
                "realplate": event.read.has_plate,
                "retryflag": 0,
                "speed": 0,
                "vehicleId": event.sequence,
            }
            if self.config.extra_fields:
                beside = {
                    "openflag": 0,
                    "entityName": "",
                    "TaxID": "",
                    "latitude": 0.0,
                    "longitude": 0.0,
                }
        elif self.config.newer_firmware and self.config.extra_fields:
            # Newer Vzenith firmware adds these beside PlateResult (section 9).
            beside = {"rule_id": 0, "user_data": ""}
        body = plate_body(
            self.identity,
            event,
            detail=self.config.detail,
            offline=offline,
            newer_firmware=self.config.newer_firmware,
            images=self._images(event),
            image_len=self.config.image_len,
            gioouts=[self.io_outputs[number] for number in range(4)],
            parkingcam_extra=extra,
            beside=beside,
        )
        return encode_json(body, self.config.charset)

    def _local_decision(self, event: PlateEvent) -> None:
        """The server is unreachable: open from the camera's own whitelist."""
        if event.read.has_plate and local_open_allowed(
            self.whitelist, event.read.license, self._camera_datetime()
        ):
            self.local_opens += 1
            self._pulse(0, "local", event.read.license)

    async def _run_plate(self, event: PlateEvent) -> None:
        body = self._plate_bytes(event, offline=False)

        def on_reply(reply: HttpReply) -> None:
            effects = self.firmware.effects("plate", reply.body)
            if (
                self.config.newer_firmware
                and effects.readable
                and effects.plateid_echo != event.plateid
            ):
                self.plateid_echo_missing += 1
                self._emit("reply", f"no plateid {event.plateid} echo in the reply")
            self._apply(effects, "plate", event.read.license)

        answered = await self._push(
            "plate",
            self.config.plate_path,
            body,
            on_reply,
            on_first_failure=lambda: self._local_decision(event),
            label=self._label(event),
        )
        if answered:
            self.answered_plates.append((event.plateid, event.read.license))
            # A delivered live result (re)starts the offline upload.
            if self._upload_paused and self._offline:
                self._emit("offline", "upload resumes after a live result")
            self._upload_paused = False
            self._offline_next_try = 0.0
        elif self.config.offline_records and self.config.newer_firmware:
            self._store_offline(event)

    def _store_offline(self, event: PlateEvent) -> None:
        if len(self._offline) >= self.config.offline_capacity:
            self._offline.popleft()
            self.offline_dropped += 1
        self._offline.append(event)
        self.offline_stored += 1
        self._offline_next_try = self._reactor.seconds() + self.config.offline_retry
        self._emit(
            "offline",
            f"stored {event.read.license} plateid={event.plateid} ({len(self._offline)} pending)",
        )

    async def _upload_next_offline(self) -> None:
        event = self._offline[0]
        body = self._plate_bytes(event, offline=True)
        results = await self._round(
            "offline", self.config.plate_path, body, list(self.config.servers)
        )
        replies = [reply for _, reply in results if isinstance(reply, HttpReply)]
        if not replies:
            self._offline_next_try = self._reactor.seconds() + self.config.offline_retry
            self._server_down()
            return
        self._server_up()
        self.answered_plates.append((event.plateid, event.read.license))
        continuation = None
        for reply in replies:
            self._emit(
                "push",
                f"offline {self._label(event)}-> {reply.code} in {reply.elapsed * 1000:.0f} ms",
            )
            effects = self.firmware.effects("offline", reply.body)
            self._apply(effects, "offline", event.read.license)
            if continuation is None and effects.continue_offline is not None:
                continuation = effects.continue_offline
        if continuation is None or continuation.plateid != event.plateid:
            self._upload_paused = True
            self._emit(
                "offline",
                f"upload waits: no ContinuePushOffline for plateid {event.plateid} in the reply",
            )
            return
        if self._offline and self._offline[0] is event:
            self._offline.popleft()
            self.offline_delivered += 1
        if not continuation.go_on:
            self._upload_paused = True
            self._emit("offline", "upload paused by the server (continue 0)")

    # --------------------------------------------------------- ParkingCam plates

    def _queue_parkingcam_plate(self, event: PlateEvent) -> None:
        if len(self._retransfer) >= self.config.parkingcam_queue:
            _, oldest = self._retransfer.popitem(last=False)
            if oldest.timer is not None and oldest.timer.active():
                oldest.timer.cancel()
            self.retransfer_dropped += 1
            self._emit("offline", f"queue full: dropped {oldest.event.read.license}")
        pending = _PendingPlate(event.sequence, event, self._plate_bytes(event, offline=False))
        self._retransfer[pending.key] = pending
        self._enqueue(_Job("plate", lambda: self._run_parkingcam_plate(pending), live_plate=True))

    def _retransfer_due(self, pending: _PendingPlate) -> None:
        pending.timer = None
        if pending.key in self._retransfer and not self._stopping:
            self._enqueue(_Job("plate", lambda: self._run_parkingcam_plate(pending)))

    async def _run_parkingcam_plate(self, pending: _PendingPlate) -> None:
        if pending.key not in self._retransfer:
            return
        kind = "plate" if pending.sends == 0 else "plate_retransfer"
        pending.sends += 1
        stop = False

        def on_reply(reply: HttpReply) -> None:
            nonlocal stop
            effects = self.firmware.effects("plate", reply.body)
            self._apply(effects, "plate", pending.event.read.license)
            stop = stop or effects.retransfer_stop or effects.info_ok

        def on_first_failure() -> None:
            if not pending.local_checked:
                pending.local_checked = True
                self._local_decision(pending.event)

        await self._push(
            kind,
            self.config.plate_path,
            pending.body,
            on_reply,
            on_first_failure=on_first_failure,
            label=self._label(pending.event),
            resend=0,
        )
        if pending.key not in self._retransfer:
            return
        if stop:
            del self._retransfer[pending.key]
            self.retransfer_stopped += 1
            self.answered_plates.append((pending.event.plateid, pending.event.read.license))
        else:
            pending.timer = self._reactor.callLater(
                self.config.retransfer_interval, self._retransfer_due, pending
            )

    # ------------------------------------------------------------ other pushes

    def _queue_io(self, source: int, value: int) -> None:
        body = encode_json(
            io_body(self.identity, source, value, self.config.serial_key), self.config.charset
        )

        def on_reply(reply: HttpReply) -> None:
            # The camera does nothing with the reply to an IO push (section 2.2).
            self._apply(self.firmware.effects("io", reply.body), "io", None)

        async def run() -> None:
            await self._push(
                "io", self.config.gio_path, body, on_reply, label=f"in{source}={value} "
            )

        self._enqueue(_Job("io", run))

    def _queue_serial(self, data: bytes) -> None:
        channel = self.config.serial_in_channel
        body = encode_json(
            serial_body(self.identity, channel, data, self.config.serial_key), self.config.charset
        )

        def on_reply(reply: HttpReply) -> None:
            self._apply(self.firmware.effects("serial", reply.body), "serial", None)

        async def run() -> None:
            await self._push(
                "serial",
                self.config.serial_path,
                body,
                on_reply,
                label=f"ch{channel} {data.hex()} ",
            )

        self._enqueue(_Job("serial", run))

    def _snapshot_url(self, request: SnapshotRequest) -> str:
        if request.absolute_url is not None:
            return request.absolute_url
        main = urlsplit(self.config.servers[0])
        host = main.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = request.port or main.port or (443 if main.scheme == "https" else 80)
        path = request.relative_url or "/"
        return f"{main.scheme}://{host}:{port}{path if path.startswith('/') else '/' + path}"

    def _queue_snapshot(self, request: SnapshotRequest) -> None:
        self.snapshots_requested += 1
        url = self._snapshot_url(request)
        self._sequence += 1
        sequence = self._sequence

        async def run() -> None:
            scene = jpeg.scene_image(1, _PLATE_BOXES[sequence % len(_PLATE_BOXES)])
            comment = f"{self.config.serialno} snapshot {self._camera_time():.3f}".encode()
            image = jpeg.pad_jpeg(jpeg.add_comment(scene, comment), self.config.image_bytes)
            body = encode_json(snapshot_body(self.identity, image), self.config.charset)
            outcome = await self._post("snapshot", url, body, JSON_CONTENT_TYPE)
            if isinstance(outcome, HttpReply):
                self._emit("snapshot", f"{len(image)} bytes to {url} -> {outcome.code}")
                self._apply(self.firmware.effects("snapshot", outcome.body), "snapshot", None)
            else:
                self._emit("fail", f"snapshot to {url}: {outcome}")

        self._enqueue(_Job("snapshot", run))

    def _queue_whitelist_response(self, response: dict[str, Any]) -> None:
        body = encode_json(response, self.config.charset)
        key = next(iter(response))

        def on_reply(reply: HttpReply) -> None:
            # Posted to the heartbeat URL; its reply is read like a heartbeat
            # reply, so the next step of a whitelist sync can ride in it.
            effects = self.firmware.effects("whitelist_response", reply.body)
            self._apply(effects, "whitelist_response", None)

        async def run() -> None:
            await self._push(
                "whitelist_response", self.config.heartbeat_path, body, on_reply, label=f"{key} "
            )

        self._enqueue(_Job("whitelist_response", run))

    # ----------------------------------------------------------- the producer

    async def _sleep(self, delay: float) -> None:
        if delay > 0:
            await deferLater(self._reactor, delay)

    async def _producer(self) -> None:
        config = self.config
        await self._sleep(config.start_delay)
        schedule: list[tuple[float, int, str, int]] = []
        for number in range(config.plates):
            schedule.append((number / config.rate, 0, "plate", number))
        for number in range(config.io_events):
            schedule.append(((number + 0.5) / config.rate, 1, "io", number))
        for number in range(len(config.serial_in)):
            schedule.append(((number + 0.25) / config.rate, 2, "serial", number))
        schedule.sort()
        begin = self._reactor.seconds()
        triggers = [trigger for trigger, _ in _TRIGGER_WEIGHTS]
        weights = [weight for _, weight in _TRIGGER_WEIGHTS]
        for offset, _, kind, number in schedule:
            await self._sleep(begin + offset - self._reactor.seconds())
            if kind == "plate":
                read = next(self._plates)
                trigger = self._rng.choices(triggers, weights)[0]
                self._recognise(read, trigger)
                if self._rng.random() < config.duplicate_rate:
                    # The same car, still at the barrier, reported by another trigger.
                    self._recognise(read, self._rng.choice([t for t in triggers if t != trigger]))
            elif kind == "io":
                # Alternate inputs 1 and 2, each going active then idle.
                self._queue_io(source=(number // 2) % 2, value=1 - number % 2)
            else:
                self._queue_serial(config.serial_in[number])
        self._produced = True
        self._nudge()

    # ------------------------------------------------------------ heartbeats

    def _registration(self) -> tuple[bytes, str]:
        config = self.config
        fields = (
            ("device_name", config.effective_device_name),
            ("ipaddr", config.ipaddr),
            ("port", str(config.web_port)),
            ("user_name", config.web_user),
            ("pass_wd", config.web_password),
            ("serialno", config.serialno),
            ("channel_num", str(config.channel_num)),
        )
        return registration_form(fields, make_boundary(self._rng, config.boundary_style))

    async def _common_heartbeat(self) -> None:
        url = self._url(self.config.servers[0], self.config.heartbeat_path)
        while True:
            body, content_type = self._registration()
            outcome = await self._post("heartbeat", url, body, content_type)
            if isinstance(outcome, HttpReply):
                # The reply to a common heartbeat is not read (PROTOCOL.md
                # sections 3 and 9): whatever it carries is recorded as ignored.
                self._apply(self.firmware.effects("heartbeat", outcome.body), "heartbeat", None)
                self._server_up()
                delay = self.config.effective_heartbeat_interval
            else:
                self._server_down()
                delay = self.config.heartbeat_retry
            await self._sleep(delay)

    async def _comet(self) -> None:
        url = self._url(self.config.servers[0], self.config.heartbeat_path)
        while True:
            body, content_type = self._registration()
            outcome = await self._post(
                "comet", url, body, content_type, timeout=self.config.comet_timeout
            )
            if isinstance(outcome, HttpReply):
                self._server_up()
                effects = self.firmware.effects("comet", outcome.body)
                if _has_effects(effects):
                    self._emit("comet", f"reply {outcome.code} after {outcome.elapsed:.1f} s")
                self._apply(effects, "comet", None)
                # Comet polling: the next poll goes out as soon as a reply
                # arrives; on a slow link ``link_delay`` later (section 9).
                await self._sleep(self.config.link_delay)
                continue
            self._server_down()
            await self._sleep(self.config.comet_retry)

    async def _parkingcam_heartbeat(self) -> None:
        url = self._url(self.config.servers[0], self.config.heartbeat_path)
        countid = 0
        while True:
            countid += 1
            now = self._camera_time()
            outage = self._outage_started
            body = heartbeat_body(
                self.identity,
                countid,
                int(now),
                int((now % 1) * 1_000_000),
                start_ts=camera_time_text(self._started_at),
                outage_ts=None if outage is None else camera_time_text(outage),
            )
            # One compact line, as real ParkingCam cameras send it (section 9).
            data = encode_json(body, self.config.charset, compact=True)
            outcome = await self._post("heartbeat", url, data, JSON_CONTENT_TYPE)
            if isinstance(outcome, HttpReply):
                self._server_up()
                self._apply(self.firmware.effects("heartbeat", outcome.body), "heartbeat", None)
            else:
                self._server_down()
            await self._sleep(self.config.effective_heartbeat_interval)

    # -------------------------------------------------------- applying replies

    def _pulse(self, channel: int, source: str, plate: str | None) -> None:
        self.relay_pulses.append(RelayPulse(channel, self._reactor.seconds(), source, plate))
        self._emit("relay", f"ch{channel} pulse ({source}{' ' + plate if plate else ''})")

    def _record_fields(self, effects: ReplyEffects, source: str) -> None:
        """Keep which reply fields were acted on and which were not read."""
        for field in effects.executed:
            self.executed_counts[(source, field)] += 1
            if len(self.executed) < _FIELD_LOG_LIMIT:
                self.executed.append((source, field))
        for field in effects.ignored:
            key = (source, field)
            if not self.ignored_counts[key]:
                # Said once per field and kind of reply: the report counts the rest.
                self._emit("ignored", f"{source} reply: {field} is not read by this camera")
            self.ignored_counts[key] += 1
            if len(self.ignored) < _FIELD_LOG_LIMIT:
                self.ignored.append(key)

    def _apply(self, effects: ReplyEffects, source: str, plate: str | None) -> None:
        """Do what a reply asks, as the firmware would."""
        self._record_fields(effects, source)
        if not effects.readable:
            self.unreadable_replies += 1
            self._emit("ignored", f"{source} reply is not one JSON object")
            return
        for reason in effects.rejected:
            self.rejected_fields += 1
            if len(self.rejected_examples) < _REJECTED_EXAMPLES:
                self.rejected_examples.append(reason)
            self._emit("ignored", f"{source} reply: {reason}")
        if effects.open_channel is not None:
            self._pulse(effects.open_channel, source, plate)
        if effects.close_barrier:
            self.barrier_closes.append(self._reactor.seconds())
            self._emit("relay", f"ch0 close ({source})")
        for write in effects.serial_writes:
            self.serial_written[write.channel] += write.data
            if write.short:
                self.serial_short_items += 1
            note = f" (data shorter than dataLen: {write.decoded_length})" if write.short else ""
            self._emit(
                "serial", f"ch{write.channel} {len(write.data)} bytes {write.data.hex()}{note}"
            )
        for control in effects.io_controls:
            self.io_controls.append(
                {
                    "at": self._reactor.seconds(),
                    "io": control.io,
                    "value": control.value,
                    "delay": control.delay_ms,
                }
            )
            if control.value == 2:
                self._pulse(control.io, "ivs_ioctrl", plate)
            else:
                self.io_outputs[control.io] = control.value
                self._emit("io", f"out{control.io} {'on' if control.value else 'off'}")
        for voice in effects.voices:
            self.voices.append(voice)
            self._emit("voice", voice.text)
        if effects.whitelist_edit is not None:
            edit = effects.whitelist_edit
            self.whitelist = apply_whitelist_edit(self.whitelist, edit)
            self.whitelist_ignored_rows += edit.ignored_rows
            plates = ", ".join(row.plate for row in edit.rows)
            extra = f" ({edit.ignored_rows} rows past the 5th ignored)" if edit.ignored_rows else ""
            self._emit("whitelist", f"{edit.operation} {plates}{extra}; {len(self.whitelist)} rows")
        if effects.parkingcam_command is not None:
            command = effects.parkingcam_command
            self.whitelist, response = apply_parkingcam_command(
                self.whitelist, command, self.config.serialno
            )
            self._emit("whitelist", f"{command.kind} -> {len(self.whitelist)} rows")
            self._queue_whitelist_response(response)
        if effects.snapshot is not None:
            self._queue_snapshot(effects.snapshot)
        if effects.manual_trigger:
            self.manual_triggers += 1
            self.trigger(_SOFTWARE_TRIGGER)

    # --------------------------------------------------------------- reporting

    def _emit(self, kind: str, text: str) -> None:
        if self._on_event is not None:
            self._on_event(
                CameraEvent(
                    self._reactor.seconds(), self.config.index, self.config.serialno, kind, text
                )
            )

    def _loop_failed(self, failure: Failure, name: str) -> None:
        if failure.check(CancelledError):
            return None
        self.log.failure(
            "camera {serialno} loop {name} failed",
            failure,
            serialno=self.config.serialno,
            name=name,
        )
        return None

    def report(self) -> dict[str, Any]:
        """What this camera did, as JSON-ready values."""
        latencies_ms = [value * 1000 for value in self.latencies]
        p50 = percentile(latencies_ms, 0.5)
        p99 = percentile(latencies_ms, 0.99)
        return {
            "index": self.config.index,
            "serialno": self.config.serialno,
            "dialect": self.config.dialect,
            "ipaddr": self.config.ipaddr,
            "bind_address": self.config.bind_address,
            "servers": list(self.config.servers),
            "online": self.online,
            "plates_read": self.plates_read,
            "manual_triggers": self.manual_triggers,
            "pushes": dict(sorted(self.pushes.items())),
            "replies": {
                "total": sum(self.replies.values()),
                "by_kind": dict(sorted(self.replies.items())),
                "unreadable": self.unreadable_replies,
                "rejected_fields": self.rejected_fields,
                "rejected_examples": list(self.rejected_examples),
                "plateid_echo_missing": self.plateid_echo_missing,
                "executed": _field_counts(self.executed_counts),
                "ignored": _field_counts(self.ignored_counts),
            },
            "failures": {
                "total": sum(self.failures.values()),
                "by_kind": dict(sorted(self.failures.items())),
                "last": self.last_failure,
                "chunked_replies": self.chunked_failures,
            },
            "relay_pulses": [pulse.as_json() for pulse in self.relay_pulses],
            "local_opens": self.local_opens,
            "barrier_closes": list(self.barrier_closes),
            "io_outputs": {str(number): state for number, state in sorted(self.io_outputs.items())},
            "io_controls": list(self.io_controls),
            "serial_written": {
                str(channel): bytes(data).hex() for channel, data in self.serial_written.items()
            },
            "serial_short_items": self.serial_short_items,
            "whitelist": [row.as_json() for row in self.whitelist.values()],
            "whitelist_ignored_rows": self.whitelist_ignored_rows,
            "voices": [
                {"text": voice.text, "volume": voice.volume, "male": voice.male}
                for voice in self.voices
            ],
            "snapshots_requested": self.snapshots_requested,
            "offline": {
                "stored": self.offline_stored,
                "delivered": self.offline_delivered,
                "pending": len(self._offline),
                "interrupted": self.offline_interrupted,
                "dropped": self.offline_dropped,
                "paused": self._upload_paused,
            },
            "retransfer": {
                "pending": len(self._retransfer),
                "stopped": self.retransfer_stopped,
                "dropped": self.retransfer_dropped,
            },
            "latency_ms": {"count": len(latencies_ms), "p50": p50, "p99": p99},
            "drained": self.drained,
        }


def _has_effects(effects: ReplyEffects) -> bool:
    """Anything to do or to report (an idle comet reply has nothing)."""
    return effects != ReplyEffects()


def _field_counts(counts: Counter[tuple[str, str]]) -> dict[str, int]:
    """``{"plate.ivs_ioctrl": 3, ...}`` for the JSON report."""
    return {f"{kind}.{field}": count for (kind, field), count in sorted(counts.items())}


_T = TypeVar("_T")


async def _gather(coroutines: Sequence[Coroutine[Any, Any, _T]]) -> list[_T]:
    """Run concurrently, results in order; cancelling the caller cancels them all."""
    running: list[Deferred[_T]] = [Deferred.fromCoroutine(coroutine) for coroutine in coroutines]
    results = []
    try:
        for task in running:
            results.append(await task)
    except BaseException:
        for task in running:
            task.cancel()
        raise
    return results
