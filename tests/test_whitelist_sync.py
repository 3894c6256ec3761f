"""Camera whitelist sync, in memory (a Clock, no sockets, no threads): the rows
replies carry, applied the way each dialect's camera applies them, leave the
camera holding the site's list for its lane; a change of the list costs what
it changes, on a site of 100 000 plates too."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from gateway.camera.registry import Camera, CameraRegistry
from gateway.camera.whitelist_sync import (
    EXPIRY_PASS_SECONDS,
    ROWS_PER_TURN,
    TICK_SECONDS,
    CameraWhitelistSync,
    LaneListSettings,
)
from gateway.policy.cameralist import CameraRow
from gateway.policy.whitelist import PlateListChange, WhitelistEntry, parse_hours
from gateway.protocol.capabilities import ReplyKind
from gateway.protocol.messages import Dialect, WhitelistOperation, WhitelistResult
from gateway.protocol.parse import decode_body
from gateway.protocol.replies import HeartbeatReply, PlateReply
from gateway.store import CameraListState

UTC = timezone.utc
VZENITH = "d85b1269-8f942256"
PARKINGCAM = "QFX2182310150262"
NOW = 1_800_000_000.0


class MemoryLists:
    """What cameras hold, checkpointed in memory (the store's two calls)."""

    def __init__(self) -> None:
        self.saved: dict[str, CameraListState] = {}
        self.writes: list[int] = []  # rows written per save
        self.kv: dict[str, str] = {}

    async def camera_list(self, camera: str) -> CameraListState | None:
        return self.saved.get(camera)

    async def kv_get(self, key: str) -> str | None:
        return self.kv.get(key)

    async def kv_set(self, key: str, value: str | None) -> None:
        if value is None:
            self.kv.pop(key, None)
        else:
            self.kv[key] = value

    async def save_camera_list(
        self,
        camera: str,
        *,
        dialect: str | None,
        known: bool,
        cleared: bool,
        changes: Mapping[str, CameraRow | None],
    ) -> None:
        previous = self.saved.get(camera)
        rows = {} if cleared or previous is None else dict(previous.rows)
        for plate, row in changes.items():
            if row is None:
                rows.pop(plate, None)
            else:
                rows[plate] = row
        self.saved[camera] = CameraListState(camera=camera, dialect=dialect, known=known, rows=rows)
        self.writes.append(len(changes))


class SiteList:
    """The site's list, as the plate list service gives it to the sync."""

    def __init__(self) -> None:
        self.entries: dict[str, WhitelistEntry] = {}

    def snapshot(self) -> tuple[WhitelistEntry, ...]:
        return tuple(self.entries.values())

    def add(self, plate: str, **fields: Any) -> WhitelistEntry:
        entry = WhitelistEntry(plate=plate, source="admin", **fields)
        self.entries[entry.plate] = entry
        return entry

    def change(
        self, upserts: Iterable[WhitelistEntry] = (), deletes: Iterable[str] = ()
    ) -> PlateListChange:
        gone = tuple(deletes)
        for plate in gone:
            del self.entries[plate]
        added = tuple(upserts)
        for entry in added:
            self.entries[entry.plate] = entry
        return PlateListChange(upserts=added, deletes=gone)


class SyncTestCase(TestCase):
    capacity: int | None = None  # of every camera's list

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.registry = CameraRegistry(self.clock)
        self.site = SiteList()
        self.lists = MemoryLists()
        self.off_reactor = 0  # full recomputes handed to the thread
        self.held_back: list[tuple[Callable[[], Any], Deferred[Any]]] | None = None
        self.sync = self.make_sync()

    def in_thread(self, work: Callable[[], Any]) -> Deferred[Any]:
        self.off_reactor += 1
        if self.held_back is not None:
            waiting: Deferred[Any] = Deferred()
            self.held_back.append((work, waiting))
            return waiting
        return succeed(work())

    def make_sync(self) -> CameraWhitelistSync:
        capacity = self.capacity
        sync = CameraWhitelistSync(
            clock=self.clock,
            registry=self.registry,
            snapshot=self.site.snapshot,
            store=lambda: self.lists,
            tz=UTC,
            cameras={
                VZENITH: LaneListSettings(lane="Entrance", capacity=capacity),
                PARKINGCAM: LaneListSettings(lane="Entrance", capacity=capacity),
            },
            in_thread=self.in_thread,
        )
        sync.startService()
        self.addCleanup(sync.stopService)
        return sync

    def camera(self, serialno: str, dialect: Dialect) -> Camera:
        # A Vzenith camera that comet-polls: it reads the rows in its polls' replies.
        heartbeat = "comet" if dialect is Dialect.VZENITH else "auto"
        self.registry.configure(serialno, lane="Entrance", heartbeat=heartbeat)
        return self.registry.seen(serialno, address="127.0.0.1", dialect=dialect)

    def vzenith_polls(self, held: dict[str, dict[str, Any]], rounds: int = 100_000) -> list[int]:
        """Answer replies like the camera: apply each reply's rows; return the
        row count of every reply that carried rows."""
        camera = self.registry.get(VZENITH)
        assert camera is not None
        sizes = []
        for _ in range(rounds):
            # Each poll is a contact: the camera stays online.
            self.registry.seen(VZENITH, address="127.0.0.1", dialect=Dialect.VZENITH)
            reply = PlateReply()
            self.registry.fill_reply(camera, reply, ReplyKind.POLL)
            operate = reply.to_dict()["Response_AlarmInfoPlate"].get("white_list_operate")
            if operate is None:
                break
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

    def seed_in_sync(self, serialno: str, dialect: Dialect) -> None:
        """The camera already holds the site's list (saved by a previous run)."""
        self.lists.saved[serialno.casefold()] = CameraListState(
            camera=serialno.casefold(),
            dialect=dialect.value,
            known=True,
            rows={
                entry.plate: CameraRow(
                    plate=entry.plate,
                    blacklist=entry.blacklist,
                    valid_from=entry.valid_from,
                    valid_until=entry.valid_until,
                )
                for entry in self.site.entries.values()
            },
        )


class VzenithTests(SyncTestCase):
    def test_camera_ends_with_the_lane_list_five_rows_a_reply(self) -> None:
        for number in range(23):
            self.site.add(f"京A{number:05d}")
        self.site.add("京B99999", blacklist=True)
        self.site.add("京C00001", lanes=frozenset({"Exit"}))  # another lane
        self.site.add("京D00001", enabled=False)
        self.site.add("京E00001", hours=parse_hours("Mon-Fri 07:00-19:00"))
        self.site.add("京F00001", valid_until=datetime(2000, 1, 1, tzinfo=UTC))  # expired
        held: dict[str, dict[str, Any]] = {"OLD1234": {"plate": "OLD1234"}}
        self.camera(VZENITH, Dialect.VZENITH)
        sizes = self.vzenith_polls(held)
        self.assertLessEqual(max(sizes), 5)
        expected = {f"京A{n:05d}" for n in range(23)} | {"京B99999"}
        self.assertEqual(set(held), expected)
        self.assertEqual(held["京B99999"]["need_alarm"], 1)
        self.assertEqual(held["京A00000"]["need_alarm"], 0)
        recomputes = self.off_reactor

        # Delete 4, change the validity of 2: only the difference goes out,
        # worked out on the reactor from the change alone.
        until = datetime(2030, 6, 30, 18, 0, tzinfo=UTC)
        change = self.site.change(
            upserts=[
                WhitelistEntry("京A00010", valid_until=until),
                WhitelistEntry(
                    "京A00011", valid_from=datetime(2025, 1, 1, tzinfo=UTC), valid_until=until
                ),
            ],
            deletes=[f"京A{n:05d}" for n in range(4)],
        )
        self.sync.list_changed(change)
        sizes = self.vzenith_polls(held)
        self.assertEqual(sum(sizes), 4 + 2)
        self.assertEqual(self.off_reactor, recomputes)
        self.assertEqual(set(held), expected - {f"京A{n:05d}" for n in range(4)})
        self.assertEqual(held["京A00010"]["overdue_time"], "2030-06-30 18:00:00")
        self.assertEqual(held["京A00011"]["enable_time"], "2025-01-01 00:00:00")
        state = self.sync.state(VZENITH)
        assert state is not None
        self.assertTrue(state.in_sync)

    def test_one_row_of_a_100000_plate_list_sends_one_row_and_saves_one_row(self) -> None:
        for number in range(100_000):
            self.site.add(f"粤B{number:05d}")
        self.seed_in_sync(VZENITH, Dialect.VZENITH)
        held: dict[str, dict[str, Any]] = {}
        self.camera(VZENITH, Dialect.VZENITH)
        self.assertEqual(self.vzenith_polls(held), [])  # it holds them all already
        state = self.sync.state(VZENITH)
        assert state is not None and state.in_sync
        recomputes, writes = self.off_reactor, len(self.lists.writes)

        change = self.site.change(upserts=[WhitelistEntry("粤B00007", note="changed note")])
        self.sync.list_changed(change)
        # A note is not something the camera holds: nothing to send.
        self.assertEqual(self.vzenith_polls(held), [])
        change = self.site.change(
            upserts=[WhitelistEntry("粤B00008", valid_until=datetime(2031, 1, 1, tzinfo=UTC))]
        )
        self.sync.list_changed(change)
        self.assertEqual(self.vzenith_polls(held), [1])
        self.assertEqual(held["粤B00008"]["overdue_time"], "2031-01-01 00:00:00")
        self.assertEqual(self.off_reactor, recomputes)
        self.assertEqual(self.lists.writes[writes:], [1])
        saved = self.lists.saved[VZENITH.casefold()]
        self.assertEqual(len(saved.rows), 100_000)
        self.assertEqual(saved.rows["粤B00008"].valid_until, datetime(2031, 1, 1, tzinfo=UTC))

    def test_state_survives_a_restart_no_full_resend(self) -> None:
        for number in range(12):
            self.site.add(f"京A{number:05d}")
        held: dict[str, dict[str, Any]] = {}
        self.camera(VZENITH, Dialect.VZENITH)
        self.vzenith_polls(held)
        self.successResultOf(self.sync.stopService())
        # A new gateway process: the sync state comes back from the store.
        self.registry = CameraRegistry(self.clock)
        self.sync = self.make_sync()
        self.site.add("京Z00001")
        self.camera(VZENITH, Dialect.VZENITH)
        self.assertEqual(self.vzenith_polls(held), [1])
        self.assertIn("京Z00001", held)

    def test_resync_clears_and_sends_everything(self) -> None:
        for number in range(7):
            self.site.add(f"京A{number:05d}")
        held: dict[str, dict[str, Any]] = {}
        self.camera(VZENITH, Dialect.VZENITH)
        self.vzenith_polls(held)
        held["STRAY99"] = {"plate": "STRAY99"}  # someone edited the camera by hand
        self.sync.resync(VZENITH)
        self.assertEqual(self.vzenith_polls(held), [1, 5, 2])  # clear, then 7 rows
        self.assertNotIn("STRAY99", held)

    def test_a_change_during_a_recompute_is_applied_after_it(self) -> None:
        for number in range(10):
            self.site.add(f"京A{number:05d}")
        self.held_back = []
        self.camera(VZENITH, Dialect.VZENITH)
        (work, waiting), = self.held_back
        # While the recompute runs off the reactor, a plate goes and one comes.
        change = self.site.change(upserts=[WhitelistEntry("京N00001")], deletes=["京A00003"])
        self.sync.list_changed(change)
        self.held_back = None
        waiting.callback(work())
        held: dict[str, dict[str, Any]] = {}
        self.vzenith_polls(held)
        self.assertEqual(set(held), set(self.site.entries))

    def test_a_change_goes_into_the_cameras_a_few_hundred_rows_a_turn(self) -> None:
        held: dict[str, dict[str, Any]] = {}
        self.camera(VZENITH, Dialect.VZENITH)
        self.vzenith_polls(held)
        recomputes = self.off_reactor
        count = ROWS_PER_TURN * 3
        change = self.site.change(upserts=[WhitelistEntry(f"京B{n:05d}") for n in range(count)])
        self.sync.list_changed(change)
        state = self.sync.state(VZENITH)
        assert state is not None
        # This turn of the event loop took one slice; the rest waits for the
        # next turns (cameras are served in between).
        self.assertEqual(len(state.work.to_add), ROWS_PER_TURN)
        self.assertEqual(
            [call.getTime() for call in self.clock.getDelayedCalls()].count(self.clock.seconds()),
            1,
        )
        self.clock.advance(0)
        self.assertEqual(len(state.work.to_add), count)
        self.assertEqual(self.off_reactor, recomputes)
        self.vzenith_polls(held)
        self.assertEqual(set(held), set(self.site.entries))

    def test_a_large_change_is_recomputed_off_the_reactor(self) -> None:
        for number in range(10):
            self.site.add(f"京A{number:05d}")
        held: dict[str, dict[str, Any]] = {}
        self.camera(VZENITH, Dialect.VZENITH)
        self.vzenith_polls(held)
        recomputes = self.off_reactor
        change = self.site.change(upserts=[WhitelistEntry(f"京B{n:05d}") for n in range(3000)])
        self.sync.list_changed(change)
        self.assertEqual(self.off_reactor, recomputes + 1)
        self.vzenith_polls(held)
        self.assertEqual(set(held), set(self.site.entries))

    def test_unlisted_camera_is_never_synced(self) -> None:
        self.site.add("京A00001")
        camera = self.registry.seen("ffffffff-00000001", address="127.0.0.1", dialect=Dialect.VZENITH)
        self.sync.list_changed(self.site.change(upserts=[WhitelistEntry("京A00002")]))
        self.assertEqual(len(camera.commands), 0)
        self.assertIsNone(self.sync.state("ffffffff-00000001"))

    def test_expired_entries_leave_the_camera_on_the_hourly_pass(self) -> None:
        until = datetime.fromtimestamp(self.clock.seconds() + 100, tz=UTC)
        self.site.add("京A00001", valid_until=until)
        self.site.add("京A00002")
        held: dict[str, dict[str, Any]] = {}
        self.camera(VZENITH, Dialect.VZENITH)
        self.assertEqual(self.vzenith_polls(held), [1, 2])  # clear, then both rows
        # Past its end, but before the hourly pass: the tick only retries.
        self.clock.advance(TICK_SECONDS * 10)
        self.assertEqual(self.vzenith_polls(held), [])
        self.clock.advance(EXPIRY_PASS_SECONDS)
        self.assertEqual(self.vzenith_polls(held), [1])
        self.assertEqual(set(held), {"京A00002"})


class CapacityTests(SyncTestCase):
    capacity = 10

    def test_a_camera_that_holds_ten_gets_the_ten_that_go_first(self) -> None:
        for number in range(12):
            self.site.add(f"京A{number:05d}", valid_until=datetime(2030, 1, 1 + number, tzinfo=UTC))
        self.site.add("京L00001", lanes=frozenset({"Entrance"}),
                      valid_until=datetime(2028, 1, 1, tzinfo=UTC))
        self.site.add("京P00001")  # valid for ever
        self.site.add("京X00001", blacklist=True)
        held: dict[str, dict[str, Any]] = {}
        self.camera(VZENITH, Dialect.VZENITH)
        self.vzenith_polls(held)
        # The lane's own entry, then no end, then the latest ends; the
        # blacklist entry last.
        self.assertEqual(
            set(held), {"京L00001", "京P00001"} | {f"京A{n:05d}" for n in range(4, 12)}
        )
        state = self.sync.state(VZENITH)
        assert state is not None
        self.assertEqual(
            {key: state.describe()[key] for key in ("lane_plates", "capacity", "partial")},
            {"lane_plates": 15, "capacity": 10, "partial": True},
        )
        # An entry that goes before the others takes the place of the last.
        self.sync.list_changed(self.site.change(upserts=[WhitelistEntry("京P00002")]))
        self.vzenith_polls(held)
        self.assertIn("京P00002", held)
        self.assertNotIn("京A00004", held)
        self.assertEqual(len(held), 10)

    def test_a_list_that_fits_is_not_partial(self) -> None:
        for number in range(10):
            self.site.add(f"京A{number:05d}")
        held: dict[str, dict[str, Any]] = {}
        self.camera(VZENITH, Dialect.VZENITH)
        self.vzenith_polls(held)
        state = self.sync.state(VZENITH)
        assert state is not None
        self.assertFalse(state.partial)
        # One more than fits: now it is.
        self.sync.list_changed(self.site.change(upserts=[WhitelistEntry("京Z00001")]))
        self.vzenith_polls(held)
        self.assertTrue(state.partial)
        self.assertEqual(len(held), 10)


class ParkingCamTests(SyncTestCase):
    def heartbeats(self, camera: Camera, held: set[str], confirm: bool = True) -> list[str]:
        operations = []
        for _ in range(100):
            command = self.registry.take_whole_reply(camera)
            if command is None:
                reply = HeartbeatReply()
                self.registry.fill_reply(camera, reply, ReplyKind.HEARTBEAT)
                break
            # In the camera's encoding (UTF-8 until it is known).
            body = json.loads(decode_body(command.whole_reply() or b"{}"))
            key = next(iter(body))
            operations.append(key)
            if key == "deleteWhiteListAll":
                held.clear()
                operation = WhitelistOperation.DELETE_ALL
            elif key == "addWhiteList":
                held.update(row["carnum"] for row in body[key]["add_data"])
                operation = WhitelistOperation.ADD
            elif key == "deleteWhiteList":
                held.difference_update(row["carnum"] for row in body[key]["del_data"])
                operation = WhitelistOperation.DELETE
            elif key == "whiteList":
                # The camera reads its list back, a page at a time.
                query = body[key]
                page = sorted(held)[query["listPosition"] : query["listPosition"] + query["queryNumList"]]
                if confirm:
                    self.sync.whitelist_result(
                        camera,
                        WhitelistResult(
                            operation=WhitelistOperation.QUERY,
                            total=len(held),
                            rows=tuple({"carnum": plate} for plate in page),
                        ),
                    )
                continue
            else:
                raise AssertionError(key)
            if confirm:
                self.sync.whitelist_result(camera, WhitelistResult(operation=operation, ok=True))
        return operations

    def test_delete_all_then_batches_confirmed(self) -> None:
        for number in range(1203):
            self.site.add(f"粤B{number:05d}")
        self.site.add("粤X00000", blacklist=True)  # a ParkingCam list only opens
        camera = self.camera(PARKINGCAM, Dialect.PARKINGCAM)
        held: set[str] = {"OLD"}
        operations = self.heartbeats(camera, held)
        # Cleared, filled, then read back (two pages of a 1203-plate list).
        self.assertEqual(
            operations,
            ["deleteWhiteListAll", "addWhiteList", "addWhiteList", "whiteList", "whiteList"],
        )
        self.assertEqual(held, {f"粤B{n:05d}" for n in range(1203)})
        state = self.sync.state(PARKINGCAM)
        assert state is not None
        self.assertTrue(state.describe()["verified"])
        # A changed row is deleted, then added again (an add does not replace).
        change = self.site.change(
            upserts=[WhitelistEntry("粤B00001", valid_until=datetime(2031, 1, 1, tzinfo=UTC))]
        )
        self.sync.list_changed(change)
        # Confirmed by the camera: not read back again for a change.
        self.assertEqual(self.heartbeats(camera, held), ["deleteWhiteList", "addWhiteList"])
        self.assertIn("粤B00001", held)
        self.assertTrue(state.describe()["verified"])

    def test_after_a_restart_the_camera_s_count_is_checked(self) -> None:
        for number in range(5):
            self.site.add(f"粤B{number:05d}")
        camera = self.camera(PARKINGCAM, Dialect.PARKINGCAM)
        held: set[str] = set()
        self.heartbeats(camera, held)
        self.successResultOf(self.sync.stopService())
        for lost in (False, True):
            # A new gateway process: the camera's count is read (one row asked
            # for), and a camera that lost plates meanwhile gets its list again.
            if lost:
                held.discard("粤B00002")
            self.registry = CameraRegistry(self.clock)
            self.sync = self.make_sync()
            camera = self.camera(PARKINGCAM, Dialect.PARKINGCAM)
            command = self.registry.take_whole_reply(camera)
            assert command is not None
            self.assertEqual(json.loads(command.whole_reply() or b"{}")["whiteList"]["queryNumList"], 1)
            self.sync.whitelist_result(
                camera,
                WhitelistResult(
                    operation=WhitelistOperation.QUERY,
                    total=len(held),
                    rows=tuple({"carnum": plate} for plate in sorted(held)[:1]),
                ),
            )
            state = self.sync.state(PARKINGCAM)
            assert state is not None
            if not lost:
                self.assertTrue(state.describe()["verified"])
                self.assertIsNone(self.registry.take_whole_reply(camera))
                self.successResultOf(self.sync.stopService())
            else:
                self.assertFalse(state.describe()["verified"])
                self.assertEqual(self.heartbeats(camera, held)[0], "deleteWhiteListAll")
                self.assertEqual(held, {f"粤B{n:05d}" for n in range(5)})

    def test_commands_are_written_in_the_encoding_the_camera_pushes_in(self) -> None:
        self.site.add("粤B00001")
        self.site.add("粤B00002")
        camera = self.camera(PARKINGCAM, Dialect.PARKINGCAM)
        self.registry.seen(PARKINGCAM, address="127.0.0.1", charset="gb18030")
        held: set[str] = set()

        def until(key: str) -> bytes:
            """Answer commands like the camera up to the first ``key`` one; its body."""
            operations = {
                "deleteWhiteListAll": WhitelistOperation.DELETE_ALL,
                "addWhiteList": WhitelistOperation.ADD,
                "deleteWhiteList": WhitelistOperation.DELETE,
                "whiteList": WhitelistOperation.QUERY,
            }
            for _ in range(10):
                command = self.registry.take_whole_reply(camera)
                assert command is not None
                raw = command.whole_reply() or b""
                body = json.loads(decode_body(raw))
                name = next(iter(body))
                if name == "addWhiteList":
                    held.update(row["carnum"] for row in body[name]["add_data"])
                elif name == "deleteWhiteList":
                    held.difference_update(row["carnum"] for row in body[name]["del_data"])
                elif name == "deleteWhiteListAll":
                    held.clear()
                rows = tuple({"carnum": plate} for plate in sorted(held))
                self.sync.whitelist_result(
                    camera,
                    WhitelistResult(operation=operations[name], ok=True, total=len(held), rows=rows),
                )
                if name == key:
                    return raw
            raise AssertionError(f"no {key}")

        self.assertIn("粤B00001".encode("gb2312"), until("addWhiteList"))
        self.sync.list_changed(self.site.change(deletes=["粤B00002"]))
        self.assertIn("粤B00002".encode("gb2312"), until("deleteWhiteList"))
        # A camera that turns out to push UTF-8 gets its deletions in UTF-8 too.
        self.registry.seen(PARKINGCAM, address="127.0.0.1", charset="utf-8")
        self.sync.list_changed(self.site.change(deletes=["粤B00001"]))
        self.assertIn("粤B00001".encode(), until("deleteWhiteList"))

    def test_a_camera_s_encoding_is_kept_across_a_restart(self) -> None:
        self.site.add("粤B00001")
        camera = self.camera(PARKINGCAM, Dialect.PARKINGCAM)
        camera.charset = "gb2312"  # as its pushes showed
        held: set[str] = set()
        self.heartbeats(camera, held)
        self.successResultOf(self.sync.stopService())
        # A new gateway process, before the camera sent anything in GB2312.
        self.registry = CameraRegistry(self.clock)
        self.sync = self.make_sync()
        camera = self.camera(PARKINGCAM, Dialect.PARKINGCAM)
        self.assertEqual(camera.charset, "gb2312")

    def test_a_list_that_reads_back_wrong_is_sent_again(self) -> None:
        for number in range(5):
            self.site.add(f"粤B{number:05d}")
        camera = self.camera(PARKINGCAM, Dialect.PARKINGCAM)
        held: set[str] = set()
        operations = []
        for _ in range(20):
            command = self.registry.take_whole_reply(camera)
            if command is None:
                break
            body = json.loads(command.whole_reply() or b"{}")
            key = next(iter(body))
            operations.append(key)
            if key == "deleteWhiteListAll":
                held.clear()
                self.sync.whitelist_result(camera, WhitelistResult(operation=WhitelistOperation.DELETE_ALL, ok=True))
            elif key == "addWhiteList":
                held.update(row["carnum"] for row in body[key]["add_data"])
                self.sync.whitelist_result(camera, WhitelistResult(operation=WhitelistOperation.ADD, ok=True))
                if operations.count("addWhiteList") == 1:
                    held.discard("粤B00003")  # edited away on the camera's own page
            elif key == "whiteList":
                self.sync.whitelist_result(
                    camera,
                    WhitelistResult(
                        operation=WhitelistOperation.QUERY,
                        total=len(held),
                        rows=tuple({"carnum": plate} for plate in sorted(held)),
                    ),
                )
        # Read back one short: cleared and sent again, then read back right.
        self.assertEqual(
            operations,
            ["deleteWhiteListAll", "addWhiteList", "whiteList", "deleteWhiteListAll", "addWhiteList", "whiteList"],
        )
        self.assertEqual(held, {f"粤B{n:05d}" for n in range(5)})
        state = self.sync.state(PARKINGCAM)
        assert state is not None and state.describe()["verified"]

    def test_a_plate_deleted_while_its_add_is_on_its_way_is_deleted(self) -> None:
        self.site.add("粤B00001")
        self.site.add("粤B00002")
        camera = self.camera(PARKINGCAM, Dialect.PARKINGCAM)
        clear = self.registry.take_whole_reply(camera)
        assert clear is not None
        self.sync.whitelist_result(
            camera, WhitelistResult(operation=WhitelistOperation.DELETE_ALL, ok=True)
        )
        add = self.registry.take_whole_reply(camera)
        assert add is not None and b"addWhiteList" in (add.whole_reply() or b"")
        # The plate leaves the list while the camera is applying the add.
        self.sync.list_changed(self.site.change(deletes=["粤B00002"]))
        self.sync.whitelist_result(camera, WhitelistResult(operation=WhitelistOperation.ADD, ok=True))
        state = self.sync.state(PARKINGCAM)
        assert state is not None
        self.assertIn("粤B00002", state.work.to_delete)

    def test_refusal_is_sent_again(self) -> None:
        self.site.add("粤B00001")
        camera = self.camera(PARKINGCAM, Dialect.PARKINGCAM)
        first = self.registry.take_whole_reply(camera)
        assert first is not None
        self.sync.whitelist_result(
            camera, WhitelistResult(operation=WhitelistOperation.DELETE_ALL, ok=False)
        )
        state = self.sync.state(PARKINGCAM)
        assert state is not None
        self.assertFalse(state.work.known)
        self.assertIsNone(state.pending)
        self.clock.advance(60)
        again = self.registry.take_whole_reply(camera)
        assert again is not None
        self.assertIn(b"deleteWhiteListAll", again.whole_reply() or b"")

