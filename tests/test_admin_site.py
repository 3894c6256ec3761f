"""The admin site bounds request bodies by route before reading them, and so
before any credential is looked at; headers must come in time; and the root
mounts only resources whose every route declares who may use it.

Driven in memory: the real :class:`AdminSite` over a ``StringTransport``,
time on a ``Clock``."""

from __future__ import annotations

import json
from typing import Any

import pytest
from klein import Klein
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.iweb import IRequest

from gateway.admin.access import Access, authorized, open_route
from gateway.admin.auth import Principal, SessionStore
from gateway.admin.http import MAX_JSON_BYTES, admin_app, json_response, read_body
from gateway.admin.root import AdminRoot, AdminSite
from gateway.admin.settings import (
    OPERATOR,
    VIEWER,
    AdminSettings,
    AdminToken,
    Role,
    token_digest,
)
from gateway.admin.stream import StreamResource
from gateway.bus import EventBus

TOKEN = "robot-token-0123456789"
LARGE = 1_000_000


class CountingTokens:
    """The machine tokens, counting every check (a credential looked at)."""

    loaded = True

    def __init__(self) -> None:
        self.checks = 0

    def check_token(self, token: str) -> AdminToken | None:
        self.checks += 1
        if token == TOKEN:
            return AdminToken("robot", token_digest(TOKEN), "operator")
        return None

    def session_role(self, origin: str, name: str) -> Role | None:
        return None


class Uploads:
    app = admin_app()

    def __init__(self, access: Access) -> None:
        self.access = access
        self.bodies: list[int] = []

    @authorized(app, "/api/small", methods=["POST"], role=VIEWER)
    def small(self, request: IRequest, who: Principal) -> bytes:
        self.bodies.append(len(read_body(request, MAX_JSON_BYTES)))
        return json_response(request, {"bytes": self.bodies[-1]})

    @authorized(app, "/api/large/<name>", methods=["POST"], role=OPERATOR, max_body=LARGE)
    def large(self, request: IRequest, who: Principal, name: str) -> bytes:
        self.bodies.append(len(read_body(request, LARGE)))
        return json_response(request, {"bytes": self.bodies[-1], "name": name})

    @open_route(app, "/api/open", methods=["POST"], reason="a test of open routes")
    def open(self, request: IRequest) -> bytes:
        self.bodies.append(len(read_body(request, MAX_JSON_BYTES)))
        return json_response(request, {"bytes": self.bodies[-1]})


class Fixture:
    def __init__(self, **budgets: Any) -> None:
        self.clock = Clock()
        self.tokens = CountingTokens()
        sessions = SessionStore(self.clock, 3600.0)
        access = Access(self.tokens, sessions)
        self.uploads = Uploads(access)
        stream = StreamResource(access=access, clock=self.clock, bus=EventBus(), sessions=sessions)
        settings = AdminSettings(header_timeout_seconds=30.0, **budgets)
        self.root = AdminRoot([self.uploads, stream], stream=stream, settings=settings, clock=self.clock)
        self.site = self.root.site()

    def connect(self, peer_host: str = "192.0.2.7") -> tuple[IProtocol, StringTransport]:
        peer = IPv4Address("TCP", peer_host, 50000)
        protocol = self.site.buildProtocol(peer)
        assert protocol is not None
        # Every timer of the connection (idle, headers) on the test's clock.
        protocol.callLater = self.clock.callLater
        transport = StringTransport(peerAddress=peer, hostAddress=IPv4Address("TCP", "127.0.0.1", 8081))
        protocol.makeConnection(transport)
        return protocol, transport


def head(path: str, *headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: gateway.test", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def status_of(transport: StringTransport) -> int:
    first = transport.value().split(b"\r\n", 1)[0]
    return int(first.split(b" ")[1])


def body_of(transport: StringTransport) -> object:
    head, rest = transport.value().split(b"\r\n\r\n", 1)
    if b"transfer-encoding: chunked" not in head.lower():
        return json.loads(rest)
    body = b""
    while True:
        size, rest = rest.split(b"\r\n", 1)
        if int(size, 16) == 0:
            return json.loads(body)
        body, rest = body + rest[: int(size, 16)], rest[int(size, 16) + 2 :]


def test_an_announced_body_over_the_limit_is_refused_before_it_is_read() -> None:
    fixture = Fixture()
    protocol, transport = fixture.connect()
    # 50 MB announced, with credentials: only the headers are sent.
    protocol.dataReceived(
        head(
            "/api/large/a",
            "Content-Length: 52428800",
            f"Authorization: Bearer {TOKEN}",
            "Content-Type: text/csv",
        )
    )
    assert status_of(transport) == 413
    assert transport.disconnecting
    assert f"the limit is {LARGE} bytes" in str(body_of(transport))
    # Whatever still comes is thrown away, not stored; nobody's credentials
    # were looked at and no handler ran.
    written = len(transport.value())
    protocol.dataReceived(b"x" * 4_000_000)
    assert len(transport.value()) == written
    assert fixture.tokens.checks == 0
    assert fixture.uploads.bodies == []


def test_a_client_waiting_for_100_continue_is_not_told_to_send_a_refused_body() -> None:
    fixture = Fixture()
    protocol, transport = fixture.connect()
    # curl asks first for bodies over 1 MB.
    protocol.dataReceived(
        head("/api/large/a", "Content-Length: 52428800", "Expect: 100-continue")
    )
    assert status_of(transport) == 413
    assert b"100 Continue" not in transport.value()
    protocol, transport = fixture.connect()
    protocol.dataReceived(head("/api/large/a", "Content-Length: 5", "Expect: 100-continue"))
    assert transport.value().startswith(b"HTTP/1.1 100 Continue\r\n\r\n")


def test_the_default_limit_holds_for_every_route_that_declares_none() -> None:
    fixture = Fixture()
    for path in ("/api/small", "/api/open", "/api/stream", "/api/nothing-here"):
        protocol, transport = fixture.connect()
        protocol.dataReceived(
            head(path, f"Content-Length: {MAX_JSON_BYTES + 1}", f"Authorization: Bearer {TOKEN}")
        )
        assert status_of(transport) == 413, path
        assert transport.disconnecting, path
    assert fixture.tokens.checks == 0
    assert fixture.uploads.bodies == []


def test_a_chunked_body_is_cut_off_at_the_limit() -> None:
    fixture = Fixture()
    protocol, transport = fixture.connect()
    protocol.dataReceived(
        head("/api/small", "Transfer-Encoding: chunked", f"Authorization: Bearer {TOKEN}")
    )
    assert transport.value() == b""
    chunk = b"x" * 16384
    sent = 0
    while not transport.disconnecting and sent < 10 * MAX_JSON_BYTES:
        protocol.dataReceived(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        sent += len(chunk)
    assert status_of(transport) == 413
    # Refused with the chunk that went over the limit, not later.
    assert sent <= MAX_JSON_BYTES + len(chunk)
    assert fixture.tokens.checks == 0
    assert fixture.uploads.bodies == []


def test_a_route_that_declares_more_reads_more_and_others_do_not() -> None:
    fixture = Fixture()
    body = b"p" * (LARGE - 10)
    protocol, transport = fixture.connect()
    protocol.dataReceived(
        head(
            "/api/large/%E4%BA%AC?note=1",
            f"Content-Length: {len(body)}",
            f"Authorization: Bearer {TOKEN}",
        )
        + body
    )
    assert status_of(transport) == 200
    assert body_of(transport) == {"bytes": len(body), "name": "京"}
    # The same size to a route that reads only JSON, and the right size by
    # a wrong method, get the default limit.
    for head_line in (head("/api/small"), head("/api/large/a").replace(b"POST", b"PUT", 1)):
        protocol, transport = fixture.connect()
        protocol.dataReceived(
            head_line.replace(b"\r\n\r\n", f"\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        )
        assert status_of(transport) == 413
    assert fixture.uploads.bodies == [len(body)]


def test_a_body_within_the_limit_still_needs_credentials() -> None:
    fixture = Fixture()
    protocol, transport = fixture.connect()
    protocol.dataReceived(head("/api/large/a", "Content-Length: 5") + b"hello")
    assert status_of(transport) == 401
    assert body_of(transport) == {"error": "log in first"}
    protocol, transport = fixture.connect()
    protocol.dataReceived(head("/api/open", "Content-Length: 5") + b"hello")
    assert (status_of(transport), body_of(transport)) == (200, {"bytes": 5})


def test_the_limit_is_asked_of_the_route() -> None:
    root = Fixture().root
    assert root.body_limit(b"POST", b"/api/large/x") == LARGE
    assert root.body_limit(b"POST", b"/api/large/x?y=%2F") == LARGE
    assert root.body_limit(b"POST", b"/api/%6Carge/x") == LARGE
    assert root.body_limit(b"GET", b"/api/large/x") == MAX_JSON_BYTES
    assert root.body_limit(b"POST", b"/api/large/x/y") == MAX_JSON_BYTES
    assert root.body_limit(b"POST", b"/api/large/%FF") == MAX_JSON_BYTES
    assert root.body_limit(b"POST", b"http://gateway.test/api/large/x") == MAX_JSON_BYTES


def test_headers_that_trickle_in_get_the_connection_closed() -> None:
    fixture = Fixture()
    protocol, transport = fixture.connect()
    protocol.dataReceived(b"POST /api/small HTTP/1.1\r\nHost: gateway.test\r\n")
    fixture.clock.advance(29)
    protocol.dataReceived(b"X-Slow: 1\r\n")
    assert not transport.disconnecting
    fixture.clock.advance(1.5)
    assert transport.disconnecting
    assert fixture.uploads.bodies == []


def test_headers_in_time_cancel_the_deadline() -> None:
    fixture = Fixture()
    protocol, transport = fixture.connect()
    protocol.dataReceived(head("/api/open", "Content-Length: 2") + b"{}")
    assert status_of(transport) == 200
    fixture.clock.advance(31)
    assert not transport.disconnecting


def test_a_connection_that_never_sends_a_request_is_closed_in_the_header_timeout() -> None:
    fixture = Fixture()
    protocol, transport = fixture.connect()
    fixture.clock.advance(29)
    assert not transport.disconnecting
    fixture.clock.advance(1.5)
    assert transport.disconnecting
    assert status_of(transport) == 408


def test_a_trickled_body_is_cut_before_any_credential_is_looked_at() -> None:
    fixture = Fixture(min_body_bytes_per_second=1000)
    protocol, transport = fixture.connect()
    protocol.dataReceived(
        head("/api/large/a", "Content-Length: 500000", f"Authorization: Bearer {TOKEN}")
    )
    # 100 bytes a second: cut after the free first window and one more, with a 408.
    for _ in range(4):
        protocol.dataReceived(b"x" * 100)
        fixture.clock.advance(1)
    assert transport.disconnecting
    assert status_of(transport) == 408
    assert "slower than 1000 bytes a second" in str(body_of(transport))
    assert fixture.tokens.checks == 0
    assert fixture.uploads.bodies == []
    assert fixture.site.body_budget is not None
    assert fixture.site.body_budget.claimed == 0


def test_a_whole_request_must_arrive_within_the_request_timeout() -> None:
    fixture = Fixture(request_timeout_seconds=60.0, min_body_bytes_per_second=0)
    protocol, transport = fixture.connect()
    protocol.dataReceived(head("/api/large/a", "Content-Length: 1000", f"Authorization: Bearer {TOKEN}"))
    for _ in range(59):
        protocol.dataReceived(b"x")
        fixture.clock.advance(1)
    assert not transport.disconnecting
    fixture.clock.advance(1)
    assert transport.disconnecting
    assert status_of(transport) == 408
    assert fixture.uploads.bodies == []


def test_bodies_past_the_memory_budget_wait_and_the_ones_in_progress_finish() -> None:
    fixture = Fixture()
    budget = fixture.site.body_budget
    assert budget is not None and budget.limit == 64 * 1024 * 1024
    # 50 bodies of 1 MB announced fill the three quarters of the budget
    # bodies may claim; nothing of them is in memory yet.
    large = []
    for _ in range(50):
        protocol, transport = fixture.connect()
        protocol.dataReceived(
            head("/api/large/a", f"Content-Length: {LARGE}", f"Authorization: Bearer {TOKEN}")
        )
        large.append((protocol, transport))
    assert (budget.claimed, budget.buffered, budget.waiting) == (50 * LARGE, 0, 0)
    # One more, sent whole at once: it waits, what came with its headers
    # held (and counted), nothing of it given to the route.
    protocol, waiting = fixture.connect("192.0.2.99")
    protocol.dataReceived(
        head("/api/large/b", f"Content-Length: {LARGE}", f"Authorization: Bearer {TOKEN}")
        + b"y" * LARGE
    )
    assert (budget.waiting, budget.held) == (1, LARGE)
    assert waiting.value() == b""
    assert waiting.producerState == "paused"
    # One in progress finishes (all of them may): the waiting one goes in.
    first_protocol, first = large[0]
    first_protocol.dataReceived(b"x" * LARGE)
    assert status_of(first) == 200
    fixture.clock.advance(0)
    assert (status_of(waiting), body_of(waiting)) == (200, {"bytes": LARGE, "name": "b"})
    assert budget.peak_reserved <= budget.limit
    assert fixture.uploads.bodies == [LARGE, LARGE]
    assert fixture.tokens.checks == 2


def test_the_admin_budget_holds_twice_the_largest_body_of_any_route() -> None:
    from gateway.admin.platelist import MAX_CSV_BYTES
    from gateway.admin.settings import MIN_ADMIN_BODY_BUDGET

    assert MIN_ADMIN_BODY_BUDGET >= 2 * MAX_CSV_BYTES


class Forgetful:
    """A resource with a route that says nothing about who may use it."""

    app = admin_app()

    @app.route("/api/forgotten", methods=["GET"])
    def forgotten(self, request: IRequest) -> bytes:
        return b"anyone"


def test_a_route_without_a_declaration_is_not_mounted() -> None:
    fixture = Fixture()
    with pytest.raises(TypeError, match="/api/forgotten"):
        AdminRoot([fixture.uploads, Forgetful()], stream=fixture.root.stream)


class Copycat:
    """A resource routing a URL another resource routes."""

    app = admin_app()

    @open_route(app, "/api/open", methods=["GET"], reason="a test of two routes of one URL")
    def open_too(self, request: IRequest) -> bytes:
        return b""


def test_one_url_pattern_routed_by_two_resources_is_refused() -> None:
    fixture = Fixture()
    with pytest.raises(ValueError, match="/api/open is routed by both Uploads and Copycat"):
        AdminRoot([fixture.uploads, Copycat()], stream=fixture.root.stream)


def test_two_routes_of_one_name_are_refused() -> None:
    app = Klein()

    def handler(request: IRequest) -> bytes:
        return b""

    open_route(app, "/a", methods=["GET"], reason="test")(handler)
    with pytest.raises(ValueError, match="handler"):
        open_route(app, "/b", methods=["GET"], reason="test")(handler)


def test_the_site_is_an_admin_site() -> None:
    site = Fixture().site
    assert isinstance(site, AdminSite)
    assert not site.displayTracebacks
