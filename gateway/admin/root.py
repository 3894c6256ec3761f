"""The admin listener: every admin resource under one root, and the site
that serves it.

Each resource (:mod:`~gateway.admin.session`, :mod:`~gateway.admin.cameras`,
:mod:`~gateway.admin.events`, :mod:`~gateway.admin.platelist`,
:mod:`~gateway.admin.status`, :mod:`~gateway.admin.stream`,
:mod:`~gateway.admin.attention`, :mod:`~gateway.admin.occupancy`,
:mod:`~gateway.admin.page`) is a small class with its own Klein app, its
routes under the full paths of the API. :class:`AdminRoot` hands each
request to the resource whose routes match its path, so the URLs are those
of one API; it mounts only resources whose every route declares who may use
it (:mod:`gateway.admin.access`).

:class:`AdminSite` refuses a body larger than its route reads before reading
it, and so before any credential is checked: the camera port's bounded
request (:class:`gateway.camera.http.BoundedRequest`), asked for the limit of
each request's route. Before any credential is checked too, a request must
arrive in time and its body at a minimum rate, and the bodies in memory at
once are bounded (the ``[admin]`` settings).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Protocol, cast
from urllib.parse import unquote_to_bytes

import attrs
from klein import Klein
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import MapAdapter

from gateway.admin.access import Access, RouteAccess, declared_routes
from gateway.admin.attention import AttentionFeed, AttentionResource
from gateway.admin.audit import AuditLog
from gateway.admin.auth import AdminAccounts, LoginThrottle, SessionStore
from gateway.admin.booth import BoothResource, OperatorEvents
from gateway.admin.cameras import CamerasResource
from gateway.admin.events import EventsResource
from gateway.admin.http import MAX_JSON_BYTES
from gateway.admin.occupancy import OccupancyResource
from gateway.admin.page import PageResource
from gateway.admin.platelist import PlateListResource
from gateway.admin.session import SessionResource
from gateway.admin.settings import AdminSettings
from gateway.admin.status import (
    Metrics,
    MetricsResource,
    SerialStatus,
    StatusResource,
    StatusSource,
    StoreState,
)
from gateway.admin.stream import KEEPALIVE_SECONDS, MAX_STREAMS, StreamResource
from gateway.admin.users import UsersResource
from gateway.bus import EventBus
from gateway.camera.control import CameraControl
from gateway.camera.http import BodyBudget, BoundedSite, RequestLimits
from gateway.camera.recorder import StoreRecorder
from gateway.camera.registry import CameraRegistry
from gateway.camera.whitelist_sync import CameraWhitelistSync
from gateway.gate import Gate
from gateway.occupancy import Occupancy
from gateway.platelist import PlateList
from gateway.policy.codec import EntryCodec
from gateway.site import Lanes, SiteSettings
from gateway.store import Store
from gateway.store.settings import StoreSettings

__all__ = [
    "AdminResource",
    "AdminRoot",
    "AdminSite",
    "MountedRoute",
    "build_admin",
    "session_store",
]

class AdminResource(Protocol):
    """A part of the admin API: a class with its own (bound) Klein app."""

    @property
    def app(self) -> Klein: ...


@attrs.frozen
class MountedRoute:
    """A route of the admin root: its URL pattern, methods, declaration and
    the resource serving it."""

    url: str
    methods: frozenset[str]
    access: RouteAccess
    resource: str


class _Mounted:
    def __init__(self, part: AdminResource) -> None:
        app = part.app
        routes = declared_routes(app)
        for rule in app.url_map.iter_rules():
            if rule.endpoint not in routes:
                raise TypeError(
                    f"{type(part).__name__} routes {rule.rule} without declaring who may use it"
                )
        self.name = type(part).__name__
        self.app = app
        self.routes = routes
        self.resource = app.resource()

    def match(self, method: str, path: str) -> RouteAccess | None:
        """The route for ``method`` and ``path``; None when another method
        is routed there. NotFound when this resource routes nothing there."""
        adapter: MapAdapter = self.app.url_map.bind("gateway", path_info=path, default_method=method)
        try:
            endpoint, _ = adapter.match()
        except NotFound:
            raise
        except HTTPException:
            # Another method (405), or a redirect: this resource answers it.
            return None
        return self.routes[str(endpoint)]


class AdminRoot(Resource):
    """The admin API and page: each request goes to the first resource
    (in the order given) whose routes match its path; no two resources may
    route the same URL pattern. A path none of them routes is a JSON 404."""

    isLeaf = True

    def __init__(
        self,
        parts: Sequence[AdminResource],
        *,
        stream: StreamResource,
        settings: AdminSettings | None = None,
        clock: IReactorTime | None = None,
    ) -> None:
        super().__init__()
        self._settings = settings or AdminSettings()
        self._clock = clock
        if not parts:
            raise ValueError("an admin root needs at least one resource")
        self._mounted = [_Mounted(part) for part in parts]
        routed_by: dict[str, str] = {}
        for mounted in self._mounted:
            for rule in mounted.app.url_map.iter_rules():
                other = routed_by.setdefault(rule.rule, mounted.name)
                if other != mounted.name:
                    raise ValueError(f"{rule.rule} is routed by both {other} and {mounted.name}")
        #: The live streams, ended when the gateway stops (:meth:`end_streams`).
        self.stream = stream

    def resource(self) -> IResource:
        return self

    def routes(self) -> list[MountedRoute]:
        """Every route mounted, with what it declared (for the docs and the
        tests: which are open, which need which role)."""
        return [
            MountedRoute(
                url=rule.rule,
                methods=frozenset(rule.methods or ()),
                access=mounted.routes[str(rule.endpoint)],
                resource=mounted.name,
            )
            for mounted in self._mounted
            for rule in mounted.app.url_map.iter_rules()
        ]

    def site(self) -> AdminSite:
        """The site to listen with (one per listener: each has its own
        memory budget for bodies)."""
        settings = self._settings
        largest = max((route.access.max_body for route in self.routes()), default=0)
        if settings.body_memory_budget_bytes < 2 * largest:
            raise ValueError(
                f"the admin body budget ({settings.body_memory_budget_bytes} bytes) is less "
                f"than twice the largest body a route reads ({largest} bytes)"
            )
        return AdminSite(
            self,
            limits=RequestLimits(
                header_timeout=settings.header_timeout_seconds,
                request_timeout=settings.request_timeout_seconds,
                min_body_rate=float(settings.min_body_bytes_per_second),
            ),
            body_budget=BodyBudget(settings.body_memory_budget_bytes),
            idle_timeout=settings.idle_timeout_seconds,
            clock=self._clock,
        )

    def end_streams(self) -> None:
        """End every live stream (the gateway is stopping)."""
        self.stream.end_streams()

    def _route(self, method: str, path: str) -> tuple[_Mounted, RouteAccess | None]:
        for mounted in self._mounted:
            try:
                return mounted, mounted.match(method, path)
            except NotFound:
                continue
        # Any resource answers "not found" as every other would.
        return self._mounted[0], None

    def render(self, request: IRequest) -> bytes | int:
        # The site gives a leaf its whole path, one segment each, unquoted.
        postpath: list[bytes] = list(getattr(request, "postpath", None) or [])
        try:
            path = "/" + b"/".join(postpath).decode("utf-8")
            method = request.method.decode("ascii")
        except UnicodeDecodeError:
            # Klein answers a path that is not UTF-8 (400).
            mounted = self._mounted[0]
        else:
            mounted, _ = self._route(method, path)
        # Klein renders as twisted.web does: bytes, or NOT_DONE_YET.
        return cast("bytes | int", mounted.resource.render(request))

    def body_limit(self, method: bytes, target: bytes) -> int:
        """The largest body the route of ``method`` and ``target`` (the
        request line's, query and all) reads: asked by the site before the
        body is read. A path no route takes gets the default limit."""
        path_bytes = target.split(b"?", 1)[0]
        segments = [unquote_to_bytes(segment) for segment in path_bytes[1:].split(b"/")]
        try:
            path = "/" + b"/".join(segments).decode("utf-8")
            _, declared = self._route(method.decode("ascii"), path)
        except UnicodeDecodeError:
            return MAX_JSON_BYTES
        return declared.max_body if declared is not None else MAX_JSON_BYTES


class AdminSite(BoundedSite):
    """The admin listener's site: bodies bounded by their route before they
    are read (413, connection closed), kept in memory within the site's
    budget; requests within their time limits (408 past them). A POST body
    is never parsed into ``request.args``: the API reads its bodies itself."""

    def __init__(
        self,
        root: AdminRoot,
        *,
        limits: RequestLimits,
        body_budget: BodyBudget | None,
        idle_timeout: float | None,
        clock: IReactorTime | None = None,
    ) -> None:
        super().__init__(
            root, limits=limits, body_budget=body_budget, idle_timeout=idle_timeout, clock=clock
        )
        self._root = root

    def body_limit(self, method: bytes, target: bytes) -> int:
        return self._root.body_limit(method, target)


def session_store(
    clock: IReactorTime,
    settings: AdminSettings,
    open_store: Callable[[], Awaitable[Store]] | None = None,
) -> SessionStore:
    """The login sessions for ``settings``; kept in the store when
    ``open_store`` is given (a service: add it to the tree)."""
    return SessionStore(
        clock,
        settings.session_hours * 3600.0,
        wall_lifetime=settings.wall_session_days * 86400.0,
        open_store=open_store,
    )


def build_admin(
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
    metrics: Metrics | None = None,
    display_test: Callable[[str, str], object] | None = None,
    has_display: Callable[[str], bool] | None = None,
    serial_status: SerialStatus | None = None,
    upstream_status: StatusSource | None = None,
    mqtt_status: StatusSource | None = None,
    on_replay: Callable[[], object] | None = None,
    static_dir: Path | str | None = None,
    keepalive_seconds: float = KEEPALIVE_SECONDS,
    max_streams: int = MAX_STREAMS,
    sessions: SessionStore | None = None,
    store_state: StoreState | None = None,
    occupancy: Occupancy | None = None,
    attention: AttentionFeed | None = None,
    recorder: StoreRecorder | None = None,
    gate: Gate | None = None,
) -> AdminRoot:
    """The admin API and page for the gateway's parts: each resource gets
    only what it uses.

    ``store()`` is the open store or None while it opens (answered 503).
    ``sessions`` keeps the logins (:func:`session_store`; by default in
    memory only). ``store_state`` (the store service) says why the store
    cannot open and takes the acknowledgement of a replaced database.
    ``occupancy`` counts the cars inside (None: not counted); ``attention``
    calls for the booth (by default one from ``bus``).
    ``recorder`` keeps the operators' events (opens,
    corrections, manual entries: without it they are refused, 503);
    ``gate`` decides a corrected plate again.
    """
    if sessions is None:
        sessions = session_store(clock, settings)
    if attention is None:
        attention = AttentionFeed(clock=clock, bus=bus, settings=settings.attention)
    audit = AuditLog(clock, store)

    def unavailable() -> str | None:
        problem = store_state.problem if store_state is not None else None
        if problem is None:
            return None
        return (
            f"the gateway cannot keep events or sign anyone in: the event store cannot open "
            f"({problem.reason}); it tries again every {problem.retry_in:.0f} s"
        )

    access = Access(users, sessions, audit, unavailable=unavailable)
    stream = StreamResource(
        access=access,
        clock=clock,
        bus=bus,
        sessions=sessions,
        keepalive_seconds=keepalive_seconds,
        max_streams=max_streams,
    )
    operator_events = OperatorEvents(
        clock=clock, control=control, recorder=recorder, reasons=settings.open_reasons
    )
    parts: list[AdminResource] = [
        SessionResource(
            access=access,
            accounts=users,
            sessions=sessions,
            throttle=LoginThrottle(clock),
            timezone=site.timezone,
        ),
        CamerasResource(
            access=access,
            lanes=lanes,
            registry=registry,
            control=control,
            store=store,
            camera_sync=camera_sync,
            display_test=display_test,
            has_display=has_display,
            operator_events=operator_events,
        ),
        EventsResource(access=access, store=store),
        BoothResource(
            access=access,
            clock=clock,
            timezone_name=site.timezone,
            lanes=lanes,
            store=store,
            operator_events=operator_events,
            gate=gate,
        ),
        PlateListResource(
            access=access, reactor=reactor, plate_list=plate_list, codec=codec, store=store
        ),
        StatusResource(
            access=access,
            clock=clock,
            site=site,
            store_settings=store_settings,
            store=store,
            registry=registry,
            upstream_status=upstream_status,
            mqtt_status=mqtt_status,
            serial_status=serial_status,
            on_replay=on_replay,
            store_state=store_state,
        ),
        MetricsResource(access=access, metrics=metrics, public=settings.metrics_public),
        UsersResource(access=access, accounts=users, sessions=sessions, audit=audit),
        AttentionResource(access=access, feed=attention),
        OccupancyResource(access=access, occupancy=occupancy, store=store),
        stream,
        PageResource(reactor=reactor, static_dir=static_dir),
    ]
    return AdminRoot(parts, stream=stream, settings=settings, clock=clock)
