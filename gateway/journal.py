"""Logging to journald through the service's standard output.

Under systemd a service's standard output already goes to the journal, and a
line that starts with a syslog priority in angle brackets (``<4>``) is stored
with that priority (``SyslogLevelPrefix=``, on by default). So the gateway needs
no journald library and writes no log file of its own: one line per event on
standard output, prefixed with its priority, without a timestamp (journald adds
one). ``journalctl -u anpr-gateway -p warning`` then shows warnings and worse.

Use it with twistd::

    twistd --nodaemon --pidfile= --logger gateway.journal.observer anpr-gateway ...

``--logger`` takes the fully qualified name of a log observer *factory*: twistd
calls :func:`observer` with no arguments before it starts logging.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from typing import BinaryIO, Final

from twisted.logger import ILogObserver, LogEvent, LogLevel, formatEvent
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = ["PRIORITIES", "JournalObserver", "format_event", "observer"]

#: Syslog priorities (RFC 5424 severities) of Twisted's log levels. Twisted
#: has no "notice" (5): a warning is 4.
PRIORITIES: Final[Mapping[LogLevel, int]] = {
    LogLevel.debug: 7,
    LogLevel.info: 6,
    LogLevel.warn: 4,
    LogLevel.error: 3,
    LogLevel.critical: 2,
}

# Events that carry no level (rare: hand-built events) are informational.
_DEFAULT_PRIORITY: Final = 6


def _priority(event: LogEvent) -> int:
    try:
        return PRIORITIES.get(event.get("log_level"), _DEFAULT_PRIORITY)  # type: ignore[arg-type]
    except TypeError:  # an unhashable value where a level belongs
        return _DEFAULT_PRIORITY


def _source(event: LogEvent) -> str:
    # Twisted's own text format shows log_system when an event has one (HTTP
    # channels, legacy log.msg callers), else the logger's namespace.
    system = event.get("log_system")
    if system:
        return str(system)
    namespace = event.get("log_namespace")
    return str(namespace) if namespace else "-"


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _escaped(text: str) -> str:
    """``text`` on one line: control characters (a newline in a plate or a
    serial payload) written as escapes, so that camera input cannot forge
    log lines."""
    return _CONTROL.sub(lambda match: repr(match.group())[1:-1], text)


def format_event(event: LogEvent) -> bytes:
    """The journal lines of one log event, UTF-8, each ending in a newline.

    The first line is ``<N>[source] message``, the message on one line (its
    control characters escaped); the traceback of a logged failure follows,
    each of its lines with the same ``<N>`` prefix so that journald files it
    with the same priority. An event with nothing to show gives ``b""``.
    """
    message = formatEvent(event)
    failure = event.get("log_failure")
    traceback = ""
    if isinstance(failure, Failure):
        try:
            traceback = failure.getTraceback()
        except Exception:
            traceback = "(unable to obtain traceback)"
    if not message and not traceback:
        return b""
    prefix = f"<{_priority(event)}>"
    lines = [f"[{_source(event)}] {_escaped(message)}"]
    lines.extend(line.rstrip("\r") for line in traceback.rstrip("\n").split("\n") if traceback)
    rendered = "".join(f"{prefix}{line}\n" for line in lines)
    # Plates and camera names are often Chinese; a stray surrogate (from a
    # badly decoded file name) must not cost the whole line.
    return rendered.encode("utf-8", "backslashreplace")


@implementer(ILogObserver)
class JournalObserver:
    """Writes each event to a binary stream as journal lines (:func:`format_event`)."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out

    def __call__(self, event: LogEvent) -> None:
        data = format_event(event)
        if not data:
            return
        try:
            # One write per event: lines of an event logged from the store's
            # thread are never interleaved with another event's.
            self._out.write(data)
            self._out.flush()
        except (OSError, ValueError):
            # journald restarting (EPIPE) or a closed stream: there is nowhere
            # left to say so, and raising would only make the log publisher
            # report the failure through this same observer.
            pass


def observer() -> ILogObserver:
    """The log observer factory for ``twistd --logger gateway.journal.observer``.

    Writes to the process's standard output as it is when logging starts
    (twistd replaces ``sys.stdout`` with a logging file right after).
    """
    sys.stdout.flush()
    return JournalObserver(sys.stdout.buffer)
