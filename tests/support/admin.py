"""The admin API's test world: the gateway's parts built the way
``gateway.tap`` builds them (a real store in a temporary directory, the real
plate list, camera registry, command control and camera server, the real bus),
accounts for each role, and clients that speak to the API and to the camera
server through ``StubTreq``.

It runs in memory: the store's SQLite work, the plate list's bulk work and
the API's thread-pool work (password hashes, CSV files) run at once on the
calling thread, and commands and sessions run on a ``Clock``, so a request
through ``StubTreq`` is answered once the in-memory connection is flushed."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import attrs
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from gateway.admin.auth import AdminAccounts
from gateway.admin.metrics import GatewayMetrics
from gateway.admin.root import AdminRoot, build_admin, session_store
from gateway.admin.settings import AdminSettings, AdminToken, AdminUser, hash_password, token_digest
from gateway.camera.server import CameraServer
from gateway.config import GatewayConfig, parse_config
from support.gateway import plate_body
from support.parts import build_parts
from support.threads import HeldThreads, forget_held_pools, run_held_work

ENTRANCE = "d85b1269-8f942256"
EXIT = "e10b2d6c8c07b422361457935b518642"
STRANGER = "aaaa0000-bbbb1111"
TZ = "Asia/Shanghai"
BASE = "http://gateway.test"
CAMERA_BASE = "http://127.0.0.1:8080"

# Costly to compute (scrypt): made once for the whole module.
PASSWORDS = {"olga": "operator-pass-1", "vera": "viewer-pass-2", "ada": "admin-pass-3"}
HASHES = {name: hash_password(password) for name, password in PASSWORDS.items()}
MACHINE_TOKEN = "machine-token-operator-0123456789"
SCRAPER_TOKEN = "scraper-token-viewer-0123456789"

LANES = [
    {"name": "Entrance", "camera": ENTRANCE, "barrier_channel": 2},
    {
        "name": "Exit",
        "camera": EXIT,
        "direction": "out",
        "barrier_channel": 1,
        "sync_whitelist": False,
    },
]


def default_settings(**overrides: Any) -> AdminSettings:
    values: dict[str, Any] = {
        "users": (
            AdminUser("olga", HASHES["olga"], "operator"),
            AdminUser("vera", HASHES["vera"], "viewer"),
            AdminUser("ada", HASHES["ada"], "admin"),
        ),
        "tokens": (
            AdminToken("door-robot", token_digest(MACHINE_TOKEN), "operator"),
            AdminToken("prometheus", token_digest(SCRAPER_TOKEN), "viewer"),
        ),
    }
    values.update(overrides)
    return AdminSettings(**values)


@attrs.define
class Reply:
    status: int
    headers: dict[str, list[str]]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[-1] if values else None


async def settle(stub: StubTreq, waiting: Deferred[Any], what: str = "response") -> Any:
    """Flush ``stub``, running the work held for the thread pool, and give
    what ``waiting`` fired with. Nothing waits: the parts run in memory, so
    an answer that is not there once nothing more can move is an answer that
    does not come (or comes only when the test advances the clock)."""
    outcome: list[Any] = []

    def arrived(result: Any) -> None:
        outcome.append(result)

    waiting.addBoth(arrived)
    stub.flush()
    # Password checks and CSV work wait in the API's stand-in thread pool.
    while not outcome and run_held_work():
        stub.flush()
    if not outcome:
        raise AssertionError(f"no {what} once the connection was flushed")
    (result,) = outcome
    if isinstance(result, Failure):
        result.raiseException()
    return result


class Client:
    """One browser (its own cookie jar) or machine talking to the API."""

    def __init__(self, api: AdminRoot, *, base: str = BASE, token: str | None = None) -> None:
        self.stub: Any = StubTreq(api.resource())
        self.base = base
        self.token = token
        self.csrf: str | None = None
        #: A session cookie (``name=value``) sent by hand: a browser whose
        #: cookie was set by another instance of the API (a restart).
        self.cookie: str | None = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        csrf: bool = True,
    ) -> Reply:
        sent: dict[str, str] = dict(headers or {})
        if self.token is not None:
            sent.setdefault("Authorization", f"Bearer {self.token}")
        if self.cookie is not None:
            sent.setdefault("Cookie", self.cookie)
        if csrf and self.csrf is not None and method in ("POST", "PUT", "DELETE"):
            sent.setdefault("X-CSRF-Token", self.csrf)
        if json_body is not None:
            data = json.dumps(json_body).encode()
            sent.setdefault("Content-Type", "application/json")
        waiting = self.stub.request(
            method,
            self.base + path,
            data=data,
            headers={k: [v] for k, v in sent.items()},
            # A redirect is an answer to look at (the wall screen's sign-in).
            allow_redirects=False,
        )
        response = await settle(self.stub, waiting)
        body = await settle(self.stub, self.stub.content(response), "body")
        headers_out = {
            name.decode().lower(): [v.decode("latin-1") for v in values]
            for name, values in response.headers.getAllRawHeaders()
        }
        return Reply(response.code, headers_out, body)

    async def get(self, path: str, **kwargs: Any) -> Reply:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, json_body: Any = None, **kwargs: Any) -> Reply:
        return await self.request("POST", path, json_body=json_body, **kwargs)

    async def login(self, name: str, password: str | None = None) -> Reply:
        reply = await self.post(
            "/api/login", {"username": name, "password": password or PASSWORDS[name]}
        )
        if reply.status == 200:
            self.csrf = reply.json()["csrf_token"]
        return reply

    def session_cookie(self, reply: Reply) -> str:
        """The ``name=value`` of the session cookie ``reply`` set."""
        cookie = (reply.header("set-cookie") or "").split(";")[0]
        assert cookie.startswith("anpr_session="), cookie
        return cookie

    def moved_to(self, api: AdminRoot, cookie: str) -> Client:
        """This browser, with ``cookie``, talking to ``api`` (the gateway
        after a restart)."""
        moved = Client(api, base=self.base, token=self.token)
        moved.cookie = cookie
        moved.csrf = self.csrf
        return moved


class Camera:
    """A camera posting to the real camera server (through StubTreq)."""

    def __init__(self, server: CameraServer) -> None:
        self.stub: Any = StubTreq(server.resource())

    async def post(
        self,
        body: bytes,
        path: str = "/devicemanagement/php/plateresult.php",
        content_type: str = "application/json",
    ) -> Any:
        waiting = self.stub.post(
            CAMERA_BASE + path, data=body, headers={"Content-Type": [content_type]}
        )
        response = await settle(self.stub, waiting)
        body_out = await settle(self.stub, self.stub.content(response), "body")
        return json.loads(body_out) if body_out else None


class AdminTestCase(TestCase):
    """Builds the gateway's parts the way ``gateway.tap`` does, and the API
    on top of them."""

    settings = default_settings()

    async def build(
        self,
        *,
        lanes: list[dict[str, Any]] | None = None,
        settings: AdminSettings | None = None,
        occupancy: dict[str, Any] | None = None,
        display_test: Callable[[str, str], object] | None = None,
        has_display: Callable[[str], bool] | None = None,
        serial_status: Callable[[], Any] | None = None,
        upstream_status: Callable[[], Any] | None = None,
        mqtt_status: Callable[[], Any] | None = None,
        on_replay: Callable[[], object] | None = None,
        static_dir: Path | None = None,
    ) -> AdminRoot:
        state_dir = Path(self.mktemp())
        state_dir.mkdir(parents=True)
        self.state_dir = state_dir
        self.config: GatewayConfig = parse_config(
            {
                "gateway": {"state_dir": str(state_dir), "id": "site-7", "timezone": TZ},
                "lane": LANES if lanes is None else lanes,
                **({"occupancy": occupancy} if occupancy is not None else {}),
            },
            source="<test>",
        )
        self.tz = ZoneInfo(TZ)
        # The parts on a Clock set to now: events must not look decades old.
        self.clock = Clock()
        self.clock.advance(time.time())
        parts = build_parts(self.config, self.clock)
        self.parts = parts
        self.registry = registry = parts.registry
        self.store_service = store_service = parts.store_service
        self.codec = codec = parts.codec
        self.whitelist = whitelist = parts.plate_list
        self.bus = bus = parts.bus

        def open_store() -> Any:
            return parts.store

        self.control = control = parts.control
        self.gate = parts.gate
        self.camera_server = parts.camera_server
        self.camera_sync = camera_sync = parts.camera_sync
        self.terminal = io.StringIO()
        settings = settings or self.settings
        forget_held_pools()
        self.threads = HeldThreads()
        threads: Any = self.threads  # the reactor's thread pool, as far as they use it
        self.users = users = AdminAccounts(
            settings,
            reactor=threads,
            state_dir=str(state_dir),
            open_store=store_service.when_open,
            terminal=self.terminal,
        )
        users.setServiceParent(parts.root)
        # The logins kept in the store, as the gateway keeps them.
        self.sessions = sessions = session_store(self.clock, settings, store_service.when_open)
        sessions.setServiceParent(parts.root)
        self.addCleanup(lambda: Deferred.fromCoroutine(parts.stop()))
        await parts.start()
        loaded = users.when_loaded()
        threads.run()  # a first start hashes the initial admin's password
        await loaded
        self.metrics = GatewayMetrics(
            comet_polls_held=registry.held_polls,
            cameras_online=lambda: sum(1 for c in registry if c.online),
            outbox_depth=lambda: (
                store_service.store.outbox_depth() if store_service.store else None
            ),
            serial_ports=serial_status,
            process=False,
        )
        self.metrics.watch(bus)
        self.api_arguments: dict[str, Any] = dict(
            reactor=threads,
            clock=self.clock,
            site=self.config.gateway,
            lanes=self.config.lanes,
            store_settings=self.config.store,
            settings=settings,
            users=users,
            registry=registry,
            control=control,
            store=open_store,
            plate_list=whitelist,
            codec=codec,
            camera_sync=camera_sync,
            bus=bus,
            metrics=self.metrics,
            display_test=display_test,
            has_display=has_display,
            serial_status=serial_status,
            upstream_status=upstream_status,
            mqtt_status=mqtt_status,
            on_replay=on_replay,
            static_dir=static_dir,
            sessions=sessions,
            occupancy=parts.occupancy,
            recorder=parts.recorder,
            gate=parts.gate,
        )
        self.api = build_admin(**self.api_arguments)
        return self.api

    async def restarted(self, settings: AdminSettings | None = None) -> AdminRoot:
        """The admin API as a restart builds it again over the same store:
        new accounts (``settings``, by default the same) and sessions read
        back from the store, nothing kept in memory."""
        settings = settings or self.api_arguments["settings"]
        threads: Any = self.threads
        users = AdminAccounts(
            settings,
            reactor=threads,
            state_dir=str(self.state_dir),
            open_store=self.store_service.when_open,
            terminal=io.StringIO(),
        )
        loaded = Deferred.fromCoroutine(users.load())
        threads.run()
        await loaded
        sessions = session_store(self.clock, settings, self.store_service.when_open)
        await sessions.load()
        return build_admin(
            **{**self.api_arguments, "settings": settings, "users": users, "sessions": sessions}
        )

    async def listen(self) -> int:
        """The API on a real loopback port; its port number. Its requests come
        over a socket, not through settle(): thread-pool work runs at once."""
        self.threads.at_once = True
        tcp: Any = reactor
        port = tcp.listenTCP(0, self.api.site(), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return int(port.getHost().port)

    async def until(self, condition: Callable[[], bool], what: str) -> None:
        for _ in range(1000):  # bounded: 10 s
            if condition():
                return
            await deferLater(reactor, 0.01, lambda: None)
        self.fail(f"timed out waiting for {what}")

    @property
    def store(self) -> Any:
        return self.store_service.store

    async def operator(self) -> Client:
        client = Client(self.api)
        self.assertEqual((await client.login("olga")).status, 200)
        return client

    async def camera_online(self, serialno: str = ENTRANCE, plateid: int = 1) -> Camera:
        camera = Camera(self.camera_server)
        answer = await camera.post(plate_body(serialno, "京A00001", plateid=plateid))
        self.assertIn("Response_AlarmInfoPlate", answer)
        return camera
