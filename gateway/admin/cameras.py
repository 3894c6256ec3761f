"""The lanes' cameras: ``/api/cameras`` and the commands the booth sends
them (open, close, hold open, trigger, serial data, display test, plate list
resync, snapshot).

Reading needs a viewer; every command needs an operator. A command is
queued for the camera and answered 202 with its state; the camera reads it
in its next reply.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from gateway.admin.access import Access, authorized
from gateway.admin.audit import note
from gateway.admin.auth import Principal
from gateway.admin.booth import OperatorEvents
from gateway.admin.http import ApiError, admin_app, common_headers, json_body, json_response
from gateway.admin.settings import OPERATOR, VIEWER
from gateway.camera.commands import CameraCommand
from gateway.camera.control import (
    CameraControl,
    CameraOffline,
    CommandFailed,
    CommandRefused,
    NotSupported,
    UnknownCamera,
)
from gateway.camera.recorder import event_summary
from gateway.camera.registry import Camera, CameraRegistry
from gateway.camera.whitelist_sync import CameraWhitelistSync
from gateway.protocol.capabilities import Capability
from gateway.site import Lanes, LaneSettings
from gateway.store import EventType, Store, StoreError

__all__ = ["CamerasResource"]

log = Logger()

C = TypeVar("C", bound=CameraCommand)

MAX_SERIAL_BYTES = 1024
MAX_DISPLAY_TEXT = 200
_SYNC_FIELDS = (
    "plates",
    "pending_adds",
    "pending_deletes",
    "in_sync",
    "lane_plates",
    "capacity",
    "partial",
    "verified",
)


#: The commands the lane card shows when the camera can carry them out.
_CARD_COMMANDS = (Capability.CLOSE, Capability.HOLD_OPEN, Capability.TRIGGER, Capability.SNAPSHOT)


def _sync_json(
    described: Mapping[str, object] | None, camera: Camera | None
) -> dict[str, object] | None:
    """The camera list's state, and how it is kept: over which replies
    (``poll``, ``heartbeat``, only ``plate`` ones), or not at all."""
    if camera is not None and camera.dialect is not None:
        kept_over = sorted(kind.value for kind in camera.mode.replies_for(Capability.WHITELIST))
        if not kept_over:
            return {"syncable": False, "kept_over": []}
    else:
        kept_over = []
    if described is None:
        return None
    return {
        **{key: described[key] for key in _SYNC_FIELDS},
        "syncable": True,
        "kept_over": kept_over,
    }


class CamerasResource:
    """The cameras of the site, configured lanes first.

    ``store()`` is the open store or None (a camera's last plate is then
    not shown). ``display_test(lane, text)`` shows and speaks ``text`` on a
    lane's display (raising a ``LookupError`` for a lane without one);
    ``has_display(lane)`` says whether a lane has one. With
    ``operator_events``, an open is also an ``operator_open`` event naming
    the operator and the reason given.
    """

    app = admin_app()

    def __init__(
        self,
        *,
        access: Access,
        lanes: Lanes,
        registry: CameraRegistry,
        control: CameraControl,
        store: Callable[[], Store | None],
        camera_sync: CameraWhitelistSync | None,
        display_test: Callable[[str, str], object] | None = None,
        has_display: Callable[[str], bool] | None = None,
        operator_events: OperatorEvents | None = None,
    ) -> None:
        self.access = access
        self._operator_events = operator_events
        self._lanes = lanes
        self._registry = registry
        self._control = control
        self._store = store
        self._camera_sync = camera_sync
        self._display_test = display_test
        self._has_display = has_display

    @authorized(app, "/api/cameras", methods=["GET"], role=VIEWER)
    async def cameras(self, request: IRequest, who: Principal) -> bytes:
        store = self._store()
        rows: list[dict[str, object]] = []
        listed: set[str] = set()
        for lane in self._lanes:
            camera = self._registry.get(lane.camera)
            rows.append(await self._camera_json(camera, lane.camera, lane, store))
            listed.add(lane.camera.casefold())
        for camera in self._registry:
            if camera.serialno.casefold() not in listed:
                lane_of = self._lanes.for_camera(camera.serialno)
                rows.append(await self._camera_json(camera, camera.serialno, lane_of, store))
        return json_response(request, {"cameras": rows})

    async def _camera_json(
        self, camera: Camera | None, serialno: str, lane: LaneSettings | None, store: Store | None
    ) -> dict[str, object]:
        if camera is not None:
            row: dict[str, object] = dict(camera.describe())
            if camera.address is None and camera.dialect is None:
                row["last_seen"] = None  # configured, never heard from
        else:
            row = {
                "serialno": serialno,
                "lane": lane.name if lane else None,
                "dialect": None,
                "address": None,
                "ipaddr": None,
                "device_name": None,
                "web_port": None,
                "heartbeat": "unknown",
                "online": False,
                "last_seen": None,
                "poll_held": False,
                "queued_commands": 0,
            }
        name = camera.serialno if camera is not None else serialno
        row["direction"] = lane.direction if lane else None
        row["barrier_channel"] = lane.barrier_channel if lane else 0
        row["last_plate"] = None
        if store is not None:
            try:
                plates = await store.recent_events(limit=1, camera=name, type=EventType.PLATE)
            except StoreError as error:
                log.warn(
                    "Reading the last plate of camera {camera} failed: {reason}",
                    camera=name,
                    reason=str(error),
                )
                plates = []
            if plates:
                row["last_plate"] = event_summary(plates[0])
        sync = self._camera_sync.state(name) if self._camera_sync is not None else None
        row["whitelist_sync"] = _sync_json(sync.describe() if sync is not None else None, camera)
        # What the lane card offers: the barrier, trigger and snapshot
        # commands this camera can carry out (all, until the camera was heard).
        mode = camera.mode if camera is not None and camera.dialect is not None else None
        row["can"] = {
            capability.value: mode is None or mode.refusal(capability) is None
            for capability in _CARD_COMMANDS
        }
        row["display"] = bool(
            lane is not None and self._has_display is not None and self._has_display(lane.name)
        )
        return row

    def _known_camera(self, serialno: str) -> str:
        """The camera's serial number as the gateway spells it; 404 if unknown."""
        camera = self._registry.get(serialno)
        if camera is not None:
            return camera.serialno
        lane = self._lanes.for_camera(serialno)
        if lane is not None:
            return lane.camera
        raise ApiError(404, f"no camera {serialno} is known to this gateway")

    def _issue(
        self,
        principal: Principal,
        serialno: str,
        action: str,
        issue: Callable[[], C],
        detail: str = "",
    ) -> C:
        """Issue a camera command for ``principal``: the command, or the
        refusal (404 unknown camera, 409 offline or unsupported, 400)."""
        try:
            command = issue()
        except CommandRefused as error:
            status = 400
            if isinstance(error, UnknownCamera):
                status = 404
            elif isinstance(error, (CameraOffline, NotSupported)):
                status = 409
            log.info(
                "{user} ({role}) asked camera {serialno} to {action}{detail}: refused ({reason})",
                user=principal.name,
                role=principal.role,
                serialno=serialno,
                action=action,
                detail=detail,
                reason=str(error),
            )
            raise ApiError(status, str(error)) from None
        log.info(
            "{user} ({role}) asked camera {serialno} to {action}{detail}",
            user=principal.name,
            role=principal.role,
            serialno=serialno,
            action=action,
            detail=detail,
            command_id=command.id,
        )
        return command

    def _command(
        self,
        request: IRequest,
        principal: Principal,
        serialno: str,
        action: str,
        issue: Callable[[], CameraCommand],
        detail: str = "",
    ) -> bytes:
        """Issue a camera command for ``principal``: 202 with the command."""
        command = self._issue(principal, serialno, action, issue, detail)
        return json_response(request, {"command": command.describe()}, 202)

    def _channel(self, body: Mapping[str, object]) -> int | None:
        channel = body.get("channel")
        if channel is not None and (
            isinstance(channel, bool) or not isinstance(channel, int) or not 0 <= channel <= 3
        ):
            raise ApiError(400, "channel must be 0-3", errors={"channel": "must be 0-3"})
        return channel

    def _barrier(
        self,
        request: IRequest,
        who: Principal,
        serialno: str,
        action: str,
        issue: Callable[..., CameraCommand],
    ) -> bytes:
        channel = self._channel(json_body(request, required=False))
        return self._command(
            request,
            who,
            serialno,
            action,
            lambda: issue(serialno, channel, operator=who.name),
            "" if channel is None else f" (channel {channel})",
        )

    @authorized(app, "/api/cameras/<serialno>/open", methods=["POST"], role=OPERATOR)
    async def open_barrier(self, request: IRequest, who: Principal, serialno: str) -> bytes:
        # The page asks for a reason and a note; a machine may give none.
        body = json_body(request, required=False)
        channel = self._channel(body)
        events = self._operator_events
        reason = events.reason(body, required=False) if events is not None else ""
        note_text = events.note_text(body, required=False) if events is not None else ""
        command = self._issue(
            who,
            serialno,
            "open the barrier",
            lambda: self._control.open(serialno, channel, operator=who.name),
            "" if channel is None else f" (channel {channel})",
        )
        answer: dict[str, object] = {"command": command.describe()}
        if events is not None:
            # The open is an event of its own, naming the operator.
            lane = self._lanes.for_camera(command.camera)
            camera = self._registry.get(command.camera)
            record = await events.keep(
                EventType.OPERATOR_OPEN,
                who,
                camera=command.camera,
                lane=lane.name if lane else (camera.lane if camera else None),
                reason=reason,
                note_text=note_text,
                command=command,
            )
            note(request, target=command.camera, event=record.id, note=note_text)
            answer["event"] = event_summary(record)
        return json_response(request, answer, 202)

    @authorized(app, "/api/cameras/<serialno>/close", methods=["POST"], role=OPERATOR)
    def close_barrier(self, request: IRequest, who: Principal, serialno: str) -> bytes:
        return self._barrier(request, who, serialno, "close the barrier", self._control.close)

    @authorized(app, "/api/cameras/<serialno>/hold-open", methods=["POST"], role=OPERATOR)
    def hold_barrier_open(self, request: IRequest, who: Principal, serialno: str) -> bytes:
        return self._barrier(
            request, who, serialno, "hold the barrier open", self._control.hold_open
        )

    @authorized(app, "/api/cameras/<serialno>/trigger", methods=["POST"], role=OPERATOR)
    def trigger(self, request: IRequest, who: Principal, serialno: str) -> bytes:
        return self._command(
            request,
            who,
            serialno,
            "read a plate now",
            lambda: self._control.trigger(serialno, operator=who.name),
        )

    @authorized(app, "/api/cameras/<serialno>/serial", methods=["POST"], role=OPERATOR)
    def serial(self, request: IRequest, who: Principal, serialno: str) -> bytes:
        body = json_body(request)
        channel = body.get("channel")
        errors: dict[str, str] = {}
        if isinstance(channel, bool) or channel not in (0, 1):
            errors["channel"] = "must be 0 or 1"
        data = b""
        if ("hex" in body) == ("text" in body):
            errors["hex"] = "give either hex or text"
        elif "hex" in body:
            hex_text = body["hex"]
            try:
                if not isinstance(hex_text, str):
                    raise ValueError
                data = bytes.fromhex("".join(hex_text.split()))
            except ValueError:
                errors["hex"] = 'must be hexadecimal bytes such as "00 64 ff"'
        else:
            text = body["text"]
            try:
                if not isinstance(text, str):
                    raise ValueError
                # Site serial devices (LED boards) read GBK, a superset of ASCII.
                data = text.encode("gbk")
            except (ValueError, UnicodeEncodeError):
                errors["text"] = "must be text the serial device can show (GBK)"
        if not errors and not data:
            errors["hex" if "hex" in body else "text"] = "no bytes to send"
        if len(data) > MAX_SERIAL_BYTES:
            errors["hex" if "hex" in body else "text"] = f"at most {MAX_SERIAL_BYTES} bytes"
        if errors:
            raise ApiError(400, "; ".join(f"{k} {v}" for k, v in errors.items()), errors=errors)
        assert isinstance(channel, int)
        return self._command(
            request,
            who,
            serialno,
            "send serial data",
            lambda: self._control.send_serial(serialno, channel, data),
            f" ({len(data)} bytes on channel {channel})",
        )

    @authorized(app, "/api/cameras/<serialno>/display", methods=["POST"], role=OPERATOR)
    def display(self, request: IRequest, who: Principal, serialno: str) -> bytes:
        body = json_body(request)
        text = body.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ApiError(400, "text is required", errors={"text": "required"})
        if len(text) > MAX_DISPLAY_TEXT:
            reason = f"at most {MAX_DISPLAY_TEXT} characters"
            raise ApiError(400, f"text: {reason}", errors={"text": reason})
        name = self._known_camera(serialno)
        camera = self._registry.get(name)
        lane = self._lanes.for_camera(name)
        lane_name = lane.name if lane else (camera.lane if camera else None)
        if lane_name is not None and self._display_test is not None:
            try:
                self._display_test(lane_name, text)
            except LookupError:
                pass  # no display on this lane: the camera's own speaker, below
            else:
                log.info(
                    "{user} ({role}) tested the display of lane {lane}",
                    user=who.name,
                    role=who.role,
                    lane=lane_name,
                )
                return json_response(
                    request, {"lane": lane_name, "via": "display", "command": None}, 202
                )
        try:
            command = self._control.say(name, text)
        except UnknownCamera as error:
            raise ApiError(404, str(error)) from None
        except NotSupported:
            raise ApiError(
                409, f"lane {lane_name or '-'} has no display and camera {name} cannot speak"
            ) from None
        except CameraOffline as error:
            raise ApiError(409, str(error)) from None
        except CommandRefused as error:
            raise ApiError(400, str(error)) from None
        log.info(
            "{user} ({role}) tested the voice of camera {serialno}",
            user=who.name,
            role=who.role,
            serialno=name,
        )
        return json_response(
            request,
            {
                "lane": lane_name,
                "via": "camera" if command is not None else "display",
                "command": command.describe() if command is not None else None,
            },
            202,
        )

    @authorized(app, "/api/cameras/<serialno>/resync-whitelist", methods=["POST"], role=OPERATOR)
    def resync_whitelist(self, request: IRequest, who: Principal, serialno: str) -> bytes:
        name = self._known_camera(serialno)
        lane = self._lanes.for_camera(name)
        if self._camera_sync is None or lane is None or not lane.sync_whitelist:
            raise ApiError(409, f"camera {name} does not keep a copy of the plate list")
        camera = self._registry.get(name)
        refusal = camera.mode.refusal(Capability.WHITELIST) if camera is not None else None
        if refusal is not None:
            raise ApiError(409, f"camera {name} cannot keep a plate list: {refusal}")
        self._camera_sync.resync(name)
        log.info(
            "{user} ({role}) asked for a full plate list resync of camera {serialno}",
            user=who.name,
            role=who.role,
            serialno=name,
        )
        state = self._camera_sync.state(name)
        return json_response(
            request,
            {
                "camera": name,
                "whitelist_sync": _sync_json(
                    state.describe() if state is not None else None, self._registry.get(name)
                ),
            },
            202,
        )

    @authorized(app, "/api/cameras/<serialno>/snapshot", methods=["POST"], role=OPERATOR)
    async def snapshot(self, request: IRequest, who: Principal, serialno: str) -> bytes:
        log.info(
            "{user} ({role}) asked camera {serialno} for a snapshot",
            user=who.name,
            role=who.role,
            serialno=serialno,
        )
        taking = Deferred.fromCoroutine(self._control.snapshot(serialno))
        # The page going away must not cancel the camera's command: it is
        # already queued and ends on its own (completed, or timed out).
        waiting: Deferred[bytes] = Deferred()
        taking.chainDeferred(waiting)
        try:
            image = await waiting
        except UnknownCamera as error:
            raise ApiError(404, str(error)) from None
        except (CameraOffline, NotSupported) as error:
            raise ApiError(409, str(error)) from None
        except CommandRefused as error:
            raise ApiError(400, str(error)) from None
        except CommandFailed as error:
            raise ApiError(
                504, f"no image came from camera {serialno}: {error.command.reason}"
            ) from None
        common_headers(request)
        request.setHeader(b"Content-Type", b"image/jpeg")
        request.setHeader(b"Cache-Control", b"no-store")
        return image
