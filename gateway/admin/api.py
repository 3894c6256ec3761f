"""The admin API (v1) and the web page on top of it: what the site staff
see and do. Every path but the page's own files (and ``/metrics`` when
public) needs credentials: a login session (with its CSRF token on every
change) or a bearer token. Roles: ``viewer`` reads, ``operator`` also
commands cameras and edits the plate list, ``admin`` also replays dead
letters.

A Klein app bound to an :class:`AdminApi` instance; every dependency is
given to the constructor. Nothing here blocks the reactor: the store runs on
its own thread, password checks and CSV work on the reactor's thread pool.
"""

from __future__ import annotations

import hmac
import json
import math
import os
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime, timezone, tzinfo
from pathlib import Path
from typing import Any, Union
from zoneinfo import ZoneInfo

import attrs
from klein import Klein
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.routing import RequestRedirect

from gateway import __version__
from gateway.admin.auth import AdminAccounts, LoginThrottle, Principal, SessionStore
from gateway.admin.metrics import CONTENT_TYPE_LATEST, GatewayMetrics
from gateway.admin.settings import ADMIN, OPERATOR, VIEWER, AdminSettings, Role, role_allows
from gateway.admin.stream import EventStream
from gateway.bus import EventBus
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
from gateway.site import Lanes, LaneSettings, SiteSettings
from gateway.store.settings import StoreSettings
from gateway.policy.codec import EntryCodec, EntryError
from gateway.policy.csvformat import CsvImport, format_whitelist_csv, parse_whitelist_csv
from gateway.policy.plates import is_no_plate, normalise_plate
from gateway.policy.whitelist import WhitelistEntry
from gateway.store import IMAGE_KINDS, EventType, Store, StoreError, is_valid_event_id
from gateway.platelist import PlateList

__all__ = ["AdminApi", "ApiError", "STATIC_DIR"]

log = Logger()

#: The web page's files, served at ``/`` and ``/static/``.
STATIC_DIR = Path(__file__).resolve().parent / "static"

SESSION_COOKIE = b"anpr_session"
CSRF_HEADER = b"x-csrf-token"
MAX_JSON_BYTES = 64 * 1024
MAX_CSV_BYTES = 32 * 1024 * 1024
MAX_SERIAL_BYTES = 1024
MAX_DISPLAY_TEXT = 200
DEFAULT_EVENT_LIMIT = 50
MAX_EVENT_LIMIT = 500
DEFAULT_WHITELIST_LIMIT = 100
MAX_WHITELIST_LIMIT = 1000
KEEPALIVE_SECONDS = 15.0
MAX_STREAMS = 32
_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")
_SYNC_FIELDS = (
    "plates",
    "pending_adds",
    "pending_deletes",
    "in_sync",
    "lane_plates",
    "capacity",
    "partial",
)
_WRITE_METHODS = frozenset({b"POST", b"PUT", b"DELETE", b"PATCH"})
# A page file's name: a few path segments, none hidden (no leading dot).
_STATIC_SEGMENT = r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}"
_STATIC_NAME_RE = re.compile(rf"{_STATIC_SEGMENT}(/{_STATIC_SEGMENT}){{0,4}}")
_CONTENT_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".mjs": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".json": b"application/json; charset=utf-8",
    ".svg": b"image/svg+xml",
    ".png": b"image/png",
    ".jpg": b"image/jpeg",
    ".ico": b"image/x-icon",
    ".woff2": b"font/woff2",
    ".txt": b"text/plain; charset=utf-8",
}
# The page loads only its own files; nothing may frame it.
_PAGE_POLICY = (
    b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    b"img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; "
    b"base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

LinkStatus = Union[Mapping[str, Any], None]
StatusSource = Callable[[], Union[LinkStatus, Awaitable[LinkStatus]]]


class ApiError(Exception):
    """An answer other than success: ``status``, a one-line ``message``,
    per-field ``errors`` for a 400, extra ``headers``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        errors: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = dict(errors) if errors else None
        self.headers = dict(headers) if headers else {}


def _common_headers(request: IRequest) -> None:
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    request.setHeader(b"Referrer-Policy", b"no-referrer")
    request.setHeader(b"X-Frame-Options", b"DENY")


def _json(request: IRequest, value: Any, status: int = 200) -> bytes:
    _common_headers(request)
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
    request.setHeader(b"Cache-Control", b"no-store")
    # Text is returned exactly as stored (a note may hold anything); the
    # page inserts it as text, never as markup.
    return json.dumps(value, ensure_ascii=False, default=str).encode("utf-8")


def _no_content(request: IRequest) -> bytes:
    _common_headers(request)
    request.setResponseCode(204)
    request.setHeader(b"Cache-Control", b"no-store")
    return b""


def _arg(request: IRequest, name: str) -> str | None:
    values = request.args.get(name.encode("ascii")) if request.args else None
    if not values:
        return None
    try:
        text: str = values[-1].decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, f"{name} is not UTF-8 text", errors={name: "not UTF-8 text"}) from None
    return text


def _int_arg(request: IRequest, name: str, default: int | None, low: int, high: int) -> int | None:
    text = _arg(request, name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        reason = f"must be an integer from {low} to {high}"
        raise ApiError(400, f"{name} {reason}", errors={name: reason})
    return value


def _time_arg(request: IRequest, name: str) -> datetime | None:
    text = _arg(request, name)
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        reason = "must be an ISO 8601 time such as 2025-01-31T08:00:00Z"
        raise ApiError(400, f"{name} {reason}", errors={name: reason}) from None
    # The API speaks UTC: a time without an offset is UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def _read_body(request: IRequest, limit: int) -> bytes:
    content = request.content
    if content is None:
        return b""
    content.seek(0)
    data: bytes = content.read(limit + 1)
    if len(data) > limit:
        raise ApiError(413, f"the request body is larger than {limit} bytes")
    return data


def _json_body(request: IRequest, *, required: bool = True) -> dict[str, Any]:
    data = _read_body(request, MAX_JSON_BYTES)
    if not data.strip():
        if required:
            raise ApiError(400, "a JSON object is expected in the body")
        return {}
    content_type = (_header(request, b"content-type") or "").split(";")[0].strip().lower()
    if content_type != "application/json":
        # Also keeps cross-site HTML forms out: they cannot send JSON.
        raise ApiError(415, "send the body as application/json")
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise ApiError(400, f"the body is not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise ApiError(400, "a JSON object is expected in the body")
    return value


def _session_cookie(request: IRequest, value: str, max_age: int) -> None:
    """The login cookie: script-proof, never sent cross-site, and over
    HTTPS only when the page came over HTTPS."""
    web_request: Any = request  # twisted.web.http.Request: IRequest lacks the flags
    web_request.addCookie(
        SESSION_COOKIE,
        value.encode("ascii"),
        path=b"/",
        max_age=str(max_age).encode("ascii"),
        httpOnly=True,
        sameSite="strict",
        secure=True if request.isSecure() else None,
    )


def _header(request: IRequest, name: bytes) -> str | None:
    value = request.getHeader(name)
    if value is None:
        return None
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


def _client(request: IRequest) -> str:
    address = request.getClientAddress()
    return str(getattr(address, "host", None) or address)


def _iso(value: datetime | None, tz: tzinfo | None = None) -> str | None:
    if value is None:
        return None
    return (value.astimezone(tz) if tz is not None else value).isoformat()


class AdminApi:
    """The admin API and the page.

    ``store`` returns the open store or None (while it opens: answered 503).
    ``display_test(lane, text)`` shows and speaks ``text`` on a lane's
    display (raising a ``LookupError`` such as ``NoDisplay`` for a lane
    without one); ``has_display(lane)`` says whether a lane has one.
    ``serial_status()`` lists the serial ports as dicts;
    ``upstream_status()`` gives the cloud link as a dict with ``state`` and
    ``last_error`` (or an awaitable of it), None when the gateway runs
    without a cloud. ``on_replay()`` is called after a dead letter is queued
    again (to wake the outbox).
    """

    app = Klein()

    def __init__(
        self,
        *,
        reactor: IReactorThreads,
        clock: IReactorTime,
        site: SiteSettings,
        lanes: Lanes,
        store_settings: StoreSettings,
        settings: AdminSettings,
        users: AdminAccounts,
        registry: CameraRegistry,
        control: CameraControl,
        store: Callable[[], Store | None],
        plate_list: PlateList,
        codec: EntryCodec,
        camera_sync: CameraWhitelistSync | None,
        bus: EventBus,
        metrics: GatewayMetrics | None = None,
        display_test: Callable[[str, str], object] | None = None,
        has_display: Callable[[str], bool] | None = None,
        serial_status: Callable[[], Iterable[Mapping[str, Any]]] | None = None,
        upstream_status: StatusSource | None = None,
        on_replay: Callable[[], object] | None = None,
        static_dir: Path | str | None = None,
        keepalive_seconds: float = KEEPALIVE_SECONDS,
        max_streams: int = MAX_STREAMS,
    ) -> None:
        self._reactor = reactor
        self._clock = clock
        self._site = site
        self._lanes = lanes
        self._store_settings = store_settings
        self._settings = settings
        self._users = users
        self._registry = registry
        self._control = control
        self._store = store
        self._plate_list = plate_list
        self._codec = codec
        self._camera_sync = camera_sync
        self._bus = bus
        self._metrics = metrics
        self._display_test = display_test
        self._has_display = has_display
        self._serial_status = serial_status
        self._upstream_status = upstream_status
        self._on_replay = on_replay
        self._static_dir = Path(static_dir) if static_dir is not None else STATIC_DIR
        self._tz = site.tz
        self._started = clock.seconds()
        self.sessions = SessionStore(clock, settings.session_hours * 3600.0)
        self.throttle = LoginThrottle(clock)
        self.keepalive_seconds = keepalive_seconds
        self.max_streams = max_streams
        self.streams: set[EventStream] = set()

    def resource(self) -> IResource:
        return self.app.resource()

    # -- authentication ---------------------------------------------------------

    def _principal(self, request: IRequest) -> Principal | None:
        header = _header(request, b"authorization")
        if header is not None:
            scheme, _, token = header.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise ApiError(401, "only bearer tokens are accepted in Authorization")
            found = self._users.check_token(token.strip())
            if found is None:
                raise ApiError(401, "unknown bearer token")
            return Principal(name=found.name, role=found.role, via="token")
        cookie = request.getCookie(SESSION_COOKIE)
        if cookie:
            session = self.sessions.get(cookie.decode("ascii", "replace"))
            if session is not None:
                return Principal(
                    name=session.user, role=session.role, via="session", session=session
                )
        return None

    def _authorize(self, request: IRequest, needed: Role = VIEWER) -> Principal:
        """Who is asking, once they may do what needs ``needed``: 401 with no
        valid credentials, 403 for a missing CSRF token or a weaker role."""
        principal = self._principal(request)
        if principal is None:
            raise ApiError(401, "log in first")
        if request.method in _WRITE_METHODS and principal.session is not None:
            sent = _header(request, CSRF_HEADER) or ""
            if not _same(sent, principal.session.csrf_token):
                raise ApiError(403, "missing or wrong CSRF token (X-CSRF-Token)")
        if not role_allows(principal.role, needed):
            raise ApiError(403, f"the {principal.role} role may not do this")
        return principal

    @app.route("/api/login", methods=["POST"])
    async def login(self, request: IRequest) -> bytes:
        address = _client(request)
        wait = self.throttle.retry_after(address)
        if wait is not None:
            raise ApiError(
                429,
                "too many failed logins from this address; try again later",
                headers={"Retry-After": str(math.ceil(wait))},
            )
        body = _json_body(request)
        name, password = body.get("username"), body.get("password")
        if not isinstance(name, str) or not isinstance(password, str) or not name or not password:
            raise ApiError(400, "username and password are required")
        if not self._users.loaded:
            raise ApiError(503, "the gateway is starting; try again in a moment")
        # Counted before the (slow) check, so that many attempts at once
        # cannot all be checked before the first failure counts.
        self.throttle.failed(address)
        user = await self._users.check_password(name, password)
        if user is None:
            known = self._users.user(name)
            # A name that is no user may be a password typed in the wrong
            # field: it is not logged.
            log.warn(
                "Failed admin login as {user} from {address}",
                user=known.name if known is not None else "(an unknown name)",
                address=address,
            )
            raise ApiError(401, "wrong user name or password")
        self.throttle.succeeded(address)
        session_id, session = self.sessions.create(user.name, user.role)
        _session_cookie(request, session_id, int(self.sessions.lifetime))
        log.info(
            "Admin login: {user} ({role}) from {address}",
            user=user.name,
            role=user.role,
            address=address,
        )
        return _json(
            request, {"user": user.name, "role": user.role, "csrf_token": session.csrf_token}
        )

    @app.route("/api/logout", methods=["POST"])
    def logout(self, request: IRequest) -> bytes:
        principal = self._principal(request)
        if principal is not None and principal.session is not None:
            self._authorize(request)  # the CSRF check
            self.sessions.end(principal.session)
            log.info("Admin logout: {user}", user=principal.name)
        _session_cookie(request, "", 0)
        return _no_content(request)

    @app.route("/api/session", methods=["GET"])
    def session(self, request: IRequest) -> bytes:
        principal = self._authorize(request)
        return _json(
            request,
            {
                "user": principal.name,
                "role": principal.role,
                "csrf_token": principal.session.csrf_token if principal.session else None,
            },
        )

    # -- cameras -------------------------------------------------------------------

    @app.route("/api/cameras", methods=["GET"])
    async def cameras(self, request: IRequest) -> bytes:
        self._authorize(request)
        store = self._store()
        rows: list[dict[str, Any]] = []
        listed: set[str] = set()
        for lane in self._lanes:
            camera = self._registry.get(lane.camera)
            rows.append(await self._camera_json(camera, lane.camera, lane, store))
            listed.add(lane.camera.casefold())
        for camera in self._registry:
            if camera.serialno.casefold() not in listed:
                lane_config = self._lanes.for_camera(camera.serialno)
                rows.append(await self._camera_json(camera, camera.serialno, lane_config, store))
        return _json(request, {"cameras": rows})

    async def _camera_json(
        self, camera: Camera | None, serialno: str, lane: LaneSettings | None, store: Store | None
    ) -> dict[str, Any]:
        if camera is not None:
            row: dict[str, Any] = dict(camera.describe())
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
        if sync is None:
            row["whitelist_sync"] = None
        else:
            described = sync.describe()
            row["whitelist_sync"] = {key: described[key] for key in _SYNC_FIELDS}
        row["display"] = bool(
            lane is not None and self._has_display is not None and self._has_display(lane.name)
        )
        return row

    def _lane_of(self, serialno: str) -> LaneSettings | None:
        return self._lanes.for_camera(serialno)

    def _known_camera(self, serialno: str) -> str:
        """The camera's serial number as the gateway spells it; 404 if unknown."""
        camera = self._registry.get(serialno)
        if camera is not None:
            return camera.serialno
        lane = self._lane_of(serialno)
        if lane is not None:
            return lane.camera
        raise ApiError(404, f"no camera {serialno} is known to this gateway")

    def _command(
        self,
        request: IRequest,
        principal: Principal,
        serialno: str,
        action: str,
        issue: Callable[[], CameraCommand],
        detail: str = "",
    ) -> bytes:
        """Issue a camera command for ``principal``: 202 with the command, or
        the refusal (404 unknown camera, 409 offline or unsupported, 400)."""
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
        return _json(request, {"command": command.describe()}, 202)

    def _barrier(
        self,
        request: IRequest,
        serialno: str,
        action: str,
        issue: Callable[[str, int | None], CameraCommand],
    ) -> bytes:
        who = self._authorize(request, OPERATOR)
        body = _json_body(request, required=False)
        channel = body.get("channel")
        if channel is not None and (
            isinstance(channel, bool) or not isinstance(channel, int) or not 0 <= channel <= 3
        ):
            raise ApiError(400, "channel must be 0-3", errors={"channel": "must be 0-3"})
        return self._command(
            request,
            who,
            serialno,
            action,
            lambda: issue(serialno, channel),
            "" if channel is None else f" (channel {channel})",
        )

    @app.route("/api/cameras/<serialno>/open", methods=["POST"])
    def open_barrier(self, request: IRequest, serialno: str) -> bytes:
        return self._barrier(request, serialno, "open the barrier", self._control.open)

    @app.route("/api/cameras/<serialno>/close", methods=["POST"])
    def close_barrier(self, request: IRequest, serialno: str) -> bytes:
        return self._barrier(request, serialno, "close the barrier", self._control.close)

    @app.route("/api/cameras/<serialno>/hold-open", methods=["POST"])
    def hold_barrier_open(self, request: IRequest, serialno: str) -> bytes:
        return self._barrier(request, serialno, "hold the barrier open", self._control.hold_open)

    @app.route("/api/cameras/<serialno>/trigger", methods=["POST"])
    def trigger(self, request: IRequest, serialno: str) -> bytes:
        who = self._authorize(request, OPERATOR)
        return self._command(
            request, who, serialno, "read a plate now", lambda: self._control.trigger(serialno)
        )

    @app.route("/api/cameras/<serialno>/serial", methods=["POST"])
    def serial(self, request: IRequest, serialno: str) -> bytes:
        who = self._authorize(request, OPERATOR)
        body = _json_body(request)
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

    @app.route("/api/cameras/<serialno>/display", methods=["POST"])
    def display(self, request: IRequest, serialno: str) -> bytes:
        who = self._authorize(request, OPERATOR)
        body = _json_body(request)
        text = body.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ApiError(400, "text is required", errors={"text": "required"})
        if len(text) > MAX_DISPLAY_TEXT:
            reason = f"at most {MAX_DISPLAY_TEXT} characters"
            raise ApiError(400, f"text: {reason}", errors={"text": reason})
        name = self._known_camera(serialno)
        camera = self._registry.get(name)
        lane = self._lane_of(name)
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
                return _json(request, {"lane": lane_name, "via": "display", "command": None}, 202)
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
        return _json(
            request,
            {
                "lane": lane_name,
                "via": "camera" if command is not None else "display",
                "command": command.describe() if command is not None else None,
            },
            202,
        )

    @app.route("/api/cameras/<serialno>/resync-whitelist", methods=["POST"])
    def resync_whitelist(self, request: IRequest, serialno: str) -> bytes:
        who = self._authorize(request, OPERATOR)
        name = self._known_camera(serialno)
        lane = self._lane_of(name)
        if self._camera_sync is None or lane is None or not lane.sync_whitelist:
            raise ApiError(409, f"camera {name} does not keep a copy of the plate list")
        self._camera_sync.resync(name)
        log.info(
            "{user} ({role}) asked for a full plate list resync of camera {serialno}",
            user=who.name,
            role=who.role,
            serialno=name,
        )
        state = self._camera_sync.state(name)
        described = state.describe() if state is not None else None
        return _json(
            request,
            {
                "camera": name,
                "whitelist_sync": (
                    {key: described[key] for key in _SYNC_FIELDS} if described else None
                ),
            },
            202,
        )

    @app.route("/api/cameras/<serialno>/snapshot", methods=["POST"])
    async def snapshot(self, request: IRequest, serialno: str) -> bytes:
        who = self._authorize(request, OPERATOR)
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
        _common_headers(request)
        request.setHeader(b"Content-Type", b"image/jpeg")
        request.setHeader(b"Cache-Control", b"no-store")
        return image

    # -- events -------------------------------------------------------------------

    def _open_store(self) -> Store:
        store = self._store()
        if store is None:
            raise ApiError(503, "the event store is not open yet")
        return store

    @app.route("/api/events", methods=["GET"])
    async def events(self, request: IRequest) -> bytes:
        self._authorize(request)
        limit = _int_arg(request, "limit", DEFAULT_EVENT_LIMIT, 1, MAX_EVENT_LIMIT)
        assert limit is not None
        before = _int_arg(request, "before", None, 1, 2**62)
        event_type = _arg(request, "type") or None
        if event_type is not None and event_type not in {t.value for t in EventType}:
            known = ", ".join(t.value for t in EventType)
            raise ApiError(400, f"type must be one of {known}", errors={"type": f"one of {known}"})
        opened = _arg(request, "open") or None
        if opened not in (None, "true", "false"):
            raise ApiError(400, "open must be true or false", errors={"open": "true or false"})
        store = self._open_store()
        try:
            records = await store.recent_events(
                limit + 1,
                before,
                plate=_arg(request, "plate") or None,
                camera=_arg(request, "camera") or None,
                lane=_arg(request, "lane") or None,
                type=event_type,
                decision_open=None if opened is None else opened == "true",
                reason=_arg(request, "reason") or None,
                since=_time_arg(request, "since"),
                until=_time_arg(request, "until"),
            )
        except StoreError as error:
            raise ApiError(503, f"the event store cannot answer: {error}") from None
        page = records[:limit]
        more = len(records) > limit
        return _json(
            request,
            {
                "events": [event_summary(record) for record in page],
                "next_before": page[-1].seq if more and page else None,
            },
        )

    @app.route("/api/events/<event_id>", methods=["GET"])
    async def event(self, request: IRequest, event_id: str) -> bytes:
        self._authorize(request)
        if not _event_id_ok(event_id):
            raise ApiError(404, "no such event")
        record = await self._open_store().get_event(event_id)
        if record is None:
            raise ApiError(404, "no such event")
        return _json(request, event_summary(record))

    @app.route("/api/events/<event_id>/image/<kind>", methods=["GET"])
    async def event_image(self, request: IRequest, event_id: str, kind: str) -> bytes:
        self._authorize(request)
        # Only ids and kinds of the expected shape ever reach the store: no
        # path is built from anything else.
        if not _event_id_ok(event_id) or kind not in IMAGE_KINDS:
            raise ApiError(404, "no such image")
        image = await self._open_store().read_image(event_id, kind)
        if image is None:
            raise ApiError(404, "no such image")
        _common_headers(request)
        request.setHeader(b"Content-Type", b"image/jpeg")
        # An event's image never changes.
        request.setHeader(b"Cache-Control", b"private, max-age=86400, immutable")
        return image

    # -- whitelist -------------------------------------------------------------------

    def _valid_entry(self, request: IRequest, plate: str | None = None) -> WhitelistEntry:
        try:
            return self._codec.from_json(_json_body(request), "admin", plate=plate)
        except EntryError as error:
            errors = {field or "entry": reason for field, reason in error.errors.items()}
            raise ApiError(400, f"the entry is not valid ({error})", errors=errors) from None

    def _ready_whitelist(self) -> PlateList:
        self._open_store()
        if not self._plate_list.loaded:
            raise ApiError(503, "the plate list is still loading")
        return self._plate_list

    @app.route("/api/whitelist", methods=["GET"])
    def whitelist_entries(self, request: IRequest) -> bytes:
        self._authorize(request)
        limit = _int_arg(request, "limit", DEFAULT_WHITELIST_LIMIT, 1, MAX_WHITELIST_LIMIT)
        offset = _int_arg(request, "offset", 0, 0, 2**31)
        assert limit is not None and offset is not None
        query = normalise_plate(_arg(request, "q") or "")
        entries = self._ready_whitelist().entries()
        if query:
            entries = tuple(entry for entry in entries if query in entry.plate)
        return _json(
            request,
            {
                "entries": [self._codec.to_json(e) for e in entries[offset : offset + limit]],
                "total": len(entries),
            },
        )

    @app.route("/api/whitelist", methods=["POST"])
    async def add_whitelist_entry(self, request: IRequest) -> bytes:
        who = self._authorize(request, OPERATOR)
        whitelist = self._ready_whitelist()
        entry = self._valid_entry(request)
        if whitelist.get(entry.plate) is not None:
            raise ApiError(409, f"{entry.plate} is already listed; change it with PUT")
        await self._upsert(whitelist, [entry])
        log.info(
            "{user} ({role}) added {count} plate to the list: {plate}",
            user=who.name,
            role=who.role,
            count=1,
            plate=entry.plate,
        )
        return _json(request, self._codec.to_json(entry), 201)

    @app.route("/api/whitelist/<plate>", methods=["PUT"])
    async def change_whitelist_entry(self, request: IRequest, plate: str) -> bytes:
        who = self._authorize(request, OPERATOR)
        whitelist = self._ready_whitelist()
        entry = self._valid_entry(request, normalise_plate(plate))
        await self._upsert(whitelist, [entry])
        log.info(
            "{user} ({role}) changed {count} plate on the list: {plate}",
            user=who.name,
            role=who.role,
            count=1,
            plate=entry.plate,
        )
        return _json(request, self._codec.to_json(entry))

    @app.route("/api/whitelist/<plate>", methods=["DELETE"])
    async def delete_whitelist_entry(self, request: IRequest, plate: str) -> bytes:
        who = self._authorize(request, OPERATOR)
        whitelist = self._ready_whitelist()
        normalised = normalise_plate(plate)
        if is_no_plate(normalised) or whitelist.get(normalised) is None:
            raise ApiError(404, f"{plate} is not on the list")
        try:
            await whitelist.delete([normalised])
        except StoreError as error:
            raise ApiError(503, f"the plate list could not be saved: {error}") from None
        log.info(
            "{user} ({role}) deleted {count} plate from the list: {plate}",
            user=who.name,
            role=who.role,
            count=1,
            plate=normalised,
        )
        return _no_content(request)

    async def _upsert(self, whitelist: PlateList, entries: list[WhitelistEntry]) -> None:
        try:
            await whitelist.upsert(entries)
        except StoreError as error:
            raise ApiError(503, f"the plate list could not be saved: {error}") from None

    @app.route("/api/whitelist/import", methods=["POST"])
    async def import_whitelist(self, request: IRequest) -> bytes:
        who = self._authorize(request, OPERATOR)
        whitelist = self._ready_whitelist()
        content_type = (_header(request, b"content-type") or "").split(";")[0].strip().lower()
        if content_type.startswith("multipart/") or content_type.endswith("x-www-form-urlencoded"):
            raise ApiError(415, "send the CSV file itself as the body (Content-Type: text/csv)")
        data = _read_body(request, MAX_CSV_BYTES)
        if not data.strip():
            raise ApiError(400, "the body is empty: send the CSV file")
        parsed: CsvImport = await self._in_thread(parse_whitelist_csv, data, self._codec, "admin")
        if parsed.entries:
            await self._upsert(whitelist, list(parsed.entries))
        log.info(
            "{user} ({role}) imported {count} plates from a CSV file ({rejected} rows rejected)",
            user=who.name,
            role=who.role,
            count=len(parsed.entries),
            rejected=len(parsed.errors),
        )
        return _json(
            request,
            {
                "accepted": len(parsed.entries),
                "rejected": [
                    {"line": error.line, "column": error.column, "reason": error.reason}
                    for error in parsed.errors
                ],
            },
        )

    @app.route("/api/whitelist/export", methods=["GET"])
    async def export_whitelist(self, request: IRequest) -> bytes:
        self._authorize(request)
        entries = self._ready_whitelist().entries()
        text: str = await self._in_thread(format_whitelist_csv, entries, self._codec)
        _common_headers(request)
        request.setHeader(b"Content-Type", b"text/csv; charset=utf-8")
        request.setHeader(b"Content-Disposition", b"attachment; filename=whitelist.csv")
        request.setHeader(b"Cache-Control", b"no-store")
        # With a BOM, spreadsheets read the file as UTF-8 (plates in Chinese).
        return text.encode("utf-8-sig")

    def _in_thread(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
        return deferToThreadPool(
            self._reactor, self._reactor.getThreadPool(), function, *args, **kwargs
        )

    # -- status --------------------------------------------------------------------

    @app.route("/api/status", methods=["GET"])
    async def status(self, request: IRequest) -> bytes:
        self._authorize(request)
        store = self._store()
        cameras = list(self._registry)
        store_json: dict[str, Any] = {
            "open": store is not None,
            "db_bytes": None,
            "image_bytes": None,
            "image_files": None,
            "events": None,
            "free_disk_bytes": _free_disk(self._site.state_dir),
            "degraded": False,
            "reason": None if store is not None else "the event store is not open yet",
            "image_retention_days": self._store_settings.image_retention_days,
            "image_max_bytes": self._store_settings.image_max_bytes,
        }
        outbox_depth = dead_count = dropped = None
        dead_letters: list[dict[str, Any]] = []
        if store is not None:
            try:
                stats = await store.stats()
                dropped = (await store.outbox_dropped()).total
                dead_letters = [
                    {
                        "event_id": letter.event_id,
                        "camera": letter.camera,
                        "status": letter.status,
                        "body": letter.body,
                        "at": _iso(letter.at),
                        "attempts": letter.attempts,
                    }
                    for letter in await store.dead_letters(limit=100)
                ]
            except StoreError as error:
                store_json["reason"] = f"the event store cannot answer: {error}"
            else:
                store_json.update(
                    db_bytes=stats.db_bytes,
                    image_bytes=stats.image_bytes,
                    image_files=stats.image_files,
                    events=stats.events,
                    degraded=stats.health.degraded,
                    reason=stats.health.reason,
                )
                outbox_depth, dead_count = stats.outbox_depth, stats.dead_letters
        link = await self._upstream()
        return _json(
            request,
            {
                "version": __version__,
                "gateway": self._site.id,
                "uptime_seconds": round(self._clock.seconds() - self._started, 1),
                "store": store_json,
                "upstream": {
                    "configured": link is not None,
                    "state": link.get("state") if link is not None else None,
                    "last_error": link.get("last_error") if link is not None else None,
                    "outbox_depth": outbox_depth,
                    "dead_letters": dead_count,
                    "dropped": dropped,
                },
                "dead_letters": dead_letters,
                "serial_ports": (
                    [dict(port) for port in self._serial_status()] if self._serial_status else []
                ),
                "cameras": {
                    "known": len(cameras),
                    "online": sum(1 for camera in cameras if camera.online),
                    "comet_polls_held": self._registry.held_polls(),
                },
            },
        )

    async def _upstream(self) -> Mapping[str, Any] | None:
        if self._upstream_status is None:
            return None
        value = self._upstream_status()
        if isinstance(value, Awaitable):
            return await value
        return value

    @app.route("/api/dead-letters/<event_id>/replay", methods=["POST"])
    async def replay_dead_letter(self, request: IRequest, event_id: str) -> bytes:
        who = self._authorize(request, ADMIN)
        if not _event_id_ok(event_id):
            raise ApiError(404, "no such dead letter")
        try:
            queued = await self._open_store().replay_dead_letter(event_id)
        except StoreError as error:
            raise ApiError(503, f"the event store cannot answer: {error}") from None
        if not queued:
            raise ApiError(404, "no such dead letter")
        log.info(
            "{user} ({role}) queued dead letter {event_id} for the cloud again",
            user=who.name,
            role=who.role,
            event_id=event_id,
        )
        if self._on_replay is not None:
            self._on_replay()
        return _json(request, {"event_id": event_id, "queued": True}, 202)

    # -- live stream and metrics ------------------------------------------------------

    @app.route("/api/stream", methods=["GET"])
    def stream(self, request: IRequest) -> Deferred[None]:
        principal = self._authorize(request)
        if len(self.streams) >= self.max_streams:
            raise ApiError(503, "too many live streams open; close another page first")
        session = principal.session

        def alive() -> bool:
            return session is None or self.sessions.alive(session)

        _common_headers(request)
        stream = EventStream(request, self._clock, keepalive=self.keepalive_seconds, alive=alive)
        self.streams.add(stream)
        stream.done.addBoth(self._stream_ended, stream)
        stream.start(self._bus)
        return stream.done

    def end_streams(self) -> None:
        """End every live stream (the gateway is stopping): each response
        is finished properly and its timer cancelled."""
        for stream in list(self.streams):
            stream.end()

    def _stream_ended(self, result: object, stream: EventStream) -> object:
        self.streams.discard(stream)
        return result

    @app.route("/metrics", methods=["GET"])
    async def metrics(self, request: IRequest) -> bytes:
        if not self._settings.metrics_public:
            self._authorize(request)
        if self._metrics is None:
            raise ApiError(404, "metrics are not collected")
        body = await self._metrics.render()
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        request.setHeader(b"Cache-Control", b"no-store")
        return body

    # -- the page ------------------------------------------------------------------------

    @app.route("/", methods=["GET", "HEAD"])
    async def index(self, request: IRequest) -> bytes:
        page = await self._static_file("index.html")
        if page is None:
            raise ApiError(404, "the admin page is not installed")
        request.setHeader(b"Content-Security-Policy", _PAGE_POLICY)
        return self._serve(request, "index.html", page)

    @app.route("/static/<path:name>", methods=["GET", "HEAD"])
    async def static(self, request: IRequest, name: str) -> bytes:
        content = await self._static_file(name)
        if content is None:
            raise ApiError(404, "not found")
        return self._serve(request, name, content)

    async def _static_file(self, name: str) -> bytes | None:
        """A file of the page, or None. Only plain names below the static
        directory are looked at: no hidden files, no way out of it."""
        if _STATIC_NAME_RE.fullmatch(name) is None:
            return None
        root = self._static_dir.resolve()
        path = (root / name).resolve()
        if not path.is_relative_to(root):
            return None

        def read() -> bytes | None:
            try:
                return path.read_bytes() if path.is_file() else None
            except OSError:
                return None

        content: bytes | None = await self._in_thread(read)
        return content

    def _serve(self, request: IRequest, name: str, content: bytes) -> bytes:
        _common_headers(request)
        suffix = os.path.splitext(name)[1].lower()
        request.setHeader(b"Content-Type", _CONTENT_TYPES.get(suffix, b"application/octet-stream"))
        # Revalidated on every load: an upgraded gateway serves its new page.
        request.setHeader(b"Cache-Control", b"no-cache")
        return b"" if request.method == b"HEAD" else content

    # -- errors ----------------------------------------------------------------------------

    @app.handle_errors(ApiError)
    def _api_error(self, request: IRequest, failure: Failure) -> bytes:
        error = failure.value
        assert isinstance(error, ApiError)
        for name, value in error.headers.items():
            request.setHeader(name.encode("ascii"), value.encode("ascii"))
        if error.status == 401 and _header(request, b"authorization") is not None:
            request.setHeader(b"WWW-Authenticate", b'Bearer realm="anpr-gateway"')
        body: dict[str, Any] = {"error": error.message}
        if error.errors:
            body["errors"] = error.errors
        return _json(request, body, error.status)

    @app.handle_errors(HTTPException)
    def _not_here(self, request: IRequest, failure: Failure) -> bytes:
        error = failure.value
        assert isinstance(error, HTTPException)
        status = error.code or 404
        if isinstance(error, MethodNotAllowed):
            request.setHeader(b"Allow", ", ".join(error.valid_methods or ()).encode("ascii"))
            return _json(request, {"error": "method not allowed here"}, 405)
        if isinstance(error, RequestRedirect):
            request.setHeader(b"Location", error.new_url.encode("utf-8"))
            return _json(request, {"error": f"moved to {error.new_url}"}, status)
        if status == 404:
            return _json(request, {"error": "not found"}, 404)
        return _json(request, {"error": (error.description or error.name).strip()}, status)

    @app.handle_errors(Exception)
    def _unexpected(self, request: IRequest, failure: Failure) -> bytes | None:
        if failure.check(CancelledError):
            return None  # the client went away
        log.failure(
            "Admin API request {method} {path} failed",
            failure,
            method=request.method,
            path=request.path,
        )
        return _json(request, {"error": "internal error (logged)"}, 500)


def _same(sent: str, expected: str) -> bool:
    return hmac.compare_digest(sent.encode("utf-8", "replace"), expected.encode("utf-8"))


def _event_id_ok(event_id: str) -> bool:
    # The contract's shape, whole string (a trailing newline included), and
    # then the store's own: nothing else is ever looked up.
    return _ID_RE.fullmatch(event_id) is not None and is_valid_event_id(event_id)


def _free_disk(path: str) -> int | None:
    try:
        usage = os.statvfs(path)
    except OSError:
        return None
    return usage.f_bavail * usage.f_frsize
