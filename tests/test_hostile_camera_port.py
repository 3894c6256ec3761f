"""Hostile input on the camera port: thousands of malformed pushes, idle and
slow connections, floods from one address, and cameras the site does not
accept. Nothing of it produces a 500 or a traceback, stops service to real
cameras, or decides a barrier."""

from __future__ import annotations

import http.client
import json
import random
import resource
import socket
import time
from typing import Any

import pytest
from twisted.internet import reactor
from twisted.internet.task import deferLater

from gateway.store import EventType
from support import (
    CapturedLog,
    in_thread,
    loopback_config,
    multipart_registration,
    sample_bytes,
)
from support.gateway import GatewayTestCase, plate_body

pytestmark = pytest.mark.e2e

CAMERA = "d85b1269-8f942256"
SAMPLES = [
    "plate_parkingcam_alphadigi_manual_v1.2.json",
    "plate_vzenith_manual_offline_record.jsonc",
    "plate_vzenith_nolicense_doc_2015.json",
    "gio_push_vzenith_manual.json",
    "serial_push_vzenith_manual.json",
    "triggerimage_push_vzenith_manual.json",
    "heartbeat_parkingcam_alphadigi_manual_v1.2.json",
]


def mutations(rng: random.Random, count: int) -> list[tuple[bytes, str | None]]:
    """A corpus built from the samples: bytes flipped, cut, repeated, spliced,
    values replaced, encodings and content types mixed up."""
    corpus = [sample_bytes(name) for name in SAMPLES]
    registration, multipart_type = multipart_registration(CAMERA)
    corpus.append(registration)
    weird_values: list[Any] = [None, -1, 2**70, "x" * 300, [], {}, True, "\u0000", 1e308]
    bodies: list[tuple[bytes, str | None]] = []
    for _ in range(count):
        body = bytearray(rng.choice(corpus))
        content_type: str | None = rng.choice(
            ["application/Json", "application/json", None, multipart_type, "text/plain",
             "multipart/form-data; boundary=", "multipart/form-data"]
        )
        operation = rng.randrange(7)
        if operation == 0 and body:
            for _ in range(rng.randint(1, 8)):
                body[rng.randrange(len(body))] = rng.randrange(256)
        elif operation == 1:
            body = body[: rng.randrange(len(body) + 1)]
        elif operation == 2:
            body = body * rng.randint(2, 4)
        elif operation == 3:
            other = rng.choice(corpus)
            cut = rng.randrange(len(body) + 1)
            body = body[:cut] + other[rng.randrange(len(other) + 1):]
        elif operation == 4:
            try:
                document = json.loads(bytes(body))
            except ValueError:
                document = None
            if isinstance(document, dict):
                top = next(iter(document))
                inner = document[top]
                if isinstance(inner, dict) and inner:
                    inner[rng.choice(list(inner))] = rng.choice(weird_values)
                body = bytearray(json.dumps(document, default=str).encode())
        elif operation == 5:
            body = bytearray(bytes(body).decode("utf-8", "replace").encode("gb18030", "replace"))
        else:
            body = bytearray(rng.randbytes(rng.randrange(2000)))
        bodies.append((bytes(body), content_type))
    return bodies


def rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


class FuzzTests(GatewayTestCase):
    # Valid registrations in the corpus would be held as comet polls: this
    # lane's camera is on common heartbeat, answered at once.
    config = loopback_config(
        lane=[{"name": "Entrance", "camera": CAMERA, "sync_whitelist": False,
               "heartbeat": "common"}],
    )

    async def test_thousands_of_malformed_pushes(self) -> None:
        await self.start()
        rng = random.Random(20261124)
        bodies = mutations(rng, 3000)
        client = self.client()

        def send_all() -> dict[int, int]:
            statuses: dict[int, int] = {}
            for body, content_type in bodies:
                try:
                    reply = client.post(body, content_type=content_type)
                except (ConnectionError, OSError):
                    client.close()
                    continue
                statuses[reply.status] = statuses.get(reply.status, 0) + 1
                if reply.status == 200:
                    json.loads(reply.body)
            return statuses

        before = rss_kib()
        with CapturedLog() as captured:
            statuses = await in_thread(send_all)
        self.assertLessEqual(set(statuses), {200, 400, 413})
        self.assertGreater(statuses.get(400, 0), 100)
        self.assertEqual(captured.failures(), [])
        # Peak memory of the process stays near where it was (no growth per body).
        self.assertLess(rss_kib() - before, 200_000)
        reply = await in_thread(self.client().post, plate_body(CAMERA, "京A12345", plateid=1))
        self.assertEqual(reply.status, 200)


class ConnectionTests(GatewayTestCase):
    config = loopback_config(
        camera_server={
            "max_connections_per_address": 8,
            "header_timeout_seconds": 1,
        },
        lane=[{"name": "Entrance", "camera": CAMERA, "unknown_plate": "allow",
               "sync_whitelist": False}],
    )

    async def test_idle_pile_from_one_address_does_not_stop_a_camera(self) -> None:
        await self.start()
        port = self.gateway.camera_port

        def pile() -> list[socket.socket]:
            sockets = []
            for _ in range(200):
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                sockets.append(sock)
            return sockets

        sockets = await in_thread(pile)
        self.addCleanup(lambda: [sock.close() for sock in sockets])

        def closed(sock: socket.socket) -> bool:
            sock.settimeout(2)
            try:
                return sock.recv(1) == b""
            except (TimeoutError, OSError) as error:
                return not isinstance(error, socket.timeout)

        # The ones over the limit are closed at once; the first 8 are kept.
        outcomes = await in_thread(lambda: [closed(sock) for sock in sockets[8:20]])
        self.assertTrue(all(outcomes))

        def camera_from_another_address() -> int:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=("127.0.0.2", 0))
            body = plate_body(CAMERA, "京A12345", plateid=2)
            sock.sendall(
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/Json\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body) + body
            )
            head = sock.recv(65536)
            sock.close()
            return int(head.split(b" ")[1])

        self.assertEqual(await in_thread(camera_from_another_address), 200)

    async def test_headers_that_trickle_in_get_the_connection_closed(self) -> None:
        await self.start()
        port = self.gateway.camera_port

        def slow_loris() -> float:
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            started = time.monotonic()
            sock.sendall(b"POST / HTTP/1.1\r\n")
            try:
                for _ in range(40):
                    sock.sendall(b"X-Slow: 1\r\n")
                    time.sleep(0.1)
                return -1.0  # still open after 4 s
            except OSError:
                return time.monotonic() - started
            finally:
                sock.close()

        with CapturedLog() as captured:
            outcome = await in_thread(slow_loris)
        self.assertGreater(outcome, 0, "the trickling connection was never closed")
        self.assertTrue(any("took too long" in text for text in captured.texts()))
        reply = await in_thread(self.client().post, plate_body(CAMERA, "京A12345", plateid=3))
        self.assertEqual(reply.status, 200)


class IdentityTests(GatewayTestCase):
    config = loopback_config(
        camera_server={"allowed_cameras": [CAMERA], "allowed_networks": ["127.0.0.0/30"]},
        lane=[{"name": "Entrance", "camera": CAMERA, "unknown_plate": "allow",
               "sync_whitelist": False}],
        policy={"unknown_plate": "allow"},
    )

    async def test_other_cameras_are_recorded_as_rejected_and_never_open(self) -> None:
        await self.start()
        client = self.client()
        stranger = await in_thread(client.post, plate_body("ffffffff-00000001", "京A12345", plateid=5))
        answer = stranger.json()["Response_AlarmInfoPlate"]
        self.assertEqual((answer["info"], answer["plateid"]), ("no", 5))
        allowed = await in_thread(client.post, plate_body(CAMERA, "京A12345", plateid=6))
        self.assertEqual(allowed.json()["Response_AlarmInfoPlate"]["info"], "ok")
        store = self.gateway.store
        events = await store.recent_events(limit=10, type=EventType.PLATE)
        reasons = {e.camera: e.decision_reason for e in events}
        self.assertEqual(reasons["ffffffff-00000001"], "camera_not_allowed")
        self.assertIsNone(self.gateway.service.registry.get("ffffffff-00000001"))
        # A registration from a stranger is not held and gets no command.
        body, content_type = multipart_registration("ffffffff-00000001")
        reply = await in_thread(client.post, body, content_type=content_type)
        self.assertEqual(reply.json(), {"Response_AlarmInfoPlate": {"info": "no"}})

    async def test_addresses_outside_the_allowed_networks_are_rejected(self) -> None:
        await self.start()
        port = self.gateway.camera_port

        def push_from(address: str) -> dict[str, Any]:
            connection = http.client.HTTPConnection(
                "127.0.0.1", port, timeout=5, source_address=(address, 0)
            )
            body = plate_body(CAMERA, "京A12345", plateid=7 if address.endswith(".1") else 8)
            connection.request("POST", "/", body=body, headers={"Content-Type": "application/Json"})
            result: dict[str, Any] = json.loads(connection.getresponse().read())
            connection.close()
            return result

        inside = await in_thread(push_from, "127.0.0.1")
        outside = await in_thread(push_from, "127.0.0.9")
        self.assertEqual(inside["Response_AlarmInfoPlate"]["info"], "ok")
        self.assertEqual(outside["Response_AlarmInfoPlate"]["info"], "no")
        await deferLater(reactor, 0, lambda: None)
