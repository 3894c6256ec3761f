"""Requests leave the simulated camera exactly as a camera's firmware sends them."""

from __future__ import annotations

import json
import re
import socket
from typing import Any

import attrs
import pytest
from twisted.internet import reactor as global_reactor
from twisted.trial import unittest

from gateway.simulator.camera import SimulatedCamera
from gateway.simulator.config import CameraConfig, fleet_configs
from gateway.simulator.http import CameraHttpClient, TransportFailure
from support.recording_server import RecordingServer, echo_reply, wait_for

pytestmark = pytest.mark.e2e

reactor: Any = global_reactor


def can_bind(address: str) -> bool:
    probe = socket.socket()
    try:
        probe.bind((address, 0))
        return True
    except OSError:
        return False
    finally:
        probe.close()


class RequestFormatTests(unittest.TestCase):
    timeout = 20

    def setUp(self) -> None:
        self.server = RecordingServer(echo_reply)
        self.url = self.server.listen(reactor)
        self.addCleanup(self.server.close)

    def camera(self, **settings: Any) -> SimulatedCamera:
        config = CameraConfig(serialno="d85b1269-8f942256", servers=(self.url,), **settings)
        camera = SimulatedCamera(reactor, config)
        self.addCleanup(camera.stop)
        camera.start()
        return camera

    async def test_json_push_headers_and_body(self) -> None:
        camera = self.camera(plates=1, io_events=1, serial_in=(b"hi",), rate=20)
        await wait_for(reactor, lambda: camera.drained)
        self.assertEqual(
            {request.kind for request in self.server.requests},
            {"AlarmInfoPlate", "AlarmGioIn", "SerialData"},
        )
        for request in self.server.requests:
            self.assertEqual(request.method, "POST")
            names = [name.lower() for name, _ in request.headers]
            self.assertEqual(request.header("Content-Type"), "application/Json")
            self.assertNotIn("expect", names)
            self.assertNotIn("user-agent", names)
            self.assertNotIn("transfer-encoding", names)
            self.assertNotIn("connection", names)  # HTTP/1.1 keep-alive, nothing said
            self.assertEqual(int(request.header("Content-Length") or -1), len(request.body))
            expected = json.dumps(request.json(), indent=4, sort_keys=True, ensure_ascii=False)
            self.assertEqual(request.body.decode("utf-8"), expected)
        paths = {request.kind: request.path for request in self.server.requests}
        self.assertEqual(paths["AlarmInfoPlate"], "/devicemanagement/php/plateresult.php")
        self.assertEqual(paths["AlarmGioIn"], "/devicemanagement/php/gio.php")
        self.assertEqual(paths["SerialData"], "/devicemanagement/php/serial.php")

    async def test_requests_share_one_kept_alive_connection(self) -> None:
        camera = self.camera(plates=4, rate=50)
        await wait_for(reactor, lambda: camera.drained)
        plates = self.server.of_kind("AlarmInfoPlate")
        self.assertEqual(len(plates), 4)
        self.assertEqual({request.connection for request in plates}, {plates[0].connection})
        self.assertEqual(
            [
                request.json()["AlarmInfoPlate"]["result"]["PlateResult"]["plateid"]
                for request in plates
            ],
            [1, 2, 3, 4],
        )

    async def test_registration_form_curl_boundary(self) -> None:
        await self.check_registration("curl", r"-{24}[0-9a-f]{16}")

    async def test_registration_form_long_boundary(self) -> None:
        await self.check_registration("long", r"-{28}[0-9a-f]{12}")

    async def check_registration(self, style: str, pattern: str) -> None:
        camera = self.camera(
            heartbeat="common", heartbeat_interval=0.05, boundary_style=style, web_port=8080
        )
        await wait_for(reactor, lambda: len(self.server.of_kind("registration")) >= 2)
        await camera.stop()
        first, second = self.server.of_kind("registration")[:2]
        content_type = first.header("Content-Type") or ""
        match = re.fullmatch(f"multipart/form-data; boundary=({pattern})", content_type)
        self.assertIsNotNone(match, content_type)
        assert match is not None
        boundary = match.group(1)
        self.assertNotIn("expect", [name.lower() for name, _ in first.headers])
        self.assertNotIn("user-agent", [name.lower() for name, _ in first.headers])
        names = re.findall(rb'name="([a-z_]+)"\r\n\r\n', first.body)
        self.assertEqual(
            names,
            [
                b"device_name",
                b"ipaddr",
                b"port",
                b"user_name",
                b"pass_wd",
                b"serialno",
                b"channel_num",
            ],
        )
        self.assertTrue(first.body.startswith(f"--{boundary}\r\n".encode()))
        self.assertTrue(first.body.endswith(f"--{boundary}--\r\n".encode()))
        self.assertIn(b'name="port"\r\n\r\n8080\r\n', first.body)
        self.assertIn(b'name="serialno"\r\n\r\nd85b1269-8f942256\r\n', first.body)
        # A fresh boundary per request, as curl makes one.
        self.assertNotEqual(first.header("Content-Type"), second.header("Content-Type"))

    async def test_timeout_is_a_transport_failure(self) -> None:
        from twisted.internet.defer import Deferred

        held: list[Deferred[Any]] = []

        def never(request: Any) -> Deferred[Any]:
            held.append(Deferred())
            return held[-1]

        self.server.responder = never
        client = CameraHttpClient(reactor)
        self.addCleanup(client.close)
        with self.assertRaises(TransportFailure) as raised:
            await client.post(self.url + "/x", b"{}", "application/Json", timeout=0.2)
        self.assertIn("no reply within", str(raised.exception))


class SourceAddressTests(unittest.TestCase):
    timeout = 20

    async def test_each_camera_has_its_own_loopback_address(self) -> None:
        if not can_bind("127.0.0.21"):
            raise unittest.SkipTest("this system cannot bind 127.0.0.x source addresses")
        server = RecordingServer(echo_reply)
        url = server.listen(reactor)
        self.addCleanup(server.close)
        template = CameraConfig(serialno="-", servers=(url,), plates=1, rate=20)
        configs = fleet_configs(3, template, bind_base="127.0.0.21")
        cameras = [SimulatedCamera(reactor, config) for config in configs]
        for camera in cameras:
            self.addCleanup(camera.stop)
            camera.start()
        await wait_for(reactor, lambda: all(camera.drained for camera in cameras))
        peers = {request.peer for request in server.requests}
        self.assertEqual(peers, {"127.0.0.21", "127.0.0.22", "127.0.0.23"})
        for request in server.requests:
            self.assertEqual(request.json()["AlarmInfoPlate"]["ipaddr"], request.peer)
        self.assertEqual(
            len({request.json()["AlarmInfoPlate"]["serialno"] for request in server.requests}), 3
        )

    def test_no_binding_for_servers_off_loopback(self) -> None:
        template = CameraConfig(serialno="-", servers=("http://192.0.2.1:8080",))
        (config,) = fleet_configs(1, template)
        self.assertIsNone(config.bind_address)
        self.assertEqual(config.ipaddr, "192.168.1.100")
        self.assertEqual(attrs.evolve(config).serialno, config.serialno)
        self.assertRegex(config.serialno, r"^[0-9a-f]{8}-[0-9a-f]{8}$")
        (parking,) = fleet_configs(1, attrs.evolve(template, dialect="parkingcam"))
        self.assertRegex(parking.serialno, r"^[A-Z0-9]{16}$")


class TlsTests(unittest.TestCase):
    timeout = 20

    def setUp(self) -> None:
        import trustme
        from OpenSSL import SSL
        from twisted.internet.interfaces import IOpenSSLContextFactory
        from zope.interface import implementer

        self.ca = trustme.CA()
        certificate = self.ca.issue_cert("127.0.0.1")
        key_path, chain_path = self.mktemp(), self.mktemp()
        certificate.private_key_pem.write_to_path(key_path)
        certificate.cert_chain_pems[0].write_to_path(chain_path)
        context = SSL.Context(SSL.TLS_METHOD)
        context.use_privatekey_file(key_path)
        context.use_certificate_chain_file(chain_path)

        @implementer(IOpenSSLContextFactory)
        class ServerTLS:
            def getContext(self) -> SSL.Context:
                return context

        self.server = RecordingServer(echo_reply)
        self.url = self.server.listen_tls(reactor, ServerTLS())
        self.addCleanup(self.server.close)

    async def push(self, tls_ca: bytes | None) -> SimulatedCamera:
        camera = SimulatedCamera(
            reactor,
            CameraConfig(
                serialno="d85b1269-8f942256", servers=(self.url,), plates=1, tls_ca=tls_ca
            ),
        )
        self.addCleanup(camera.stop)
        camera.start()
        await wait_for(reactor, lambda: camera.drained)
        return camera

    async def test_anonymous_https(self) -> None:
        camera = await self.push(None)
        self.assertEqual(camera.replies["plate"], 1)
        self.assertEqual(len(self.server.of_kind("AlarmInfoPlate")), 1)

    async def test_certificate_checked_against_the_configured_ca(self) -> None:
        camera = await self.push(self.ca.cert_pem.bytes())
        self.assertEqual(camera.replies["plate"], 1)

    async def test_untrusted_certificate_is_a_transport_failure(self) -> None:
        import trustme

        camera = await self.push(trustme.CA().cert_pem.bytes())
        self.assertEqual(camera.failures["plate"], 1)
        self.assertEqual(self.server.requests, [])
