"""The broker session over paho-mqtt, driven by the reactor.

paho-mqtt is used through its external event loop API: the reactor watches
the socket (``addReader``/``addWriter``) and calls ``loop_read``,
``loop_write`` and, every second, ``loop_misc`` (keepalive pings). paho
itself never blocks there: its socket is non-blocking once connected.

The one blocking part of paho is making the connection (name lookup, TCP
connect, TLS handshake in ``reconnect()``). That part runs in the reactor's
thread pool, touching no paho state; the connected socket is then handed to
paho on the reactor thread (``_create_socket`` below), which sends CONNECT.
One :class:`paho.mqtt.client.Client` lives as long as the gateway, so
unacknowledged QoS 1 messages are sent again after a reconnect (clean
session off for MQTT 3.1.1; clean start off with a session expiry for 5).
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Sequence
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReadWriteDescriptor
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from gateway.mqtt.client import BrokerEvents
from gateway.mqtt.settings import MqttSettings
from gateway.reactor import IGatewayReactor

__all__ = ["PahoBroker", "tls_context"]

log = Logger()

CONNECT_TIMEOUT_SECONDS = 10.0
GOODBYE_TIMEOUT = 2.0
# CONNACK reasons that mean "not you": the login or certificate (3.1.1's 4
# and 5 are mapped by paho to MQTT 5's 134 and 135).
_CREDENTIAL_REASONS = frozenset({134, 135, 138, 140})


def tls_context(settings: MqttSettings) -> ssl.SSLContext:
    """Verify the broker against ``ca_file`` (else the system's CAs) and its
    host name; present the client certificate for mutual TLS."""
    context = ssl.create_default_context(cafile=settings.ca_file)
    if settings.client_cert is not None:
        context.load_cert_chain(settings.client_cert, settings.client_key)
    return context


class _ReactorClient(paho.Client):
    """paho's client, taking a socket connected elsewhere instead of
    connecting (blocking) itself."""

    prepared: Any = None

    def _create_socket(self) -> Any:
        sock, self.prepared = self.prepared, None
        if sock is None:
            raise ConnectionError("no connection was prepared")
        return sock


@implementer(IReadWriteDescriptor)
class _Socket:
    """The paho socket as a reactor file descriptor."""

    def __init__(self, client: paho.Client, sock: Any) -> None:
        self._client = client
        self._fileno: int = int(sock.fileno())

    def fileno(self) -> int:
        return self._fileno

    def doRead(self) -> None:
        self._client.loop_read()

    def doWrite(self) -> None:
        self._client.loop_write()

    def connectionLost(self, reason: Failure) -> None:
        pass

    def logPrefix(self) -> str:
        return "mqtt"


class PahoBroker:
    """:class:`gateway.mqtt.client.BrokerClient` over paho-mqtt. The Last
    Will is ``offline``, retained, on ``will_topic``."""

    def __init__(self, reactor: IGatewayReactor, settings: MqttSettings, *, will_topic: str) -> None:
        self._reactor = reactor
        self._settings = settings
        v5 = settings.protocol == "5"
        self._v5 = v5
        self._client = _ReactorClient(
            CallbackAPIVersion.VERSION2,
            client_id=settings.client,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if v5 else False,
            reconnect_on_failure=False,
        )
        client = self._client
        if settings.username is not None:
            client.username_pw_set(settings.username, settings.password)
        client.will_set(will_topic, b"offline", qos=1, retain=True)
        # The publisher bounds what is in flight; paho queues nothing itself.
        client.max_inflight_messages_set(1000)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        self._tls = tls_context(settings) if settings.tls else None
        self._events: BrokerEvents | None = None
        self._descriptor: _Socket | None = None
        self._acks: dict[int, Deferred[None]] = {}
        self._closing: Deferred[None] | None = None
        self._answered = False  # the current attempt got its CONNACK (or failed)
        self._up = False  # connected, CONNACK accepted
        self._misc = LoopingCall(client.loop_misc)
        self._misc.clock = reactor

    # -- BrokerClient -------------------------------------------------------------

    def connect(self, events: BrokerEvents) -> None:
        self._events = events
        self._answered = False
        opening = deferToThreadPool(self._reactor, self._reactor.getThreadPool(), self._open_socket)
        opening.addCallbacks(self._opened, self._not_opened)

    def publish(self, topic: str, payload: bytes, *, qos: int, retain: bool) -> Deferred[None]:
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if qos == 0 or info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            return succeed(None)
        def forget(_: Deferred[None]) -> None:
            self._acks.pop(info.mid, None)

        acked: Deferred[None] = Deferred(forget)
        self._acks[info.mid] = acked
        return acked

    def subscribe(self, filters: Sequence[str], qos: int) -> None:
        if filters:
            self._client.subscribe([(topic, qos) for topic in filters])

    def disconnect(self) -> Deferred[None]:
        if self._descriptor is None:
            return succeed(None)
        self._closing = Deferred()
        self._client.disconnect()
        closing = self._closing
        timeout = self._reactor.callLater(GOODBYE_TIMEOUT, self._force_close)

        def closed(result: None) -> None:
            if timeout.active():
                timeout.cancel()

        closing.addCallback(closed)
        return closing

    # -- connecting, off the reactor ----------------------------------------------

    def _open_socket(self) -> Any:
        # In a pool thread: the blocking part (DNS, TCP, TLS handshake).
        settings = self._settings
        sock = socket.create_connection(
            (settings.host, settings.port), timeout=CONNECT_TIMEOUT_SECONDS
        )
        try:
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_hostname=settings.host)
        except BaseException:
            sock.close()
            raise
        return sock

    def _opened(self, sock: Any) -> None:
        client = self._client
        client.prepared = sock
        properties = None
        if self._v5:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = self._settings.session_expiry_seconds
        try:
            client.connect_async(
                self._settings.host,
                self._settings.port,
                keepalive=self._settings.keepalive_seconds,
                clean_start=False if self._v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
                properties=properties,
            )
            client.reconnect()
        except Exception as error:
            sock.close()
            self._fail(_describe(error))
            return
        self._misc.start(1.0, now=False)

    def _not_opened(self, failure: Failure) -> None:
        error = failure.value or Exception("connection failed")
        if isinstance(error, ssl.SSLCertVerificationError) and not self._answered:
            # Not a passing failure: it stays until ca_file or the broker changes.
            self._answered = True
            if self._events is not None:
                self._events.refused(_describe(error), True)
            return
        self._fail(_describe(error))

    def _fail(self, reason: str) -> None:
        if self._answered:
            return
        self._answered = True
        events = self._events
        if events is not None:
            events.lost(reason)

    # -- paho's callbacks, on the reactor thread ------------------------------------

    def _on_socket_open(self, client: Any, userdata: Any, sock: Any) -> None:
        self._descriptor = _Socket(self._client, sock)
        self._reactor.addReader(self._descriptor)

    def _on_socket_close(self, client: Any, userdata: Any, sock: Any) -> None:
        if self._descriptor is not None:
            self._reactor.removeReader(self._descriptor)
            self._reactor.removeWriter(self._descriptor)
            self._descriptor = None
        if self._misc.running:
            self._misc.stop()

    def _on_register_write(self, client: Any, userdata: Any, sock: Any) -> None:
        if self._descriptor is not None:
            self._reactor.addWriter(self._descriptor)

    def _on_unregister_write(self, client: Any, userdata: Any, sock: Any) -> None:
        if self._descriptor is not None:
            self._reactor.removeWriter(self._descriptor)

    def _on_connect(
        self, client: Any, userdata: Any, flags: Any, reason: ReasonCode, properties: Any
    ) -> None:
        self._answered = True
        events = self._events
        if events is None:
            return
        if reason.is_failure:
            self._up = False
            events.refused(f"the broker refused the connection: {reason}", reason.value in _CREDENTIAL_REASONS)
        else:
            self._up = True
            events.connected(bool(flags.session_present))

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: ReasonCode, properties: Any
    ) -> None:
        if self._closing is not None:
            closing, self._closing = self._closing, None
            closing.callback(None)
            return
        if not self._answered:
            self._fail(f"connection closed before the broker answered ({reason})")
        elif self._up:
            self._up = False
            events = self._events
            if events is not None:
                events.lost(f"connection lost ({reason})")
        # else: refused, and already said so

    def _on_publish(
        self, client: Any, userdata: Any, mid: int, reason: ReasonCode, properties: Any
    ) -> None:
        acked = self._acks.pop(mid, None)
        if acked is not None:
            acked.callback(None)

    def _on_message(self, client: Any, userdata: Any, message: paho.MQTTMessage) -> None:
        events = self._events
        if events is not None:
            events.message(message.topic, bytes(message.payload), bool(message.retain))

    def _force_close(self) -> None:
        self._client._sock_close()
        if self._closing is not None:
            closing, self._closing = self._closing, None
            closing.callback(None)


def _describe(error: BaseException) -> str:
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS: the broker's certificate is not trusted: {error.verify_message}"
    if isinstance(error, ssl.SSLError):
        return f"TLS: {error.reason or error}"
    if isinstance(error, socket.gaierror):
        return f"cannot resolve the broker's host name: {error.strerror}"
    if isinstance(error, OSError):
        return error.strerror or str(error) or type(error).__name__
    return str(error) or type(error).__name__
