"""kill -9 of the gateway's twistd process: the broker publishes its Last
Will, ``offline`` retained on ``<prefix>/status``, so Home Assistant marks
the site's entities unavailable; started again, the gateway says ``online``.
A real twistd and a real Mosquitto."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from support.mqtt import MOSQUITTO, NO_MOSQUITTO, Mosquitto, Subscriber, free_port

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(MOSQUITTO is None, reason=NO_MOSQUITTO),
]

REPO = Path(__file__).resolve().parents[1]
STATUS = "anpr/site-7/status"


class LastWillTests(TestCase):
    timeout = 90

    def gateway(self, config: Path) -> subprocess.Popen[bytes]:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        log = open(config.parent / "gateway.log", "ab")
        self.addCleanup(log.close)
        process = subprocess.Popen(
            [
                sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                "--nodaemon", "--pidfile=", "anpr-gateway", "--config", str(config),
            ],
            cwd=config.parent,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

        def kill_if_running() -> None:
            if process.poll() is None:
                process.kill()
                process.wait(10)

        self.addCleanup(kill_if_running)
        return process

    async def until(self, condition: Any, seconds: float, what: str) -> None:
        for _ in range(int(seconds / 0.05)):
            if condition():
                return
            await deferLater(reactor, 0.05, lambda: None)
        log = (self.work / "gateway.log").read_text(errors="replace")[-3000:]
        self.fail(f"timed out waiting for {what}; the gateway's log ends:\n{log}")

    async def test_kill_9_leaves_the_last_will_offline_on_the_broker(self) -> None:
        self.work = work = Path(self.mktemp()).resolve()
        work.mkdir(parents=True)
        broker = Mosquitto(str(work / "broker"))
        broker.start()
        self.addCleanup(broker.stop)
        watcher = Subscriber(broker.port, [STATUS])
        self.addCleanup(watcher.close)
        config = work / "gateway.toml"
        config.write_text(
            f"""
[gateway]
id = "site-7"
state_dir = "{work / 'state'}"
[camera_server]
listen = ["tcp:{free_port()}:interface=127.0.0.1"]
[admin]
listen = []
[mqtt]
url = "{broker.url}"
keepalive_seconds = 60
max_backoff_seconds = 1
""",
            encoding="utf-8",
        )
        process = self.gateway(config)
        await self.until(lambda: watcher.on(STATUS)[-1:] == [b"online"], 30, "online")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        # The kernel closes the socket; the broker sends the will at once (long
        # before the 60 s keepalive would run out).
        await self.until(lambda: watcher.on(STATUS)[-1:] == [b"offline"], 20, "the Last Will")
        # Retained: a subscriber that comes later sees the site offline too.
        late = Subscriber(broker.port, [STATUS])
        self.addCleanup(late.close)
        await self.until(lambda: late.on(STATUS) == [b"offline"], 5, "the retained will")
        self.gateway(config)
        await self.until(lambda: watcher.on(STATUS)[-1:] == [b"online"], 30, "online again")
        self.assertEqual(late.on(STATUS), [b"offline", b"online"])

