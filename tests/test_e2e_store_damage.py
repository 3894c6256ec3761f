"""Storage damage said loudly, through the real service tree on loopback:
a database with garbage pages is replaced at the start, salvaged (its admin
user signs in with the old password, its unsent events are still to be
delivered) and shown on the status API and in systemd's status until an admin
acknowledges it (audited); a state directory on a read-only file system keeps
the gateway from keeping events, said with its reason (the sign-in page,
systemd) while it tries again, and once writable it serves without a restart.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import SkipTest, TestCase

import gateway.store.service as store_service
from gateway.admin.auth import USERS_KEY
from gateway.admin.settings import AdminUser, hash_password
from gateway.background import reactor_threads
from gateway.config import parse_config
from gateway.store import Integrity, PlateRow, Store
from gateway.tap import build_service
from support import CameraClient, FakeSystemd, in_thread, loopback_config, start_gateway
from support.gateway import plate_body
from support.store import leaf_pages, plate_record, write_garbage
from support.threads import global_reactor

pytestmark = pytest.mark.e2e

CAMERA = "d85b1269-8f942256"
PASSWORD = "ada-kept-password-1"
PLATES = 2000
EVENTS = 300
DELIVERED = 200


def admin_request(
    port: int,
    method: str,
    path: str,
    *,
    body: Any = None,
    cookie: str | None = None,
    csrf: str | None = None,
) -> tuple[int, str | None, Any]:
    """One admin API request on loopback: status, Set-Cookie, JSON answer."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if cookie is not None:
        headers["Cookie"] = cookie
    if csrf is not None:
        headers["X-CSRF-Token"] = csrf
    try:
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        raw = response.read()
        answer = json.loads(raw) if raw else None
        return response.status, response.getheader("Set-Cookie"), answer
    finally:
        connection.close()


async def eventually(check: Callable[[], bool], seconds: float, what: str) -> None:
    """Wait (bounded) until ``check()`` holds."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        await deferLater(global_reactor, 0.05, lambda: None)


class ReplacedDatabaseTests(TestCase):
    async def damaged_site(self, state_dir: Path) -> list[str]:
        """A site's store (plates, its admin, events partly delivered) with
        garbage pages found by the whole-file check; the unsent event ids."""
        store = await Store.open(global_reactor, state_dir)
        await store.write_plates([PlateRow(plate=f"P{n:05d}") for n in range(PLATES)])
        user = AdminUser(name="ada", password_hash=hash_password(PASSWORD), role="admin")
        await store.kv_set(USERS_KEY, json.dumps([user.to_json()]))
        # Recent events: a site's last hours, none old enough for retention.
        now = datetime.now(timezone.utc)
        records = [
            plate_record(
                n,
                camera=CAMERA,
                received_at=now - timedelta(seconds=EVENTS - n),
                raw={"plateid": n, "pad": os.urandom(300).hex()},
            )
            for n in range(EVENTS)
        ]
        for record in records:
            await store.commit_event(record)
        await store.outbox_ack([record.id for record in records[:DELIVERED]])
        await store.close()
        path = state_dir / "gateway.db"
        plates, events = leaf_pages(path, "whitelist"), leaf_pages(path, "events")
        write_garbage(path, plates[len(plates) // 2 : len(plates) // 2 + 1] + events[2:4])
        store = await Store.open(global_reactor, state_dir)
        await store.check_integrity(reactor_threads(global_reactor))
        self.assertEqual(store.integrity.state, Integrity.DAMAGED)
        await store.close()
        return [record.id for record in records[DELIVERED:]]

    async def test_salvaged_shown_until_acknowledged(self) -> None:
        state_dir = Path(self.mktemp()) / "state"
        state_dir.mkdir(parents=True)
        unsent = await self.damaged_site(state_dir)
        systemd = FakeSystemd()
        self.addCleanup(systemd.close)

        gateway = await start_gateway(
            loopback_config(), str(state_dir), environ={"NOTIFY_SOCKET": systemd.env_value}
        )
        self.addCleanup(gateway.stop)
        store = gateway.store
        replacement = store.replacement
        assert replacement is not None
        self.assertTrue(Path(replacement.moved_to).exists())

        # What the site cannot do without is in the fresh database.
        plates = await store.whitelist_entries()
        self.assertGreater(len(plates), PLATES - 200)
        self.assertLess(len(plates), PLATES)
        batch = await store.outbox_batch(1000)
        self.assertEqual([item.event.id for item in batch], unsent)

        # systemd's status says it, after READY=1.
        messages: list[dict[str, str]] = []

        def ready() -> bool:
            messages.extend(systemd.messages())
            return any("READY" in message for message in messages)

        await eventually(ready, 10, "READY=1")
        status_line = [m for m in messages if "READY" in m][0]["STATUS"]
        self.assertTrue(status_line.startswith("DATABASE REPLACED at "), status_line)
        self.assertIn("gateway.db.corrupt-", status_line)

        # The salvaged admin signs in with the password of before.
        port = gateway.admin_port
        status, cookie_header, session = await in_thread(
            admin_request, port, "POST", "/api/login", body={"username": "ada", "password": PASSWORD}
        )
        self.assertEqual(status, 200)
        assert cookie_header is not None
        cookie, csrf = cookie_header.split(";")[0], session["csrf_token"]

        status, _, answer = await in_thread(admin_request, port, "GET", "/api/status", cookie=cookie)
        self.assertEqual(status, 200)
        replaced = answer["store"]["replaced"]
        self.assertEqual(replaced["moved_to"], replacement.moved_to)
        self.assertTrue(replaced["salvage"]["lost_anything"])
        self.assertEqual(replaced["salvage"]["parts"]["outbox"]["copied"], len(unsent))
        self.assertEqual(replaced["salvage"]["parts"]["plates"]["copied"], len(plates))
        self.assertEqual(answer["store"]["events"], len(await store.recent_events(limit=1000)))

        # Acknowledged by the admin: audited, gone from the page and systemd.
        status, _, answer = await in_thread(
            admin_request,
            port,
            "POST",
            "/api/store/damage/acknowledge",
            body={"reason": "old file copied off for inspection"},
            cookie=cookie,
            csrf=csrf,
        )
        self.assertEqual((status, answer["acknowledged"]), (200, True))
        status, _, answer = await in_thread(admin_request, port, "GET", "/api/status", cookie=cookie)
        self.assertIsNone(answer["store"]["replaced"])
        status, _, answer = await in_thread(
            admin_request, port, "POST", "/api/store/damage/acknowledge", body={},
            cookie=cookie, csrf=csrf,
        )
        self.assertEqual(status, 404)
        status, _, audit = await in_thread(admin_request, port, "GET", "/api/audit", cookie=cookie)
        entries = [entry for entry in audit["entries"] if entry["action"] == "acknowledge_damage"]
        self.assertEqual(len(entries), 1)
        self.assertEqual(entries[0]["who"], "ada")
        self.assertEqual(entries[0]["target"], Path(replacement.moved_to).name)
        self.assertEqual(entries[0]["detail"]["moved_to"], replacement.moved_to)
        self.assertEqual(entries[0]["reason"], "old file copied off for inspection")
        self.assertEqual(systemd.messages()[-1]["STATUS"][: len("camera-listener-1")], "camera-listener-1")


def read_only(directory: Path) -> tuple[Callable[[], None], Callable[[], None]] | None:
    """Make ``directory`` really read-only for this process, and the way
    back: a read-only bind mount of it as root (root writes through any
    mode bits), its mode bits otherwise. None when neither is possible."""
    if os.geteuid() != 0:
        directory.chmod(0o555)
        return (lambda: directory.chmod(0o755)), (lambda: directory.chmod(0o755))

    def run(*command: str) -> bool:
        return subprocess.run(command, capture_output=True, timeout=30).returncode == 0

    def remount_writable() -> None:
        run("mount", "-o", "remount,rw,bind", str(directory))

    def unmount() -> None:
        run("umount", str(directory))

    if not run("mount", "--bind", str(directory), str(directory)):
        return None
    if not run("mount", "-o", "remount,ro,bind", str(directory)):
        run("umount", str(directory))
        return None
    return remount_writable, unmount


class ReadOnlyStateTests(TestCase):
    async def test_reported_with_its_reason_and_served_once_writable(self) -> None:
        # Retried every half second here (10 s, doubling, in the field).
        self.patch(store_service, "OPEN_RETRY_FIRST", 0.5)
        self.patch(store_service, "OPEN_RETRY_MAX", 0.5)
        # A short path, as in the field: systemd's status line is one screen line.
        state_dir = Path(tempfile.mkdtemp(prefix="anpr-ro-")) / "state"
        self.addCleanup(shutil.rmtree, state_dir.parent, True)
        state_dir.mkdir()
        made = read_only(state_dir)
        if made is None:
            raise SkipTest("cannot make a read-only directory here (no bind mount)")
        writable, undo = made
        self.addCleanup(undo)
        self.assertRaises(OSError, (state_dir / "probe").write_bytes, b"x")

        systemd = FakeSystemd()
        self.addCleanup(systemd.close)
        config = parse_config(
            {**loopback_config(), "gateway": {"state_dir": str(state_dir)}}, source="<test>"
        )
        service = build_service(config, global_reactor, environ={"NOTIFY_SOCKET": systemd.env_value})
        service.startService()
        self.addCleanup(service.stopService)
        await eventually(lambda: service.store.problem is not None, 10, "the open to fail")
        problem = service.store.problem
        assert problem is not None
        reason = "Read-only file system" if os.geteuid() == 0 else "Permission denied"
        self.assertIn(reason, problem.reason)

        ports = []
        for child in service:
            waiting = getattr(child, "_waitingForPort", None)
            if waiting is not None:
                ports.append((child.name, (await waiting).getHost().port))
        camera_port = [port for name, port in ports if name.startswith("camera")][0]
        admin_port = [port for name, port in ports if name.startswith("admin")][0]

        # The sign-in page is told why, not "starting".
        status, _, answer = await in_thread(admin_request, admin_port, "GET", "/api/session")
        self.assertEqual(status, 503)
        self.assertIn("the event store cannot open", answer["error"])
        self.assertIn(reason, answer["error"])
        status, _, answer = await in_thread(
            admin_request, admin_port, "POST", "/api/login", body={"username": "a", "password": "b"}
        )
        self.assertEqual(status, 503)
        self.assertIn(reason, answer["error"])

        # systemd: not ready, and why.
        await eventually(lambda: service.store.problem is not None and service.store.problem.attempts >= 2, 10, "a retry")
        messages = systemd.messages()
        self.assertFalse(any("READY" in message for message in messages))
        self.assertIn("NOT KEEPING EVENTS", messages[-1]["STATUS"])
        self.assertIn(reason, messages[-1]["STATUS"])

        # A push is not answered (the camera keeps it and sends it again).
        camera = CameraClient(camera_port)
        self.addCleanup(camera.close)
        with self.assertRaises((http.client.HTTPException, ConnectionError)):
            await in_thread(camera.post, plate_body(CAMERA, "京A12345", plateid=1))

        # Writable again: the next attempt opens it, and the gateway serves.
        writable()
        opened: Deferred[Any] = service.store.when_open()
        await eventually(lambda: opened.called, 10, "the store to open")
        await service.plate_list.when_loaded()
        self.assertIsNone(service.store.problem)
        store = service.store.store
        assert store is not None
        camera = CameraClient(camera_port)
        self.addCleanup(camera.close)
        reply = await in_thread(camera.post, plate_body(CAMERA, "京A12345", plateid=2))
        self.assertEqual(reply.status, 200)
        self.assertEqual(await store.outbox_depth(), 0)  # no cloud configured
        plates = await store.recent_events(type="plate")
        self.assertEqual([event.license for event in plates], ["京A12345"])  # the second push

        def ready() -> bool:
            messages.extend(systemd.messages())
            return any("READY" in message for message in messages)

        await eventually(ready, 10, "READY=1")
        self.assertNotIn("NOT KEEPING", [m for m in messages if "READY" in m][0]["STATUS"])
