"""Parking sessions and occupancy: the pairing rules, and the service on the
gateway's real parts (the camera server, the store, the bus, a lane display),
in memory on a Clock.

What matters: an entry and an exit of one plate make one closed session;
an exit with no entry and an entry never closed are kept and flagged, never
invented; refused, repeated and offline reads move nothing; the count
survives a restart (the sessions and the cursor are in the store, and what
was kept after the last write is read again); the operator's correction is an
event; the free spaces reach the lane display's idle text; every bound holds.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from gateway.camera.commands import SendSerial
from gateway.config import parse_config
from gateway.policy.occupancy import SITE, OccupancyBook, Scope, SessionState
from gateway.protocol.board import ShowLines, decode_frame
from gateway.store import EventRecord, EventType, new_event_id
from support.admin import Camera
from support.gateway import plate_body
from support.parts import GatewayParts, build_parts

ENTRANCE = "d85b1269-8f942256"
EXIT = "e10b2d6c8c07b422361457935b518642"
STAFF_IN = "aaaa0000-bbbb1111"
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=timezone.utc)


def book(max_inside: int = 100, *, area: bool = False) -> OccupancyBook:
    scopes = [Scope(SITE, 10, frozenset({"entrance", "exit", "staff in"}))]
    if area:
        scopes.append(Scope("Staff", 2, frozenset({"staff in", "exit"})))
    return OccupancyBook(scopes, max_inside=max_inside, max_stay=timedelta(days=2))


class PairingTests(SynchronousTestCase):
    def test_an_entry_and_an_exit_make_one_closed_session(self) -> None:
        spaces = book()
        opened = spaces.passage(plate="京A1", lane="Entrance", direction="in", at=T0, event_id="e1")
        self.assertEqual([s.state for s in opened], [SessionState.INSIDE])
        self.assertEqual(spaces.count().to_json()["inside"], 1)
        self.assertEqual(spaces.count().free, 9)
        (closed,) = spaces.passage(
            plate="京A1", lane="Exit", direction="out", at=T0 + timedelta(hours=2), event_id="e2"
        )
        self.assertEqual(closed.key, opened[0].key)
        self.assertEqual(closed.state, SessionState.CLOSED)
        self.assertEqual((closed.entry_lane, closed.exit_lane), ("Entrance", "Exit"))
        self.assertEqual(closed.duration_seconds, 7200.0)
        self.assertEqual(spaces.count().inside, 0)

    def test_an_exit_without_entry_is_flagged_and_invents_no_entry(self) -> None:
        spaces = book()
        (session,) = spaces.passage(plate="京B2", lane="Exit", direction="out", at=T0, event_id="e9")
        self.assertEqual(session.state, SessionState.NO_ENTRY)
        self.assertIsNone(session.entered_at)
        self.assertTrue(session.to_json()["flagged"])
        self.assertEqual(spaces.count().inside, 0)  # never below zero

    def test_an_entry_never_closed_is_flagged_when_the_plate_enters_again(self) -> None:
        spaces = book()
        spaces.passage(plate="京C3", lane="Entrance", direction="in", at=T0, event_id="e1")
        written = spaces.passage(
            plate="京C3", lane="Entrance", direction="in", at=T0 + timedelta(hours=1), event_id="e2"
        )
        self.assertEqual([s.state for s in written], [SessionState.NOT_CLOSED, SessionState.INSIDE])
        self.assertIsNone(written[0].left_at)
        self.assertEqual(spaces.count().inside, 1)

    def test_the_longest_stay_and_the_most_cars_are_bounds(self) -> None:
        spaces = book(max_inside=10)
        for n in range(12):
            spaces.passage(
                plate=f"京D{n}", lane="Entrance", direction="in", at=T0 + timedelta(minutes=n),
                event_id=f"e{n}",
            )
        self.assertEqual(spaces.count().tracked, 10)
        self.assertEqual([s.plate for s in spaces.inside()][:2], ["京D2", "京D3"])
        expired = spaces.expire(T0 + timedelta(days=2, minutes=5, seconds=30))
        self.assertEqual([s.plate for s in expired], ["京D2", "京D3", "京D4", "京D5"])
        self.assertTrue(all(s.state is SessionState.NOT_CLOSED for s in expired))
        self.assertEqual(spaces.count().tracked, 6)

    def test_a_correction_shifts_the_count_and_a_car_it_counted_may_leave(self) -> None:
        spaces = book()
        spaces.passage(plate="京E1", lane="Entrance", direction="in", at=T0, event_id="e1")
        self.assertEqual(spaces.correct(SITE, 4).inside, 4)
        self.assertEqual(spaces.count().correction, 3)
        # A car the camera never saw enter leaves: one of the corrected ones.
        spaces.passage(plate="京E9", lane="Exit", direction="out", at=T0, event_id="e2")
        self.assertEqual(spaces.count().inside, 3)
        self.assertEqual(spaces.count().free, 7)

    def test_an_area_counts_only_its_lanes(self) -> None:
        spaces = book(area=True)
        spaces.passage(plate="京F1", lane="Entrance", direction="in", at=T0, event_id="e1")
        spaces.passage(plate="京F2", lane="Staff in", direction="in", at=T0, event_id="e2")
        self.assertEqual(spaces.count(SITE).inside, 2)
        self.assertEqual(spaces.count("Staff").inside, 1)
        self.assertEqual(spaces.count("Staff").free, 1)
        spaces.passage(plate="京F2", lane="Exit", direction="out", at=T0, event_id="e3")
        self.assertEqual((spaces.count(SITE).inside, spaces.count("Staff").inside), (1, 0))


LANES = [
    {"name": "Entrance", "camera": ENTRANCE, "unknown_plate": "allow", "sync_whitelist": False},
    {
        "name": "Exit", "camera": EXIT, "direction": "out", "unknown_plate": "allow",
        "sync_whitelist": False,
    },
    {"name": "Staff in", "camera": STAFF_IN, "sync_whitelist": False},
]


class OccupancyServiceTests(TestCase):
    """The service on the real parts: a plate read through the camera server
    becomes a passage; the store keeps the sessions."""

    async def build(self, state_dir: str | None = None, **occupancy: Any) -> GatewayParts:
        self.state_dir = state_dir or self.mktemp()
        Path(self.state_dir).mkdir(parents=True, exist_ok=True)
        config = parse_config(
            {
                "gateway": {"state_dir": self.state_dir, "timezone": "Asia/Shanghai"},
                "policy": {"duplicate_window_seconds": 0},
                "lane": LANES,
                "occupancy": {"capacity": 10, **occupancy},
            },
            source="<test>",
        )
        self.clock = Clock()
        self.clock.advance(time.time())
        parts = build_parts(config, self.clock)
        self.addCleanup(lambda: Deferred.fromCoroutine(parts.stop()))
        await parts.start()
        self.camera = Camera(parts.camera_server)
        self.plateid = getattr(self, "plateid", 0)
        return parts

    async def read(self, serialno: str, plate: str) -> Any:
        self.plateid += 1
        return await self.camera.post(plate_body(serialno, plate, plateid=self.plateid))

    async def test_entry_and_exit_pair_into_a_kept_session(self) -> None:
        parts = await self.build()
        occupancy = parts.occupancy
        self.assertTrue(occupancy.loaded)
        await self.read(ENTRANCE, "京A12345")
        self.assertEqual(occupancy.to_json()["inside"], 1)
        self.assertEqual(occupancy.to_json()["free"], 9)
        self.clock.advance(600)
        await self.read(EXIT, "京A12345")
        self.assertEqual(occupancy.to_json()["inside"], 0)
        self.clock.advance(1.0)  # the sessions are written once a second at most
        store = parts.store
        assert store is not None
        ((_, session),) = await store.parking_sessions()
        self.assertEqual(session.state, SessionState.CLOSED)
        self.assertEqual(session.plate, "京A12345")
        self.assertEqual((session.entry_lane, session.exit_lane), ("Entrance", "Exit"))
        self.assertAlmostEqual(session.duration_seconds or 0, 600, delta=1)

    async def test_refused_offline_and_repeated_reads_move_nothing(self) -> None:
        parts = await self.build()
        # The staff lane refuses unknown plates (the site's rule).
        await self.read(STAFF_IN, "京Z99999")
        self.plateid += 1
        await self.camera.post(
            plate_body(ENTRANCE, "京Y88888", plateid=self.plateid, isoffline=1)
        )
        self.assertEqual(parts.occupancy.to_json()["inside"], 0)
        self.clock.advance(1.0)
        store = parts.store
        assert store is not None
        self.assertEqual(await store.parking_sessions(), [])

    async def test_a_restart_reads_the_sessions_back_and_what_came_after_the_last_write(self) -> None:
        parts = await self.build()
        await self.read(ENTRANCE, "京A00001")
        await self.read(ENTRANCE, "京A00002")
        self.clock.advance(1.0)
        # Kept as an event, not yet written as a session when the power goes.
        await self.read(ENTRANCE, "京A00003")
        store = parts.store
        assert store is not None
        await store.close()
        parts.root.stopService()  # the store is closed: nothing more is written

        again = await self.build(self.state_dir)
        self.assertEqual(again.occupancy.to_json()["inside"], 3)
        await self.read(EXIT, "京A00001")
        self.assertEqual(again.occupancy.to_json()["inside"], 2)

    async def test_a_correction_is_an_event_and_survives_a_restart(self) -> None:
        parts = await self.build()
        await self.read(ENTRANCE, "京A00001")
        count = await parts.occupancy.correct(SITE, 7, who="olga", role="operator", reason="counted")
        self.assertEqual((count.inside, count.free, count.correction), (7, 3, 6))
        store = parts.store
        assert store is not None
        (event,) = await store.recent_events(limit=1, type=EventType.OCCUPANCY)
        self.assertEqual(event.raw["inside"], 7)
        self.assertEqual(event.raw["previous"], 1)
        self.assertEqual(event.raw["operator"], "olga")
        self.assertEqual(event.raw["reason"], "counted")
        self.clock.advance(1.0)
        await parts.stop()
        again = await self.build(self.state_dir)
        self.assertEqual(again.occupancy.to_json()["inside"], 7)

    async def operator_event(
        self, parts: GatewayParts, kind: EventType, plate: str, lane: str, answers: str | None
    ) -> None:
        """What the booth keeps when it lets a car through (gateway.admin.booth)."""
        now = datetime.fromtimestamp(self.clock.seconds(), tz=timezone.utc)
        await parts.recorder.keep(
            EventRecord(
                id=new_event_id("manual" if kind is EventType.MANUAL_ENTRY else "open"),
                type=kind,
                received_at=now,
                camera=None,
                lane=lane,
                plate=plate,
                decision_open=True,
                decision_reason="visitor",
                decision_source="operator",
                raw={"operator": {"name": "olga", "role": "operator"}, "reason": "visitor",
                     **({"answers": answers} if answers else {})},
                answers=answers,
            )
        )

    async def test_a_car_the_booth_lets_through_is_a_passage_once(self) -> None:
        parts = await self.build()
        # Refused at the staff lane's rule: the camera's read moves nothing.
        await self.read(STAFF_IN, "京Z99999")
        self.assertEqual(parts.occupancy.to_json()["inside"], 0)
        store = parts.store
        assert store is not None
        (read,) = await store.recent_events(limit=1, type=EventType.PLATE)
        # Opened for by an operator, then its plate corrected and decided
        # again (the barrier opening once more): one car.
        await self.operator_event(parts, EventType.OPERATOR_OPEN, "京Z99999", "Staff in", read.id)
        await self.operator_event(
            parts, EventType.PLATE_CORRECTION, "京Z99998", "Staff in", read.id
        )
        self.assertEqual(parts.occupancy.to_json()["inside"], 1)
        # A car with no readable plate, let in by hand with its plate typed.
        await self.operator_event(parts, EventType.MANUAL_ENTRY, "京M00001", "Entrance", None)
        self.assertEqual(parts.occupancy.to_json()["inside"], 2)
        # And it leaves through a camera like any car.
        await self.read(EXIT, "京M00001")
        self.assertEqual(parts.occupancy.to_json()["inside"], 1)

    async def test_areas_are_counted_apart(self) -> None:
        parts = await self.build(
            lanes=["Entrance", "Exit"],
            areas=[{"name": "Staff", "lanes": ["Staff in", "Exit"], "capacity": 3}],
        )
        await self.read(ENTRANCE, "京A00001")
        self.assertEqual(parts.occupancy.to_json()["areas"][0]["inside"], 0)
        self.assertEqual(parts.occupancy.to_json()["inside"], 1)
        self.assertEqual(parts.occupancy.to_json()["areas"][0]["free"], 3)


class DisplayFreeTests(TestCase):
    async def test_the_free_spaces_reach_the_idle_text_of_a_lane_display(self) -> None:
        state_dir = self.mktemp()
        Path(state_dir).mkdir(parents=True)
        config = parse_config(
            {
                "gateway": {"state_dir": state_dir, "timezone": "Asia/Shanghai"},
                "lane": [
                    {
                        **LANES[0],
                        "display": {"via": "camera", "dwell_seconds": 5, "free_spaces": 99},
                    },
                    LANES[1],
                ],
                "occupancy": {"capacity": 5},
            },
            source="<test>",
        )
        clock = Clock()
        clock.advance(time.time())
        parts = build_parts(config, clock)
        self.addCleanup(lambda: Deferred.fromCoroutine(parts.stop()))
        await parts.start()
        clock.advance(0)
        camera = Camera(parts.camera_server)

        def idle_lines() -> list[str]:
            # What the camera is to write to its board in its next reply.
            camera = parts.registry.get(ENTRANCE)
            assert camera is not None
            lines: list[str] = []
            for command in camera.commands:
                if isinstance(command, SendSerial):
                    shown = decode_frame(command.data).command
                    if isinstance(shown, ShowLines):
                        lines.extend(line.text for line in shown.lines)
            return lines

        self.assertIn("剩余车位 5", idle_lines())
        await camera.post(plate_body(ENTRANCE, "京A12345", plateid=1))
        clock.advance(0)
        # The board shows the welcome first, then its idle text with the new count.
        self.assertNotIn("剩余车位 4", idle_lines())
        clock.advance(5.1)
        self.assertIn("剩余车位 4", idle_lines())
        await camera.post(plate_body(EXIT, "京A12345", plateid=2))
        clock.advance(0)
        self.assertIn("剩余车位 5", idle_lines())
