"""kill -9 at a random instant: every event whose commit returned is on disk.

A child process commits events (some with images) as fast as it can and
prints each id once its commit has returned; the test kills it with SIGKILL
after a short random moment, then checks the database it left behind.
"""

from __future__ import annotations

import os
import random
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from twisted.trial.unittest import TestCase

import gateway
from gateway.store import ImageState, Store
from support.threads import global_reactor

pytestmark = pytest.mark.system

REPO_ROOT = Path(gateway.__file__).resolve().parent.parent

CHILD = r"""
import os, sys
from datetime import datetime, timezone
from twisted.internet import defer, task
from gateway.store import EventRecord, EventType, Store, new_event_id

def report(result, size):
    sys.stdout.write(f"{result.record.id} {size}\n")
    sys.stdout.flush()

async def main(reactor):
    store = await Store.open(reactor, sys.argv[1])
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    n = 0
    while True:
        commits = []
        for _ in range(4):  # several at once: group commits
            n += 1
            record = EventRecord(
                id=new_event_id("io"), type=EventType.IO, camera=f"cam-{n % 3}",
                received_at=datetime.now(timezone.utc), raw={"n": n},
            )
            size = 3000 + n if n % 2 else 0
            images = [("full", os.urandom(size))] if size else []
            d = defer.Deferred.fromCoroutine(store.commit_event(record, images))
            d.addCallback(report, size)
            commits.append(d)
        await defer.gatherResults(commits)

task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor)))
"""

CYCLES = 3
STARTUP_LIMIT = 20.0  # seconds for the child to import and open the store


class KillNineTests(TestCase):
    def setUp(self) -> None:
        self.state_dir = Path(tempfile.mkdtemp(prefix="anpr-store-crash-")) / "state"
        self.addCleanup(shutil.rmtree, self.state_dir.parent, True)

    def run_and_kill(self, rng: random.Random) -> dict[str, int]:
        """Run the child until a random moment, SIGKILL it; return the ids it
        reported committed, with their image sizes."""
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(self.state_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        assert child.stdout is not None
        output = b""
        try:
            deadline = time.monotonic() + STARTUP_LIMIT
            while b"ready\n" not in output and time.monotonic() < deadline:
                readable, _, _ = select.select([child.stdout], [], [], 0.5)
                if readable:
                    chunk = os.read(child.stdout.fileno(), 65536)
                    if not chunk:
                        break
                    output += chunk
            self.assertIn(b"ready\n", output, "the child did not start")
            kill_at = time.monotonic() + rng.uniform(0.05, 0.8)
            while time.monotonic() < kill_at:
                readable, _, _ = select.select(
                    [child.stdout], [], [], max(0.0, kill_at - time.monotonic())
                )
                if readable:
                    output += os.read(child.stdout.fileno(), 65536)
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=10)
            output += child.stdout.read()  # what it printed before dying
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            child.stdout.close()
        self.assertEqual(child.returncode, -signal.SIGKILL)
        committed: dict[str, int] = {}
        complete = output[: output.rfind(b"\n") + 1].decode()
        for line in complete.splitlines()[1:]:  # after "ready"
            event_id, size = line.split()
            committed[event_id] = int(size)
        return committed

    async def test_every_reported_commit_survives_sigkill(self) -> None:
        rng = random.Random()
        reported: dict[str, int] = {}
        for _ in range(CYCLES):
            reported.update(self.run_and_kill(rng))
            connection = sqlite3.connect(self.state_dir / "gateway.db")
            try:
                self.assertEqual(connection.execute("PRAGMA integrity_check").fetchall(), [("ok",)])
                stored = {row[0] for row in connection.execute("SELECT id FROM events")}
            finally:
                connection.close()
            self.assertEqual(set(reported) - stored, set())
        self.assertGreater(len(reported), 0)

        store = await Store.open(global_reactor, self.state_dir)
        try:
            self.assertIsNone(store.quarantined_db)
            for event_id, size in reported.items():
                if not size:
                    continue
                record = await store.get_event(event_id)
                assert record is not None
                self.assertEqual(record.image_full, ImageState.PRESENT)
                image = await store.read_image(event_id, "full")
                assert image is not None
                self.assertEqual(len(image), size)
        finally:
            await store.close()
        self.assertEqual(list(self.state_dir.glob("gateway.db.corrupt-*")), [])
