"""Slow and unfinished requests over real sockets, from many loopback
addresses, while a simulated camera keeps pushing plates: trickled bodies
are cut and their connections taken back, unfinished large bodies cost no
more than the body budget, idle connections to the admin page cannot take
the camera port's file descriptors, and every plate is answered within the
camera's own timeout.

The same logic, step by step on a Clock, is in test_request_budgets."""

from __future__ import annotations

import errno
import socket
import threading
import time
from io import BytesIO
from typing import Any

import pytest
from twisted.internet import reactor
from twisted.internet.task import LoopingCall, deferLater

from gateway.camera.http import BoundedSite, ConnectionLimits, MappedBody
from gateway.simulator.camera import SimulatedCamera
from gateway.simulator.config import CameraConfig
from gateway.store import EventType
from support import in_thread, loopback_config
from support.gateway import GatewayTestCase, plate_body

pytestmark = pytest.mark.e2e

CAMERA = "d85b1269-8f942256"
LANES = [{"name": "Entrance", "camera": CAMERA, "unknown_plate": "allow", "sync_whitelist": False}]
#: The hostile hosts: 127.0.0.2 to 127.0.0.41 (the camera is 127.0.0.1).
HOSTS = [f"127.0.0.{n}" for n in range(2, 42)]


def push_head(length: int, path: bytes = b"/") -> bytes:
    return (
        b"POST " + path + b" HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/Json\r\n"
        b"Content-Length: %d\r\n\r\n" % length
    )


class Pile:
    """Connections from many addresses, each sending ``first`` and then one
    byte every ``interval`` seconds, reopened when the gateway closes them,
    for ``seconds`` (in a thread of its own)."""

    def __init__(
        self, port: int, hosts: list[str], per_host: int, first: bytes, interval: float
    ) -> None:
        self.port = port
        self.slots = [host for host in hosts for _ in range(per_host)]
        self.first = first
        self.interval = interval
        self.opened = 0
        self.closed_by_gateway = 0
        self.most_open = 0
        self._stop = threading.Event()
        self._sockets: dict[int, socket.socket] = {}
        self._unsent: dict[int, bytes] = {}

    def _open(self, slot: int) -> None:
        # Connected without blocking: a loaded gateway's full accept queue
        # must not stall the whole pile.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.bind((self.slots[slot], 0))
            error = sock.connect_ex(("127.0.0.1", self.port))
        except OSError:
            sock.close()
            return
        if error not in (0, errno.EINPROGRESS):
            sock.close()
            return
        self._sockets[slot] = sock
        self._unsent[slot] = self.first
        self.opened += 1

    def _still_open(self, slot: int, sock: socket.socket) -> bool:
        try:
            unsent = self._unsent.get(slot, b"")
            if unsent:
                self._unsent[slot] = unsent[sock.send(unsent) :]
            elif self.interval:
                sock.send(b"x")
            return sock.recv(65536) != b""
        except BlockingIOError:
            return True
        except OSError:
            return False

    def run(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline and not self._stop.is_set():
                for slot in range(len(self.slots)):
                    sock = self._sockets.get(slot)
                    if sock is None:
                        self._open(slot)
                    elif not self._still_open(slot, sock):
                        sock.close()
                        del self._sockets[slot]
                        self.closed_by_gateway += 1
                self.most_open = max(self.most_open, len(self._sockets))
                self._stop.wait(self.interval or 0.25)
        finally:
            for sock in self._sockets.values():
                sock.close()
            self._sockets.clear()

    def stop(self) -> None:
        self._stop.set()


class SlowBodiesTests(GatewayTestCase):
    config = loopback_config(
        camera_server={
            "max_connections": 300,
            "max_connections_per_address": 12,
            "header_timeout_seconds": 2,
            "request_timeout_seconds": 4,
        },
        lane=LANES,
    )

    def camera(self, plates: int, rate: float) -> SimulatedCamera:
        camera = SimulatedCamera(
            reactor,
            CameraConfig(
                serialno=CAMERA,
                servers=(f"http://127.0.0.1:{self.gateway.camera_port}",),
                plates=plates,
                rate=rate,
                seed=18,
            ),
        )
        camera.start()
        self.addCleanup(camera.stop)
        return camera

    async def until_closed(self, limits: ConnectionLimits, most: int = 1) -> None:
        """Wait (bounded) until the gateway has seen the pile's connections go."""
        for _ in range(250):
            if limits.open_connections <= most:
                return
            await deferLater(reactor, 0.02, lambda: None)
        self.fail(f"{limits.open_connections} connections still open")

    def camera_site(self) -> tuple[ConnectionLimits, BoundedSite]:
        (listener,) = [
            one for one in self.gateway.service.listeners if one.key.startswith("camera_server")
        ]
        limits = listener.factory
        assert isinstance(limits, ConnectionLimits)
        site = limits.wrappedFactory
        assert isinstance(site, BoundedSite)
        return limits, site

    async def test_trickled_bodies_from_40_addresses_while_a_camera_pushes(self) -> None:
        await self.start()
        limits, site = self.camera_site()
        # 40 hosts x 12 connections, more than the 300 the port takes, each
        # announcing a 1 MB plate push and trickling it 4 bytes a second.
        pile = Pile(self.gateway.camera_port, HOSTS, 12, push_head(1_000_000), 0.25)
        attack = in_thread(pile.run, 14.0)
        await deferLater(reactor, 2.0, lambda: None)
        camera = self.camera(plates=20, rate=2.0)
        try:
            await camera.when_done()
        finally:
            pile.stop()
            await attack
        # Every plate answered, none in more than the camera's 5 s.
        self.assertEqual(camera.failures["plate"], 0, camera.last_failure)
        self.assertEqual(camera.replies["plate"], 20)
        plates = await self.gateway.store.recent_events(limit=100, type=EventType.PLATE)
        self.assertEqual(len(plates), 20)
        # The pile held the port, and the gateway kept taking it back: bodies
        # cut for their rate or their deadline (most waited for memory first:
        # 48 of their 1 MB fit in the budget's body part), places given to
        # newcomers.
        self.assertGreater(pile.most_open, 250, "the pile never held the port")
        self.assertGreater(pile.closed_by_gateway, 500)
        self.assertGreater(site.cuts["rate"] + site.cuts["request"], 100)
        await self.until_closed(limits)

    async def test_unfinished_large_bodies_cost_no_more_than_the_budget(self) -> None:
        await self.start(
            loopback_config(
                camera_server={
                    "max_body_bytes": 1_048_576,
                    "body_memory_budget_bytes": 4_194_304,
                    "header_timeout_seconds": 2,
                    "request_timeout_seconds": 3,
                },
                lane=LANES,
            )
        )
        limits, site = self.camera_site()
        budget = site.body_budget
        assert budget is not None
        port = self.gateway.camera_port

        def in_memory() -> int:
            """What the port's connections hold, counted from the requests
            themselves: their bodies and what their connections read ahead."""
            total = 0
            for wrapper in list(limits.protocols):
                channel = wrapper.wrappedProtocol
                total += len(getattr(channel, "_buffer", b""))
                for request in list(getattr(channel, "requests", [])):
                    if isinstance(request.content, MappedBody):
                        total += request.content.written
                    elif isinstance(request.content, BytesIO):
                        with request.content.getbuffer() as view:
                            total += view.nbytes
            return total

        peak = [0]
        sampler = LoopingCall(lambda: peak.__setitem__(0, max(peak[0], in_memory())))
        sampler.start(0.02)
        self.addCleanup(lambda: sampler.stop() if sampler.running else None)
        # 32 connections from each of two hosts, each sending all of a 1 MB
        # body but its last byte, as fast as the gateway reads.
        body = b"x" * (1_048_576 - 1)

        def unfinished(host: str) -> list[socket.socket]:
            sockets = []
            for _ in range(32):
                sock = socket.socket()
                sock.bind((host, 0))
                sock.settimeout(5)
                sock.connect(("127.0.0.1", port))
                sock.sendall(push_head(1_048_576))
                sock.setblocking(False)
                sockets.append(sock)
            sent = dict.fromkeys(sockets, 0)
            until = time.monotonic() + 2.0
            while time.monotonic() < until:
                for sock in sockets:
                    if sent[sock] < len(body):
                        try:
                            sent[sock] += sock.send(body[sent[sock] : sent[sock] + 262_144])
                        except OSError:
                            pass
                time.sleep(0.01)
            return sockets

        piles = await in_thread(lambda: [unfinished("127.0.0.2"), unfinished("127.0.0.3")])
        # A camera's push still goes through (once the unfinished ones are cut).
        client = self.client(timeout=10)
        reply = await in_thread(client.post, plate_body(CAMERA, "京A12345", plateid=7))
        self.assertEqual(reply.status, 200)
        sampler.stop()
        client.close()
        for pile in piles:
            for sock in pile:
                sock.close()
        await self.until_closed(limits, most=0)
        self.assertGreater(peak[0], 2_000_000, "the bodies were never read")
        self.assertLessEqual(peak[0], budget.limit)
        self.assertLessEqual(budget.peak_reserved, budget.limit)
        self.assertGreater(budget.waited, 10)


class AdminIdleTests(GatewayTestCase):
    config = loopback_config(
        admin={"header_timeout_seconds": 2, "max_connections": 64, "max_connections_per_address": 8},
        lane=LANES,
    )

    async def test_idle_admin_connections_while_a_camera_is_served(self) -> None:
        await self.start()
        admin_port = self.gateway.admin_port
        # 40 hosts x 8 idle connections to the page, reopened when closed.
        pile = Pile(admin_port, HOSTS, 8, b"", 0.0)
        attack = in_thread(pile.run, 8.0)
        await deferLater(reactor, 1.0, lambda: None)
        camera = SimulatedCamera(
            reactor,
            CameraConfig(
                serialno=CAMERA,
                servers=(f"http://127.0.0.1:{self.gateway.camera_port}",),
                plates=10,
                rate=2.0,
                seed=19,
            ),
        )
        camera.start()
        self.addCleanup(camera.stop)
        try:
            await camera.when_done()
        finally:
            pile.stop()
            await attack
        (listener,) = [one for one in self.gateway.service.listeners if one.key.startswith("admin")]
        limits: Any = listener.factory
        self.assertLessEqual(limits.open_connections, 64)
        for _ in range(250):
            if limits.open_connections == 0:
                break
            await deferLater(reactor, 0.02, lambda: None)
        self.assertGreater(pile.closed_by_gateway, 100)
        self.assertGreater(limits.wrappedFactory.cuts["headers"], 40)
        self.assertEqual(camera.failures["plate"], 0, camera.last_failure)
        self.assertEqual(camera.replies["plate"], 10)
