"""Log lines for journald: one line per event on stdout, each with the <N>
syslog priority prefix systemd reads (SyslogLevelPrefix=), no timestamp."""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
import textwrap

import pytest
from twisted.logger import Logger, LogLevel

from gateway.journal import PRIORITIES, JournalObserver, format_event


def logger(out: io.BytesIO) -> Logger:
    return Logger(namespace="gateway.camera.server", observer=JournalObserver(out))


def test_levels_map_to_syslog_priorities() -> None:
    out = io.BytesIO()
    log = logger(out)
    log.debug("debug {n}", n=1)
    log.info("Camera {serialno} online", serialno="d85b1269-8f942256")
    log.warn("Camera {serialno} offline", serialno="d85b1269-8f942256")
    log.error("Store {what}", what="full")
    log.critical("Cannot open {path}", path="/var/lib/anpr-gateway/gateway.db")
    assert out.getvalue().decode().splitlines() == [
        "<7>[gateway.camera.server] debug 1",
        "<6>[gateway.camera.server] Camera d85b1269-8f942256 online",
        "<4>[gateway.camera.server] Camera d85b1269-8f942256 offline",
        "<3>[gateway.camera.server] Store full",
        "<2>[gateway.camera.server] Cannot open /var/lib/anpr-gateway/gateway.db",
    ]
    assert PRIORITIES == {
        LogLevel.debug: 7,
        LogLevel.info: 6,
        LogLevel.warn: 4,
        LogLevel.error: 3,
        LogLevel.critical: 2,
    }


def test_failure_traceback_lines_carry_the_same_priority() -> None:
    out = io.BytesIO()
    log = logger(out)
    try:
        raise ZeroDivisionError("division by zero")
    except ZeroDivisionError:
        log.failure("Plate push from {peer} failed", peer="192.168.1.100", level=LogLevel.error)
    lines = out.getvalue().decode().splitlines()
    assert lines[0] == "<3>[gateway.camera.server] Plate push from 192.168.1.100 failed"
    assert len(lines) > 3
    assert all(line.startswith("<3>") for line in lines)
    assert lines[1] == "<3>Traceback (most recent call last):"
    assert lines[-1].startswith("<3>builtins.ZeroDivisionError: division by zero")


def test_a_newline_in_a_message_cannot_forge_a_log_line() -> None:
    out = io.BytesIO()
    # A plate (or serial payload) from a camera with a line of its own inside.
    logger(out).warn("Plate {plate}", plate="京A12345\n<3>[gateway.admin] Admin login: admin\x00")
    assert out.getvalue().decode() == (
        "<4>[gateway.camera.server] Plate 京A12345\\n<3>[gateway.admin] Admin login: admin\\x00\n"
    )


def test_system_shown_when_the_event_has_one() -> None:
    event = {"log_format": "GET /", "log_level": LogLevel.info, "log_system": "HTTPChannel,3,127.0.0.1",
             "log_namespace": "twisted.web"}
    assert format_event(event) == b"<6>[HTTPChannel,3,127.0.0.1] GET /\n"


def test_event_without_level_is_informational_and_empty_events_are_skipped() -> None:
    assert format_event({"log_format": "hello", "log_namespace": "x"}) == b"<6>[x] hello\n"
    out = io.BytesIO()
    JournalObserver(out)({"log_level": LogLevel.info, "log_namespace": "x"})
    assert out.getvalue() == b""


def test_plates_in_utf8_and_undecodable_names_survive() -> None:
    out = io.BytesIO()
    logger(out).info("Plate {plate} from {path}", plate="京A12345", path="snap\udcb5.jpg")
    assert out.getvalue() == "<6>[gateway.camera.server] Plate 京A12345 from snap\\udcb5.jpg\n".encode()


def test_a_broken_stdout_does_not_raise() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    stream = os.fdopen(write_end, "wb")
    log = Logger(namespace="x", observer=JournalObserver(stream))
    log.info("nobody is listening")  # EPIPE (Python ignores SIGPIPE)
    log.info("still nobody")
    with contextlib.suppress(OSError):  # the unflushed bytes fail again
        stream.close()
    log.info("and now the stream is closed")  # ValueError inside, not raised


@pytest.mark.system
def test_twistd_logger_option_writes_prefixed_lines() -> None:
    """``twistd --logger gateway.journal.observer``: twistd calls the factory,
    and everything it logs (its own start-up lines too) is prefixed."""
    script = textwrap.dedent(
        """
        import sys
        from twisted.internet import reactor
        from twisted.logger import Logger
        from twisted.scripts.twistd import run

        def go():
            Logger(namespace="gateway.test").warn("Barrier {lane} stuck", lane="Exit")
            print("printed on stdout")
            reactor.stop()

        reactor.callWhenRunning(go)
        sys.argv = ["twistd", "--nodaemon", "--pidfile=", "--logger",
                    "gateway.journal.observer", "web", "--listen", "tcp:0:interface=127.0.0.1"]
        run()
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, timeout=60, env=env
    )
    lines = result.stdout.decode().splitlines()
    assert result.returncode == 0, result.stderr
    assert lines and all(line[:3] in {f"<{n}>" for n in range(8)} for line in lines), lines
    assert "<4>[gateway.test] Barrier Exit stuck" in lines
    # Standard output is redirected into the log by twistd, at info.
    assert any(line.startswith("<6>") and line.endswith("printed on stdout") for line in lines)
    assert any(line.startswith("<6>") and "twistd" in line and "starting up" in line for line in lines)
    assert lines[-1].endswith("Server Shut Down.")
    # journald stamps each line itself.
    assert not any(re.match(r"<\d>\d{4}-\d\d-\d\d", line) for line in lines)
