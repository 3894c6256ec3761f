"""Camera whitelist sync against a real store: the rows replies carry, applied
the way each dialect's camera applies them, leave the camera holding the
site's list for its lane."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from gateway.camera.registry import CameraRegistry
from gateway.camera.whitelist_sync import CameraWhitelistSync, camera_can_hold
from gateway.policy.whitelist import WhitelistEntry, parse_hours
from gateway.protocol.messages import Dialect, WhitelistOperation, WhitelistResult
from gateway.protocol.replies import HeartbeatReply, PlateReply
from gateway.store import Store

UTC = timezone.utc
VZENITH = "d85b1269-8f942256"
PARKINGCAM = "QFX2182310150262"


class FakeList:
    def __init__(self) -> None:
        self.entries: dict[str, WhitelistEntry] = {}

    def __call__(self) -> list[WhitelistEntry]:
        return sorted(self.entries.values(), key=lambda e: e.plate)

    def add(self, plate: str, **fields: Any) -> None:
        entry = WhitelistEntry(plate=plate, source="admin", **fields)
        self.entries[entry.plate] = entry


class SyncTests(TestCase):
    async def setUp(self) -> None:  # type: ignore[override]
        self.store = await Store.open(reactor, self.mktemp())
        self.addCleanup(self.store.close)
        self.registry = CameraRegistry(reactor)
        self.list = FakeList()
        self.sync = self.make_sync()

    def make_sync(self) -> CameraWhitelistSync:
        sync = CameraWhitelistSync(
            clock=reactor,
            registry=self.registry,
            entries=self.list,
            store=lambda: self.store,
            tz=UTC,
            cameras=[VZENITH, PARKINGCAM],
        )
        sync.startService()
        self.addCleanup(sync.stopService)
        return sync

    async def loaded(self, serialno: str) -> None:
        """Until the sync has read the camera's saved state (bounded)."""
        for _ in range(200):
            if self.sync.state(serialno) is not None:
                return
            await deferLater(reactor, 0.01, lambda: None)
        self.fail(f"sync state of {serialno} never loaded")

    def camera(self, serialno: str, dialect: Dialect, lane: str = "Entrance") -> None:
        self.registry.configure(serialno, lane=lane, heartbeat="auto")
        self.registry.seen(serialno, address="127.0.0.1", dialect=dialect)

    async def vzenith_polls(self, held: dict[str, dict[str, Any]], rounds: int = 200) -> list[int]:
        """Answer polls like the camera: apply each reply's rows; return the
        row count of every reply that carried rows."""
        camera = self.registry.get(VZENITH)
        assert camera is not None
        sizes = []
        for _ in range(rounds):
            await deferLater(reactor, 0, lambda: None)
            reply = PlateReply()
            self.registry.fill_reply(camera, reply)
            body = reply.to_dict()["Response_AlarmInfoPlate"]
            operate = body.get("white_list_operate")
            if operate is None:
                if not camera.commands:
                    await deferLater(reactor, 0.01, lambda: None)
                    if not camera.commands:
                        break
                continue
            rows = operate["white_list_data"]
            sizes.append(len(rows))
            for row in rows[:5]:  # the firmware applies at most 5
                if operate["operate_type"] == 1:
                    if row["plate"] == "":
                        held.clear()
                    held.pop(row["plate"], None)
                else:
                    held[row["plate"]] = row
        return sizes

    async def test_vzenith_camera_ends_with_the_lane_list_five_rows_a_reply(self) -> None:
        for number in range(23):
            self.list.add(f"京A{number:05d}")
        self.list.add("京B99999", blacklist=True)
        self.list.add("京C00001", lanes=frozenset({"Exit"}))  # another lane
        self.list.add("京D00001", enabled=False)
        self.list.add("京E00001", hours=parse_hours("Mon-Fri 07:00-19:00"))
        self.list.add("京F00001", valid_until=datetime(2000, 1, 1, tzinfo=UTC))  # expired
        held: dict[str, dict[str, Any]] = {"OLD1234": {"plate": "OLD1234"}}
        self.camera(VZENITH, Dialect.VZENITH)
        self.sync.list_changed()
        sizes = await self.vzenith_polls(held)
        self.assertLessEqual(max(sizes), 5)
        expected = {f"京A{n:05d}" for n in range(23)} | {"京B99999"}
        self.assertEqual(set(held), expected)
        self.assertEqual(held["京B99999"]["need_alarm"], 1)
        self.assertEqual(held["京A00000"]["need_alarm"], 0)

        # Delete 4, change the validity of 2: only the difference goes out.
        for number in range(4):
            del self.list.entries[f"京A{number:05d}"]
        until = datetime(2030, 6, 30, 18, 0, tzinfo=UTC)
        self.list.add("京A00010", valid_until=until)
        self.list.add("京A00011", valid_from=datetime(2025, 1, 1, tzinfo=UTC), valid_until=until)
        self.sync.list_changed()
        sizes = await self.vzenith_polls(held)
        self.assertEqual(sum(sizes), 4 + 2)
        self.assertEqual(set(held), expected - {f"京A{n:05d}" for n in range(4)})
        self.assertEqual(held["京A00010"]["overdue_time"], "2030-06-30 18:00:00")
        self.assertEqual(held["京A00011"]["enable_time"], "2025-01-01 00:00:00")
        state = self.sync.state(VZENITH)
        assert state is not None
        self.assertTrue(state.in_sync)

    async def test_state_survives_a_restart_no_full_resend(self) -> None:
        for number in range(12):
            self.list.add(f"京A{number:05d}")
        held: dict[str, dict[str, Any]] = {}
        self.camera(VZENITH, Dialect.VZENITH)
        self.sync.list_changed()
        await self.vzenith_polls(held)
        await self.sync.stopService()
        # A new gateway process: the sync state comes back from the store.
        self.registry = CameraRegistry(reactor)
        self.sync = self.make_sync()
        self.list.add("京Z00001")
        self.camera(VZENITH, Dialect.VZENITH)
        self.sync.list_changed()
        for _ in range(100):
            if self.sync.state(VZENITH) is not None:
                break
            await deferLater(reactor, 0.01, lambda: None)
        sizes = await self.vzenith_polls(held)
        self.assertEqual(sizes, [1])
        self.assertIn("京Z00001", held)

    async def test_resync_clears_and_sends_everything(self) -> None:
        for number in range(7):
            self.list.add(f"京A{number:05d}")
        held: dict[str, dict[str, Any]] = {}
        self.camera(VZENITH, Dialect.VZENITH)
        self.sync.list_changed()
        await self.vzenith_polls(held)
        held["STRAY99"] = {"plate": "STRAY99"}  # someone edited the camera by hand
        self.sync.resync(VZENITH)
        sizes = await self.vzenith_polls(held)
        self.assertEqual(sizes, [1, 5, 2])  # clear, then 7 rows
        self.assertNotIn("STRAY99", held)

    async def test_parkingcam_delete_all_then_batches_confirmed(self) -> None:
        for number in range(1203):
            self.list.add(f"粤B{number:05d}")
        self.list.add("粤X00000", blacklist=True)  # a ParkingCam list only opens
        self.camera(PARKINGCAM, Dialect.PARKINGCAM)
        camera = self.registry.get(PARKINGCAM)
        assert camera is not None
        held: set[str] = {"OLD"}
        operations = []
        self.sync.list_changed()
        await self.loaded(PARKINGCAM)
        for _ in range(50):
            await deferLater(reactor, 0, lambda: None)
            command = self.registry.take_whole_reply(camera)
            if command is None:
                reply = HeartbeatReply()
                self.registry.fill_reply(camera, reply)
                if not camera.commands:
                    break
                continue
            body = json.loads(command.whole_reply() or b"{}")
            key = next(iter(body))
            operations.append(key)
            if key == "deleteWhiteListAll":
                held.clear()
                result = WhitelistResult(operation=WhitelistOperation.DELETE_ALL, ok=True)
            elif key == "addWhiteList":
                held.update(row["carnum"] for row in body[key]["add_data"])
                result = WhitelistResult(operation=WhitelistOperation.ADD, ok=True)
            else:
                raise AssertionError(key)
            self.sync.whitelist_result(camera, result)
        self.assertEqual(operations, ["deleteWhiteListAll", "addWhiteList", "addWhiteList"])
        self.assertEqual(held, {f"粤B{n:05d}" for n in range(1203)})

    async def test_parkingcam_refusal_is_sent_again(self) -> None:
        self.list.add("粤B00001")
        self.camera(PARKINGCAM, Dialect.PARKINGCAM)
        camera = self.registry.get(PARKINGCAM)
        assert camera is not None
        self.sync.list_changed()
        await self.loaded(PARKINGCAM)
        first = self.registry.take_whole_reply(camera)
        assert first is not None
        self.sync.whitelist_result(
            camera, WhitelistResult(operation=WhitelistOperation.DELETE_ALL, ok=False)
        )
        state = self.sync.state(PARKINGCAM)
        assert state is not None
        self.assertFalse(state.known)
        self.assertIsNone(state.pending)
        self.assertIn(PARKINGCAM, self.sync._retry)

    def test_plates_a_camera_cannot_hold(self) -> None:
        self.assertIsNone(camera_can_hold("京A12345"))
        self.assertIsNotNone(camera_can_hold("京A1234567890123456"))
        self.assertIsNotNone(camera_can_hold("京A😀123"))

    async def test_unlisted_camera_is_never_synced(self) -> None:
        self.list.add("京A00001")
        self.registry.seen("ffffffff-00000001", address="127.0.0.1", dialect=Dialect.VZENITH)
        self.sync.list_changed()
        await deferLater(reactor, 0.05, lambda: None)
        camera = self.registry.get("ffffffff-00000001")
        assert camera is not None
        self.assertEqual(len(camera.commands), 0)


class ExpiryPassTests(TestCase):
    async def test_expired_entries_leave_the_camera_on_the_hourly_pass(self) -> None:
        from twisted.internet.task import Clock

        from gateway.camera.whitelist_sync import EXPIRY_PASS_SECONDS, TICK_SECONDS

        store = await Store.open(reactor, self.mktemp())
        self.addCleanup(store.close)
        clock = Clock()
        clock.advance(1_800_000_000)
        registry = CameraRegistry(clock)
        entries = FakeList()
        until = datetime.fromtimestamp(clock.seconds() + 100, tz=UTC)
        entries.add("京A00001", valid_until=until)
        entries.add("京A00002")
        sync = CameraWhitelistSync(
            clock=clock, registry=registry, entries=entries, store=lambda: store, tz=UTC,
            cameras=[VZENITH],
        )
        sync.startService()
        self.addCleanup(sync.stopService)
        registry.configure(VZENITH, lane="Entrance", heartbeat="auto")
        camera = registry.seen(VZENITH, address="127.0.0.1", dialect=Dialect.VZENITH)
        sync.list_changed()
        for _ in range(200):  # the saved state is read on the store thread
            if sync.state(VZENITH) is not None:
                break
            await deferLater(reactor, 0.01, lambda: None)

        def delivered() -> list[dict[str, Any]]:
            reply = PlateReply()
            registry.fill_reply(camera, reply)
            return [reply.to_dict()["Response_AlarmInfoPlate"].get("white_list_operate")]

        operations = delivered() + delivered()  # clear, then both rows
        self.assertEqual([len(o["white_list_data"]) for o in operations if o], [1, 2])
        state = sync.state(VZENITH)
        assert state is not None
        self.assertEqual(set(state.has), {"京A00001", "京A00002"})
        # Past its end, but before the hourly pass: the tick only retries.
        clock.advance(TICK_SECONDS * 10)
        self.assertEqual(camera.commands, type(camera.commands)())
        clock.advance(EXPIRY_PASS_SECONDS)
        (operation,) = delivered()
        assert operation is not None
        self.assertEqual(
            (operation["operate_type"], operation["white_list_data"]), (1, [{"plate": "京A00001"}])
        )
