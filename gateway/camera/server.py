"""The camera-facing HTTP server: any path, routed by content (PROTOCOL.md).

Every answer to a camera is HTTP 200 with one compact JSON object, except for
bodies that are not a camera message (400 with a one-line reason) and bodies
over the size limit (413, before they are buffered). When an event cannot be
kept, the connection is closed without an answer so the camera keeps the
record and sends it again (PROTOCOL.md section 4).
"""

from __future__ import annotations

import ipaddress
import json
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Protocol, cast

import attrs
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request

from gateway.camera.commands import SerialReply
from gateway.camera.control import CameraControl
from gateway.camera.events import CameraEvent, EventNotKept, EventRecorder
from gateway.camera.http import BodyBudget, CameraSite, ConnectionLimits, RequestLimits
from gateway.camera.recorder import record_limits, to_record
from gateway.camera.registry import Camera, CameraRegistry, PollOutcome
from gateway.camera.settings import CameraServerSettings
from gateway.display.lanes import DisplayOverride, LaneDisplays
from gateway.gate import Gate, GateLane, PlateRead
from gateway.policy.decision import CAMERA_NOT_ALLOWED, Decision
from gateway.protocol import replies
from gateway.protocol.capabilities import ReplyKind, generation_of
from gateway.protocol.messages import (
    CameraReceipt,
    Dialect,
    Heartbeat,
    IoInput,
    Message,
    PlateResult,
    ProtocolError,
    Registration,
    SerialData,
    SnapshotUpload,
    WhitelistResult,
)
from gateway.protocol.parse import parse_push
from gateway.protocol.text import for_log
from gateway.serial.bridge import SerialBridge
from gateway.site import Lanes, LaneSettings
from gateway.store import EventRecord
from gateway.store.ids import new_event_id, plate_event_id

log = Logger()


class PushMetrics(Protocol):
    """What the camera server counts (``gateway.admin.metrics.GatewayMetrics``)."""

    def push(self, kind: str) -> None: ...

    def decision(self, reason: str, source: str) -> None: ...

    def reply_latency(self, seconds: float) -> None: ...


#: A peer's bad requests are logged at most this often (with a count).
BAD_REQUEST_LOG_SECONDS = 60.0

STARTUP_HOLD_SECONDS = 3.0
"""How long a push that arrives while the gateway starts (its store opening,
its plate list loading) waits to be decided and kept: well inside the camera's
5 s, so that a push still not served is closed in time for the camera to keep
its record and send it again."""


class _PerPeer:
    """Counts of something per peer, to be said once per ``interval``: bounded
    in peers (the longest quiet are dropped)."""

    LIMIT = 10_000

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._peers: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def count(self, peer: str, now: float) -> int | None:
        """Count one for ``peer``: how many came since it was last said, when
        it is time to say it again, else None."""
        said_at, since = self._peers.pop(peer, (None, 0))
        if said_at is not None and now - said_at < self.interval:
            self._peers[peer] = (said_at, since + 1)
            return None
        self._peers[peer] = (now, 0)
        if len(self._peers) > self.LIMIT:
            self._peers.popitem(last=False)
        return since


class _Once:
    """Which keys were already logged: bounded, since any push may claim a new
    serial number (past the bound the oldest may be logged again)."""

    LIMIT = 10_000

    def __init__(self) -> None:
        self._seen: OrderedDict[str, None] = OrderedDict()

    def first(self, key: str) -> bool:
        """Whether ``key`` is new (and note it)."""
        if key in self._seen:
            return False
        self._seen[key] = None
        if len(self._seen) > self.LIMIT:
            self._seen.popitem(last=False)
        return True


def _within(peer: str, network: str) -> bool:
    """Whether the address ``peer`` is in ``network`` (an IPv4-mapped IPv6
    address counts as its IPv4 one)."""
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address in ipaddress.ip_network(network, strict=False)


def _sized(request: IRequest, body: bytes) -> bytes:
    """``body`` with its Content-Length: cameras' embedded HTTP clients are not
    all known to decode chunked replies (PROTOCOL.md section 9)."""
    request.setHeader(b"Content-Length", b"%d" % len(body))
    return body


def _abort(request: IRequest) -> None:
    """Close the connection without an answer: the camera keeps its record."""
    channel = getattr(request, "channel", None)
    transport = getattr(channel, "transport", None)
    if transport is not None:
        transport.abortConnection()


def _json_error(request: IRequest, code: int, reason: str) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json")
    return _sized(
        request, json.dumps({"error": reason}, ensure_ascii=False, separators=(",", ":")).encode()
    )


def _plate_event_id(camera: str, plate: PlateResult) -> str:
    """The plate's stable event id, from the camera's own event."""
    time = plate.camera_time
    return plate_event_id(
        camera,
        plate.plateid,
        plate.license,
        time.sec if time else None,
        time.usec if time else None,
    )


@attrs.frozen
class Origin:
    """Where a request came from, and where it reached the gateway."""

    peer: str  # the camera's address
    host: str  # the gateway's address as the camera reached it
    port: int
    secure: bool

    @classmethod
    def of(cls, request: IRequest) -> Origin:
        client = request.getClientAddress()
        local = request.getHost()
        return cls(
            peer=str(getattr(client, "host", "unknown")),
            host=str(getattr(local, "host", "")),
            port=int(getattr(local, "port", 0)),
            secure=bool(request.isSecure()),
        )


class _PushResource(Resource):
    """The camera port's one resource: POST on any path is a push; any
    other method a 405 that says so."""

    isLeaf = True

    def __init__(self, server: CameraServer) -> None:
        super().__init__()
        self._server = server

    def render(self, request: IRequest) -> int | bytes:
        if request.method != b"POST":
            return self._server.other_method(request)
        finished: list[bool] = []
        pushed = Deferred.fromCoroutine(self._server.push(request))

        def gone(result: object) -> None:
            finished.append(True)
            if isinstance(result, Failure):
                # The camera went away before its answer: a held comet poll
                # (or anything else still waiting) is let go at once.
                pushed.cancel()

        cast(Request, request).notifyFinish().addBoth(gone)

        def answer(body: bytes | None) -> None:
            if finished:
                return  # the camera went away (or the connection was aborted)
            if body:
                request.write(body)
            request.finish()

        def failed(failure: Failure) -> None:
            if failure.check(defer.CancelledError) and finished:
                return
            log.failure("A camera push failed", failure=failure)
            if finished:
                return
            request.setResponseCode(500)
            request.setHeader(b"Content-Type", b"application/json")
            request.write(b'{"error":"internal error"}')
            request.finish()

        pushed.addCallbacks(answer, failed)
        return NOT_DONE_YET


class CameraServer:
    """Receives every push of every camera and answers it.

    ``gate`` decides plates; ``recorder`` keeps events before a reply is
    sent.
    """

    def __init__(
        self,
        *,
        clock: IReactorTime,
        settings: CameraServerSettings,
        lanes: Lanes,
        registry: CameraRegistry,
        gate: Gate,
        recorder: EventRecorder,
        control: CameraControl | None = None,
        displays: LaneDisplays | None = None,
        bridge: SerialBridge | None = None,
        metrics: PushMetrics | None = None,
        now: Callable[[], datetime] | None = None,
        ready: Deferred[None] | None = None,
    ) -> None:
        """``ready`` fires once pushes can be decided and kept (the store
        open, the plate list loaded); until then pushes are held, for
        :data:`STARTUP_HOLD_SECONDS` at most. None: ready at once."""
        self._clock = clock
        self._settings = settings
        self._record_limits = record_limits(settings)
        #: The memory the bodies of all camera listeners may hold at once.
        self.body_budget = BodyBudget(settings.body_memory_budget_bytes)
        self._lanes = lanes
        self.registry = registry
        self.gate = gate
        self.recorder = recorder
        self.control = control
        self.displays = displays
        self.bridge = bridge
        self.metrics = metrics
        # Told of each ParkingCam whitelist command result (camera whitelist sync).
        self.whitelist_result_listeners: list[Callable[[Camera, WhitelistResult], None]] = []
        self._now = now or (lambda: datetime.fromtimestamp(clock.seconds(), tz=timezone.utc))
        self._unconfigured_logged = _Once()
        self._rejected_logged = _Once()
        self._bad_requests = _PerPeer(BAD_REQUEST_LOG_SECONDS)
        self._allowed_cameras = {serialno.casefold() for serialno in settings.allowed_cameras}
        self._allowed_networks = [ipaddress.ip_network(n) for n in settings.allowed_networks]
        self._gate_lanes = {
            lane.name: GateLane(
                name=lane.name,
                ask_cloud=lane.ask_cloud,
                cloud_overrides_blacklist=lane.cloud_overrides_blacklist,
            )
            for lane in lanes
        }
        for lane in lanes:
            registry.configure(lane.camera, lane=lane.name, heartbeat=lane.heartbeat)
        registry.on_state_change(self._camera_state_changed)
        self.ready = ready is None
        self._held: list[Deferred[None]] = []
        self._held_total = 0
        self._not_held = 0
        if ready is not None:
            ready.addCallback(self._now_ready)

    @property
    def holding(self) -> int:
        """Pushes held now, waiting for the gateway to be ready."""
        return len(self._held)

    def _now_ready(self, _: object) -> None:
        self.ready = True
        held, self._held = self._held, []
        if self._held_total:
            log.info(
                "Serving: pushes held while the gateway started: {count}, answered now{late}",
                count=self._held_total,
                late=f" ({self._not_held} waited too long and were closed)"
                if self._not_held
                else "",
            )
        for waiter in held:
            if not waiter.called:
                waiter.callback(None)

    async def _until_ready(self) -> bool:
        """Hold a push until the gateway is ready; False past the deadline."""
        waiter: Deferred[None] = Deferred()
        self._held.append(waiter)
        self._held_total += 1
        waiter.addTimeout(STARTUP_HOLD_SECONDS, self._clock)
        try:
            await waiter
        except defer.TimeoutError:
            # Held pushes are bounded by the port's connection limits; one
            # that gave up is forgotten (a store that never opens costs nothing).
            self._held.remove(waiter)
            self._not_held += 1
            if self._not_held == 1:
                log.error(
                    "The gateway is not ready after {seconds:.0f} s: pushes are closed "
                    "without an answer until it is (the cameras keep them and send them again)",
                    seconds=STARTUP_HOLD_SECONDS,
                )
            return False
        return True

    def resource(self) -> IResource:
        """Every path, one resource: a camera's push is recognised by its
        content, never by its path (no routing to pay for per push)."""
        return _PushResource(self)

    def site(self) -> CameraSite:
        server = self._settings
        return CameraSite(
            self.resource(),
            max_body_bytes=server.max_body_bytes,
            idle_timeout=server.idle_timeout_seconds,
            limits=RequestLimits(
                header_timeout=server.header_timeout_seconds,
                request_timeout=server.request_timeout_seconds,
                min_body_rate=float(server.min_body_bytes_per_second),
            ),
            body_budget=self.body_budget,
            clock=self._clock,
        )

    def listening_factory(self) -> ConnectionLimits:
        """What the camera listeners serve: the site behind connection limits."""
        server = self._settings
        return ConnectionLimits(
            self.site(),
            max_connections=server.max_connections,
            max_per_address=server.max_connections_per_address,
        )

    # -- routing ----------------------------------------------------------

    async def push(self, request: IRequest) -> bytes | None:
        """Answer one POST: the reply body, or None when the connection was
        closed without an answer."""
        body = request.content.read() if request.content is not None else b""
        content_type = request.getHeader(b"content-type")
        origin = Origin.of(request)
        peer = origin.peer
        try:
            message = parse_push(body, content_type.decode("latin-1") if content_type else None)
        except ProtocolError as error:
            # Logged once per peer a minute, with how many came meanwhile.
            since = self._bad_requests.count(peer, self._clock.seconds())
            if since is not None:
                log.warn(
                    "Bad request from {peer} to {path}: {reason}{also}",
                    peer=peer,
                    path=for_log(request.path.decode("latin-1", "replace")),
                    reason=str(error),
                    also=f" ({since} more from it in the last minute)" if since else "",
                )
            return _json_error(request, 400, str(error))
        if not self.ready and not await self._until_ready():
            _abort(request)
            return None
        request.setHeader(b"Content-Type", b"application/json")
        started = self._clock.seconds()
        if self.metrics is not None:
            self.metrics.push(type(message).__name__)
        try:
            if not self._admitted(message, origin):
                return _sized(request, await self._rejected(message, origin))
            reply = await self._dispatch(request, message, origin)
            if self.metrics is not None and isinstance(message, PlateResult):
                self.metrics.reply_latency(self._clock.seconds() - started)
        except EventNotKept as error:
            # Any complete response counts as delivered for the camera; only
            # a dropped connection makes it keep the record and retry.
            log.error(
                "Could not keep an event from {peer}; closing without an answer "
                "so the camera keeps it: {reason}",
                peer=peer,
                reason=str(error),
            )
            _abort(request)
            return None
        return _sized(request, reply)

    def other_method(self, request: IRequest) -> bytes:
        request.setHeader(b"Allow", b"POST")
        return _json_error(request, 405, "cameras POST their pushes; nothing else is served here")

    async def _dispatch(self, request: IRequest, message: Message, peer: Origin) -> bytes:
        if isinstance(message, PlateResult):
            return await self._plate(message, peer)
        if isinstance(message, Registration):
            return await self._registration(message, peer)
        if isinstance(message, Heartbeat):
            return self._parkingcam_heartbeat(message, peer)
        if isinstance(message, IoInput):
            camera = self._camera(
                message.serialno,
                peer,
                message.device_name,
                message.ipaddr,
                charset=message.charset,
            )
            await self._record("io", camera, message)
            return replies.ack_reply()
        if isinstance(message, SerialData):
            camera = self._camera(
                message.serialno,
                peer,
                message.device_name,
                message.ipaddr,
                dialect=message.dialect,
                charset=message.charset,
            )
            await self._record("serial", camera, message)
            if self.bridge is not None:
                self.bridge.from_camera(message, camera.serialno)
            serial = SerialReply()
            self.registry.fill_reply(camera, serial, ReplyKind.SERIAL)
            return replies.serial_data_reply(serial.serial)
        if isinstance(message, SnapshotUpload):
            camera = self._snapshot_camera(message, peer)
            await self._record("snapshot", camera, message)
            if self.control is not None:
                path = request.path.decode("latin-1", "replace")
                self.control.snapshot_arrived(camera, path, message.image.data)
            return replies.ack_reply()
        if isinstance(message, WhitelistResult):
            camera = self._camera(message.serialno, peer, None, None, charset=message.charset)
            await self._record("whitelist_result", camera, message)
            for listener in self.whitelist_result_listeners:
                listener(camera, message)
            return replies.ack_reply()
        if isinstance(message, CameraReceipt):
            # A newer camera's receipt for a command: kept, and answered (any reply).
            camera = self._camera(
                message.serialno, peer, None, message.ipaddr, charset=message.charset
            )
            await self._record("receipt", camera, message)
            return replies.ack_reply()
        raise AssertionError(f"unhandled message type {type(message).__name__}")

    # -- camera identity ---------------------------------------------------

    def _admitted(self, message: Message, origin: Origin) -> bool:
        """Whether this push comes from a camera the site accepts. The
        protocol has no camera authentication: this only filters by the
        serial number a push claims and the address it comes from."""
        if self._allowed_networks:
            try:
                address = ipaddress.ip_address(origin.peer)
            except ValueError:
                return False
            if address.version == 6 and address.ipv4_mapped is not None:
                address = address.ipv4_mapped
            if not any(address in network for network in self._allowed_networks):
                return False
        if self._allowed_cameras:
            serialno = getattr(message, "serialno", None)
            if serialno is None:
                known = self.registry.by_address(origin.peer)
                serialno = known.serialno if known is not None else None
            if serialno is None or serialno.casefold() not in self._allowed_cameras:
                return False
        return True

    async def _rejected(self, message: Message, origin: Origin) -> bytes:
        """Answer a push from a camera the site does not accept: plates are
        recorded as rejected and never open anything; nothing else happens."""
        serialno = getattr(message, "serialno", None) or f"@{origin.peer}"
        key = f"{serialno}@{origin.peer}"
        if self._rejected_logged.first(key):
            log.warn(
                "Rejected pushes from camera {serialno} at {peer}: not an allowed camera "
                "(camera_server.allowed_cameras / allowed_networks)",
                serialno=serialno,
                peer=origin.peer,
            )
        if isinstance(message, PlateResult):
            decision = Decision(
                open=False,
                reason=CAMERA_NOT_ALLOWED,
                plate=message.license.strip().upper() if message.has_plate else "",
            )
            await self.recorder.record(
                CameraEvent(
                    id=_plate_event_id(serialno, message),
                    kind="plate",
                    camera=serialno,
                    lane=None,
                    received_at=self._now(),
                    message=message,
                    decision=decision,
                )
            )
            reply = replies.PlateReply(plateid=message.plateid, retransfer_stop=True)
            if message.offline and message.plateid is not None:
                reply.continue_offline = message.plateid
            return reply.to_bytes()
        if isinstance(message, Registration):
            return replies.idle_comet_reply()
        if isinstance(message, Heartbeat):
            return replies.HeartbeatReply().to_bytes()
        if isinstance(message, SerialData):
            return replies.serial_data_reply([])
        return replies.ack_reply()

    # -- message kinds ----------------------------------------------------

    async def _plate(self, plate: PlateResult, peer: Origin) -> bytes:
        camera = self._camera(
            plate.serialno,
            peer,
            plate.device_name,
            plate.ipaddr,
            dialect=plate.dialect,
            charset=plate.charset,
        )
        if plate.dialect is Dialect.VZENITH:
            self.registry.firmware(camera, generation_of(plate))
        lane = self._lane(camera)
        lane_name = lane.name if lane else None
        received_at = self._now()
        if plate.image_errors:
            log.warn(
                "Plate {license} from camera {camera}: corrupt image dropped ({errors})",
                license=plate.license,
                camera=camera.serialno,
                errors="; ".join(plate.image_errors),
            )
        read = CameraEvent(
            id=_plate_event_id(camera.serialno, plate),
            kind="plate",
            camera=camera.serialno,
            lane=lane_name,
            received_at=received_at,
            message=plate,
        )

        def cloud_record(normalised: str) -> EventRecord:
            # The event as the cloud is asked about it: not decided yet.
            return attrs.evolve(to_record(read, self._record_limits), plate=normalised)

        verdict = await self.gate.decide(
            PlateRead(
                license=plate.license,
                has_plate=plate.has_plate,
                offline=plate.offline,
                camera=camera.serialno,
                lane=self._gate_lanes.get(lane_name) if lane_name else None,
                received_at=received_at,
                record=cloud_record,
            )
        )
        decision = verdict.decision
        if self.metrics is not None:
            self.metrics.decision(decision.reason, decision.source)
        event = await self.recorder.record(
            attrs.evolve(
                read,
                decision=decision,
                repeat=verdict.repeat,
                open_channel=(lane.barrier_channel if lane else 0)
                if verdict.act and decision.open
                else None,
            )
        )
        if not event.resent:
            self.gate.kept(verdict)
        override = (
            DisplayOverride(lines=verdict.display or None, voice=verdict.voice or None)
            if verdict.display or verdict.voice
            else None
        )
        reply = replies.PlateReply(plateid=plate.plateid, retransfer_stop=True)
        if self.displays is not None and lane_name is not None and event.decision is not None:
            # Shown only now that the event is kept (a board must not greet a
            # car the barrier then keeps out); a push sent again is shown
            # again, as its first reply never reached the camera.
            output = self.displays.frames_for_decision(
                lane_name, event.decision, plate.license if plate.has_plate else "", override
            )
            reply.serial.extend(output.camera_serial)
        if plate.offline:
            # The car passed long ago: never pulse the barrier, just ask for
            # the next stored record.
            if plate.plateid is not None:
                reply.continue_offline = plate.plateid
        else:
            reply.open_channel = event.open_channel
        self.registry.fill_reply(camera, reply, ReplyKind.PLATE)
        return reply.to_bytes()

    async def _registration(self, registration: Registration, peer: Origin) -> bytes:
        # Multipart registrations are the Vzenith dialect's.
        camera = self._camera(
            registration.serialno,
            peer,
            registration.device_name,
            registration.ipaddr,
            dialect=Dialect.VZENITH,
        )
        self.registry.heartbeat(
            camera,
            web_port=registration.port,
            web_user=registration.user_name,
            web_password=registration.password,
        )
        outcome = await self.registry.hold_poll(camera)
        if outcome is PollOutcome.SUPERSEDED:
            body = replies.idle_comet_reply()
        else:
            reply = replies.PlateReply()
            # Nothing is put in the reply to a common heartbeat: the camera
            # does not read it (PROTOCOL.md section 9).
            delivered = self.registry.fill_reply(camera, reply, ReplyKind.POLL)
            body = reply.to_bytes() if delivered else replies.idle_comet_reply()
        self.registry.answered(camera)
        return body

    def _parkingcam_heartbeat(self, heartbeat: Heartbeat, peer: Origin) -> bytes:
        camera = self._camera(
            heartbeat.serialno,
            peer,
            None,
            None,
            dialect=Dialect.PARKINGCAM,
            charset=heartbeat.charset,
        )
        self.registry.heartbeat(camera)
        # Barrier commands and serial bytes first; a whitelist command is the
        # entire heartbeat reply, so it takes a heartbeat with nothing else.
        reply = replies.HeartbeatReply()
        delivered = self.registry.fill_reply(camera, reply, ReplyKind.HEARTBEAT)
        whole = None if delivered else self.registry.take_whole_reply(camera)
        if whole is not None:
            body = whole.whole_reply()
            assert body is not None
        else:
            body = reply.to_bytes()
        self.registry.answered(camera)
        return body

    # -- helpers ----------------------------------------------------------

    def _camera(
        self,
        serialno: str | None,
        origin: Origin,
        device_name: str | None,
        ipaddr: str | None,
        dialect: Dialect | None = None,
        charset: str | None = None,
    ) -> Camera:
        key = serialno or self._by_address_key(origin.peer)
        lane = self._lanes.for_camera(key)
        if lane is not None and lane.address is not None and not _within(origin.peer, lane.address):
            # Not where the lane's camera pushes from: served, but as a camera
            # of its own, in no lane (no barrier, no list rows, no commands).
            impostor = f"{key}@{origin.peer}"
            if self._unconfigured_logged.first(impostor):
                log.warn(
                    "A camera at {peer} claims the serial number {serialno} of lane {lane}, "
                    "whose camera pushes from {address}: not taken as that lane's camera",
                    peer=origin.peer,
                    serialno=key,
                    lane=lane.name,
                    address=lane.address,
                )
            key = impostor
        camera = self.registry.seen(
            key,
            address=origin.peer,
            dialect=dialect,
            device_name=device_name,
            ipaddr=ipaddr,
            charset=charset,
        )
        camera.gateway_address = (origin.host, origin.port, origin.secure)
        if camera.lane is None and self._unconfigured_logged.first(key):
            log.warn(
                "Camera {serialno} at {peer} is in no configured lane; its plates are "
                "decided by the site's rule for unknown lanes (barrier channel 0)",
                serialno=key,
                peer=origin.peer,
            )
        return camera

    def _by_address_key(self, peer: str) -> str:
        known = self.registry.by_address(peer)
        return known.serialno if known is not None else f"@{peer}"

    def _snapshot_camera(self, upload: SnapshotUpload, peer: Origin) -> Camera:
        if upload.serialno:
            return self._camera(upload.serialno, peer, None, upload.ipaddr)
        known = self.registry.by_address(peer.peer)
        if known is None and upload.ipaddr:
            known = self.registry.by_address(upload.ipaddr)
        key = known.serialno if known is not None else f"@{peer.peer}"
        return self._camera(key, peer, None, upload.ipaddr)

    def _lane(self, camera: Camera) -> LaneSettings | None:
        return self._lanes.for_camera(camera.serialno)

    async def _record(self, kind: str, camera: Camera, message: Message) -> CameraEvent:
        return await self.recorder.record(
            CameraEvent(
                id=new_event_id(kind),
                kind=kind,
                camera=camera.serialno,
                lane=camera.lane,
                received_at=self._now(),
                message=message,
            )
        )

    def _camera_state_changed(self, camera: Camera, online: bool) -> None:
        kind = "camera_online" if online else "camera_offline"
        event = CameraEvent(
            id=new_event_id(kind),
            kind=kind,
            camera=camera.serialno,
            lane=camera.lane,
            received_at=self._now(),
            details={"address": camera.address, "heartbeat": camera.heartbeat.value},
        )

        async def record() -> None:
            try:
                await self.recorder.record(event)
            except EventNotKept as error:
                log.warn(
                    "Camera {serialno} went {state}; the event could not be kept: {reason}",
                    serialno=camera.serialno,
                    state="online" if online else "offline",
                    reason=str(error),
                )

        Deferred.fromCoroutine(record()).addErrback(
            lambda failure: log.failure("Recording a camera state change failed", failure)
        )
