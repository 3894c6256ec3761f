"""The broker connection as the MQTT link uses it: a small typed seam.

:class:`BrokerClient` is what :mod:`gateway.mqtt.paho` provides over a real
socket, and what the unit tests replace with an in-memory broker. The link
calls :meth:`BrokerClient.connect` and is told, through
:class:`BrokerEvents`, exactly one of: connected, refused (the broker
answered and said no), or lost (no connection, or it dropped later).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from twisted.internet.defer import Deferred

__all__ = ["BrokerClient", "BrokerEvents"]


class BrokerEvents(Protocol):
    """What a :class:`BrokerClient` tells the link."""

    def connected(self, session_present: bool) -> None:
        """The broker accepted the connection."""

    def refused(self, reason: str, credentials: bool) -> None:
        """The broker answered the connection and refused it, or its TLS
        certificate is not trusted; ``credentials``: because of the user name,
        password or a certificate (it will not work until the site's settings
        or the broker's change)."""

    def lost(self, reason: str) -> None:
        """The connection could not be made, or it dropped (not after
        :meth:`BrokerClient.disconnect`)."""

    def message(self, topic: str, payload: bytes, retained: bool) -> None:
        """A message arrived on a subscribed topic; ``retained``: the broker
        kept it from before the subscription."""


class BrokerClient(Protocol):
    """One MQTT session with the broker, kept across reconnects: messages
    published at QoS 1 that the broker has not acknowledged are sent again
    after a reconnect, and their Deferreds fire when they finally are."""

    def connect(self, events: BrokerEvents) -> None:
        """Start one connection attempt (never blocks)."""

    def publish(self, topic: str, payload: bytes, *, qos: int, retain: bool) -> Deferred[None]:
        """Send a message; fires when the broker acknowledged it (QoS 1) or
        when it was handed to the connection (QoS 0)."""

    def subscribe(self, filters: Sequence[str], qos: int) -> None:
        """Subscribe to topic filters on the current connection."""

    def disconnect(self) -> Deferred[None]:
        """End the connection cleanly (no Last Will); fires when it is closed."""
