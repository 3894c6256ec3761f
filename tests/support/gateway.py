"""The gateway's service tree on loopback for the tests that speak to it
the way cameras speak: the plate body they push, a TLS listener with a
certificate made for the test, the test case that starts the gateway, and a
raw socket exchange for what no HTTP client sends."""

from __future__ import annotations

import json
import os
import socket
import ssl
from typing import Any

import trustme
from twisted.trial.unittest import TestCase

from support import CameraClient, RunningGateway, loopback_config, start_gateway

__all__ = [
    "GatewayTestCase",
    "plate_body",
    "raw_exchange",
    "tls_context",
    "tls_listener",
]


def plate_body(serialno: str, license: str, **fields: Any) -> bytes:
    result = {"license": license, "triggerType": 1, **fields}
    body = {
        "AlarmInfoPlate": {
            "serialno": serialno,
            "deviceName": "IVS",
            "ipaddr": "192.168.1.100",
            "channel": 0,
            "result": {"PlateResult": result},
        }
    }
    return json.dumps(body, indent=4, ensure_ascii=False).encode()


_CA = trustme.CA()
_CERT = _CA.issue_cert("127.0.0.1", "gateway.local")


def tls_listener(directory: str) -> str:
    """An ``ssl:`` endpoint string with a certificate made for the test."""
    os.makedirs(directory, exist_ok=True)
    key_path = os.path.join(directory, "site.key")
    cert_path = os.path.join(directory, "site.crt")
    _CERT.private_key_pem.write_to_path(key_path)
    _CERT.cert_chain_pems[0].write_to_path(cert_path)
    return f"ssl:0:interface=127.0.0.1:privateKey={key_path}:certKey={cert_path}"


def tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    _CA.configure_trust(context)
    return context


class GatewayTestCase(TestCase):
    """Starts a gateway with ``config`` before each test; with ``tls``, the
    camera clients speak HTTPS to an ``ssl:`` listener."""

    config: dict[str, Any] = loopback_config()
    tls = False

    async def start(self, config: dict[str, Any] | None = None) -> RunningGateway:
        config = config or self.config
        if self.tls:
            server = dict(config.get("camera_server", {}))
            server["listen"] = [tls_listener(self.mktemp())]
            config = {**config, "camera_server": server}
        gateway = await start_gateway(config, self.mktemp())
        self.addCleanup(gateway.stop)
        self.gateway = gateway
        return gateway

    def client(self, **kwargs: Any) -> CameraClient:
        if self.tls:
            kwargs.setdefault("tls", tls_context())
        client = CameraClient(self.gateway.camera_port, **kwargs)
        self.addCleanup(client.close)
        return client

    def assert_strict_reply(self, body: bytes) -> dict[str, Any]:
        """What the firmware accepts: one compact UTF-8 JSON object."""
        self.assertFalse(body.startswith(b"\xef\xbb\xbf"))
        decoder = json.JSONDecoder()
        value, end = decoder.raw_decode(body.decode("utf-8"))
        self.assertEqual(end, len(body.decode("utf-8")), "one JSON value and nothing after it")
        self.assertIsInstance(value, dict)
        self.assertNotIn(b"\n", body)
        self.assertNotIn(b", ", body)
        return value


def raw_exchange(port: int, request: bytes, *, read_timeout: float = 5.0) -> bytes:
    """Send raw bytes, return whatever comes back until close or timeout."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=read_timeout)
    try:
        sock.sendall(request)
        chunks = []
        while True:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            chunks.append(data)
            if b"\r\n\r\n" in b"".join(chunks) and b"Connection: close" not in b"".join(chunks):
                head, _, rest = b"".join(chunks).partition(b"\r\n\r\n")
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        if len(rest) >= int(line.split(b":")[1]):
                            return b"".join(chunks)
        return b"".join(chunks)
    finally:
        sock.close()
