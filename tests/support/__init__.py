"""Shared test helpers: the sample bodies, a running gateway on loopback, and a
blocking HTTP client run in a thread (the way a camera speaks: plain HTTP/1.1,
keep-alive, its own headers).

The modules of the package, for the unit tier (in memory): ``parts`` (the
camera-side parts wired on a Clock), ``camera`` (the camera server through
StubTreq and a StringTransport), ``admin`` (the admin API's test world),
``upstream`` and ``cloud`` (the cloud link and a stub cloud), ``store`` and
``threads`` (the store's records, an inline executor, work off the reactor run
at once), ``serial`` (pty boards and the ports' descriptors); for the e2e
tier: ``gateway`` (the service tree on loopback), ``simulator`` (simulated
cameras against it) and ``recording_server`` (a raw loopback HTTP server).
``FakeSystemd`` here is the receiving end of ``$NOTIFY_SOCKET``.
Test modules import helpers only from here, never from each other."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.threads import deferToThread
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from zope.interface import implementer

from gateway.config import parse_config
from gateway.store import Store
from gateway.tap import GatewayService, build_service
from support.threads import global_reactor

REPO = Path(__file__).resolve().parents[2]
SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def sample_bytes(name: str) -> bytes:
    """A sample body from the vendor manuals, as a camera would send it.

    The ``.jsonc`` samples carry ``//`` annotations that real cameras do not
    send; they are stripped here (outside strings only).
    """
    raw = (SAMPLES / name).read_bytes()
    if name.endswith(".jsonc"):
        text = raw.decode("utf-8")
        text = re.sub(r'("(?:[^"\\]|\\.)*")|//[^\n]*', lambda m: m.group(1) or "", text)
        raw = text.encode("utf-8")
    return raw


def sample_json(name: str) -> Any:
    return json.loads(sample_bytes(name))


def multipart_registration(
    serialno: str,
    *,
    boundary: str = "------------------------d74496d66958873e",
    password: str = "s3cret-pass",
) -> tuple[bytes, str]:
    """A Vzenith registration as curl builds it on the camera."""
    fields = [
        ("device_name", "IVS"),
        ("ipaddr", "192.168.1.100"),
        ("port", "80"),
        ("user_name", "admin"),
        ("pass_wd", password),
        ("serialno", serialno),
        ("channel_num", "1"),
    ]
    parts = []
    for name, value in fields:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        )
    body = ("".join(parts) + f"--{boundary}--\r\n").encode()
    return body, f"multipart/form-data; boundary={boundary}"


@attrs.define
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class CameraClient:
    """One camera's keep-alive HTTP connection (blocking; use from a thread)."""

    def __init__(self, port: int, *, tls: ssl.SSLContext | None = None, timeout: float = 10):
        if tls is not None:
            self.conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                "127.0.0.1", port, timeout=timeout, context=tls
            )
        else:
            self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        self.sockets: list[socket.socket] = []

    def post(
        self,
        body: bytes,
        *,
        path: str = "/devicemanagement/php/plateresult.php",
        content_type: str | None = "application/Json",
    ) -> Reply:
        headers = {"Content-Type": content_type} if content_type else {}
        self.conn.request("POST", path, body=body, headers=headers)
        response = self.conn.getresponse()
        data = response.read()
        if self.conn.sock is not None and self.conn.sock not in self.sockets:
            self.sockets.append(self.conn.sock)
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, data)

    def close(self) -> None:
        self.conn.close()


def in_thread(function: Any, *args: Any, **kwargs: Any) -> Deferred[Any]:
    return deferToThread(function, *args, **kwargs)


def loopback_config(**sections: Any) -> dict[str, Any]:
    """A configuration dict on ephemeral loopback ports."""
    data: dict[str, Any] = {
        "camera_server": {"listen": ["tcp:0:interface=127.0.0.1"]},
        "admin": {"listen": ["tcp:port=0:interface=127.0.0.1"]},
    }
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(name), dict):
            data[name] = {**data[name], **value}
        else:
            data[name] = value
    return data


@attrs.define
class RunningGateway:
    service: GatewayService
    camera_ports: list[int]
    admin_ports: list[int]

    @property
    def camera_port(self) -> int:
        return self.camera_ports[0]

    @property
    def admin_port(self) -> int:
        return self.admin_ports[0]

    @property
    def store(self) -> Store:
        """The gateway's store: open once the gateway has started."""
        store = self.service.store.store
        assert store is not None, "the gateway's store is not open"
        return store

    def stop(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        await self.service.stopService()


async def _start(
    data: dict[str, Any], state_dir: str, environ: dict[str, str] | None = None
) -> RunningGateway:
    data = {**data, "gateway": {**data.get("gateway", {}), "state_dir": state_dir}}
    config = parse_config(data, source="<test>")
    service = build_service(config, global_reactor, environ=environ)
    service.startService()
    await service.store.when_open()
    await service.plate_list.when_loaded()
    if service.admin is not None:
        # Until the accounts and sessions are read back, credentials get 503.
        for name in ("admin-accounts", "admin-sessions"):
            await service.getServiceNamed(name).when_loaded()
    camera_ports: list[int] = []
    admin_ports: list[int] = []
    for child in service:
        waiting = getattr(child, "_waitingForPort", None)
        if waiting is None:
            continue
        port = await waiting
        (camera_ports if child.name.startswith("camera-listener") else admin_ports).append(
            port.getHost().port
        )
    return RunningGateway(service, camera_ports, admin_ports)


def start_gateway(
    data: dict[str, Any], state_dir: str, environ: dict[str, str] | None = None
) -> Deferred[RunningGateway]:
    """Build and start the real service tree; fires once every port listens.
    ``environ`` is the process environment it sees (``$NOTIFY_SOCKET``)."""
    return ensureDeferred(_start(data, state_dir, environ))


@implementer(ILogObserver)
class CapturedLog:
    """Every log event emitted while it is installed."""

    def __init__(self) -> None:
        self.events: list[LogEvent] = []

    def __call__(self, event: LogEvent) -> None:
        self.events.append(event)

    def __enter__(self) -> CapturedLog:
        globalLogPublisher.addObserver(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        globalLogPublisher.removeObserver(self)

    def failures(self) -> list[LogEvent]:
        return [e for e in self.events if "log_failure" in e]

    def texts(self) -> Iterator[str]:
        from twisted.logger import formatEvent

        for event in self.events:
            yield formatEvent(event)


class FakeSystemd:
    """The receiving end of ``$NOTIFY_SOCKET``: a bound datagram socket."""

    def __init__(self, abstract: bool = False) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.directory: str | None = None
        if abstract:
            name = f"anpr-gateway-test-{os.getpid()}-{id(self)}"
            self.sock.bind("\0" + name)
            self.env_value = "@" + name
        else:
            # Short path: AF_UNIX names are limited to 107 bytes.
            self.directory = tempfile.mkdtemp(prefix="sdn")
            path = os.path.join(self.directory, "notify")
            self.sock.bind(path)
            self.env_value = path

    def messages(self) -> list[dict[str, str]]:
        """Every datagram received so far, parsed into KEY=value pairs."""
        received: list[dict[str, str]] = []
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return received
            fields = dict(line.split("=", 1) for line in data.decode().split("\n") if line)
            received.append(fields)

    def close(self) -> None:
        self.sock.close()
        if self.directory:
            shutil.rmtree(self.directory, ignore_errors=True)
