"""A small in-process publish/subscribe bus: what happens on site, as it
happens, for the admin page's live stream and the metrics.

Topics: ``event`` (a camera event was kept), ``camera`` (a camera went on or
off line), ``command`` (a command reached its final state), ``status``
(a link, store or serial port state changed), ``attention`` (an alert for
the booth, or its acknowledgement), ``occupancy`` (the cars inside changed).
Payloads are JSON-ready dicts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.logger import Logger

log = Logger()

Listener = Callable[[str, Mapping[str, Any]], None]


class EventBus:
    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(topic, payload)`` for everything published;
        returns the function that unsubscribes it."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def publish(self, topic: str, payload: Mapping[str, Any]) -> None:
        """Tell every listener; a failing listener is logged, never the
        publisher's problem."""
        for listener in list(self._listeners):
            try:
                listener(topic, payload)
            except Exception:
                log.failure("A {topic} listener failed", topic=topic)

    def __len__(self) -> int:
        return len(self._listeners)
