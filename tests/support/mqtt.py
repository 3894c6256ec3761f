"""MQTT for the tests: an in-memory broker session for the unit tier (the
link's one seam, :class:`gateway.mqtt.client.BrokerClient`), and for the e2e
tier a real Mosquitto started on a loopback port with a config file written
by the test, plus a subscriber that records what arrives."""

from __future__ import annotations

import base64
import getpass
import hashlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import trustme
from twisted.internet.defer import Deferred, succeed

from gateway.mqtt.client import BrokerEvents

MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None
)
NO_MOSQUITTO = "Mosquitto is not installed (apt-get install mosquitto); .ci/run installs it"


@attrs.define
class Sent:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    acked: Deferred[None]

    def json(self) -> Any:
        return json.loads(self.payload)


class MemoryBroker:
    """The broker session in memory: the test decides when a connection
    attempt succeeds, fails or drops, and when the broker acknowledges.

    ``auto_ack``: every QoS 1 message is acknowledged as it is published
    (while connected). Unacknowledged messages are "resent" on reconnect the
    way a kept session does: their Deferreds fire once acknowledged.
    """

    def __init__(self, settings: Any = None, will_topic: str = "", *, auto_ack: bool = True) -> None:
        self.will_topic = will_topic
        self.auto_ack = auto_ack
        self.events: BrokerEvents | None = None
        self.attempts = 0
        self.up = False
        self.sent: list[Sent] = []
        self.retained: dict[str, bytes] = {}
        self.subscriptions: list[str] = []
        self.disconnects = 0

    # BrokerClient

    def connect(self, events: BrokerEvents) -> None:
        self.events = events
        self.attempts += 1

    def publish(self, topic: str, payload: bytes, *, qos: int, retain: bool) -> Deferred[None]:
        sent = Sent(topic, payload, qos, retain, Deferred())
        self.sent.append(sent)
        if retain:
            if payload:
                self.retained[topic] = payload
            else:
                self.retained.pop(topic, None)
        if qos == 0:
            sent.acked.callback(None)
        elif (self.auto_ack or topic == self.will_topic) and self.up:
            sent.acked.callback(None)
        return sent.acked

    def subscribe(self, filters: Sequence[str], qos: int) -> None:
        self.subscriptions.extend(filters)

    def disconnect(self) -> Deferred[None]:
        self.up = False
        self.disconnects += 1
        return succeed(None)

    # the test's hand

    def accept(self) -> None:
        assert self.events is not None
        self.up = True
        self.events.connected(False)
        if self.auto_ack:
            self.ack_all()

    def fail(self, reason: str = "connection refused") -> None:
        assert self.events is not None
        self.events.lost(reason)

    def refuse(self, reason: str = "Not authorized", credentials: bool = True) -> None:
        assert self.events is not None
        self.events.refused(reason, credentials)

    def drop(self) -> None:
        assert self.events is not None
        self.up = False
        self.events.lost("connection lost")

    def ack_all(self) -> None:
        for sent in self.sent:
            if not sent.acked.called:
                sent.acked.callback(None)

    def deliver(self, topic: str, payload: bytes, *, retained: bool = False) -> None:
        assert self.events is not None
        self.events.message(topic, payload, retained)

    def answers(self) -> list[Any]:
        """The command results published on ``.../command_result``, in order."""
        return [
            sent.json()
            for sent in self.sent
            if sent.topic.endswith("/command_result") and "/events/" not in sent.topic
        ]

    def on(self, topic: str) -> list[Sent]:
        return [sent for sent in self.sent if sent.topic == topic]

    def events_published(self, kind: str = "plate") -> list[Any]:
        """The events published on ``.../events/<kind>``, in order."""
        return [sent.json() for sent in self.sent if sent.topic.endswith(f"/events/{kind}")]


# -- a real Mosquitto for the e2e tier -------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Mosquitto:
    """A Mosquitto on 127.0.0.1 with a config file of its own in
    ``directory``; :meth:`start` and :meth:`stop` may be called again (the
    same port), ``extra`` adds lines (TLS, password file, ACL)."""

    def __init__(self, directory: str, *, port: int | None = None, extra: Sequence[str] = (),
                 anonymous: bool = True, listener: Sequence[str] = ()) -> None:
        assert MOSQUITTO is not None
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.config = self.directory / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            *listener,
            f"allow_anonymous {'true' if anonymous else 'false'}",
            # Sessions survive a broker restart (saved on exit), so a test
            # subscriber misses nothing published while it reconnects.
            "persistence true",
            f"persistence_location {self.directory}/",
            "max_queued_messages 0",
            # Run as root, Mosquitto drops to its own user, which cannot
            # write in the test's private directory.
            f"user {getpass.getuser()}",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            *extra,
        ]
        self.config.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert self.process is None and MOSQUITTO is not None
        self.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.directory / "mosquitto.log", "ab"),
        )
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    "mosquitto exited: " + (self.directory / "mosquitto.log").read_text()
                )
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("mosquitto did not listen within 5 s")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


def password_file(path: Path, users: dict[str, str]) -> Path:
    """A Mosquitto password file (its PBKDF2-SHA512 ``$7$`` format, as
    ``mosquitto_passwd`` writes it) for ``users``: name -> password."""
    lines = []
    for number, (user, password) in enumerate(sorted(users.items())):
        salt = hashlib.sha256(f"salt-{number}-{user}".encode()).digest()[:12]
        digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 101)
        lines.append(
            f"{user}:$7$101${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path.resolve()


@attrs.frozen
class BrokerTls:
    """A trustme CA, the broker's certificate for 127.0.0.1 and a client
    certificate issued by the same CA, as files in ``directory``."""

    ca: str
    server_cert: str
    server_key: str
    client_cert: str  # certificate and key in one file
    ca_object: trustme.CA

    @classmethod
    def create(cls, directory: Path) -> BrokerTls:
        directory.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA()
        server = ca.issue_cert("127.0.0.1")
        client = ca.issue_cert("site-7.gateway.test")
        paths = {name: str(directory / f"{name}.pem") for name in ("ca", "server", "key", "client")}
        ca.cert_pem.write_to_path(paths["ca"])
        for blob in server.cert_chain_pems:
            blob.write_to_path(paths["server"], append=True)
        server.private_key_pem.write_to_path(paths["key"])
        client.private_key_and_cert_chain_pem.write_to_path(paths["client"])
        return cls(paths["ca"], paths["server"], paths["key"], paths["client"], ca)

    def listener(self, *, require_certificate: bool) -> list[str]:
        """The Mosquitto listener lines for TLS with these files."""
        return [
            f"cafile {self.ca}",
            f"certfile {self.server_cert}",
            f"keyfile {self.server_key}",
            f"require_certificate {'true' if require_certificate else 'false'}",
        ]

    def client_context(self) -> ssl.SSLContext:
        """A client's TLS context: trusts the CA, presents the client certificate."""
        context = ssl.create_default_context(cafile=self.ca)
        context.load_cert_chain(self.client_cert)
        return context


class Subscriber:
    """A paho client in its own thread recording every message on ``filters``."""

    def __init__(self, port: int, filters: Sequence[str], *, tls: Any = None,
                 username: str | None = None, password: str | None = None,
                 session: str | None = None) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        # With ``session``: a kept session (queued for while it is away) that
        # reconnects by itself.
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=session or f"test-{free_port()}",
            clean_session=session is None,
        )
        client.reconnect_delay_set(1, 1)
        if tls is not None:
            client.tls_set_context(tls)
        if username is not None:
            client.username_pw_set(username, password)

        def on_connect(c: Any, u: Any, flags: Any, reason: Any, props: Any) -> None:
            c.subscribe([(f, 1) for f in filters])

        def on_subscribe(c: Any, u: Any, mid: Any, reasons: Any, props: Any) -> None:
            self._subscribed.set()

        def on_message(c: Any, u: Any, message: Any) -> None:
            with self._lock:
                self.messages.append((message.topic, bytes(message.payload), bool(message.retain)))

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_message = on_message
        client.connect("127.0.0.1", port)
        client.loop_start()
        self.client = client
        if not self._subscribed.wait(5):
            raise RuntimeError("the test subscriber could not subscribe")

    def on(self, topic: str) -> list[bytes]:
        with self._lock:
            return [payload for t, payload, _ in self.messages if t == topic]

    def matching(self, part: str) -> list[tuple[str, bytes, bool]]:
        with self._lock:
            return [m for m in self.messages if part in m[0]]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
