"""The gate: the order in which the rules, the local blacklist, the cloud and
the local list decide a live read, in memory (a Clock, no sockets)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from gateway.gate import CloudAnswer, Gate, GateLane, PlateRead
from gateway.policy.whitelist import (
    PlateListChange,
    WhitelistEntry,
    WhitelistIndex,
    WhitelistPolicy,
)
from gateway.store import EventRecord, EventType
from gateway.upstream.decisions import CloudDecision

UTC = timezone.utc
AT = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
CLOUD_LANE = GateLane(name="Entrance", ask_cloud=True)


class Cloud:
    """A cloud that answers every read with ``answer`` (None: no answer in time)."""

    def __init__(self, answer: CloudDecision | None) -> None:
        self.answer = answer
        self.asked: list[EventRecord] = []
        self.forgotten: list[frozenset[str]] = []

    async def decide(self, record: EventRecord, deadline: float) -> CloudAnswer | None:
        self.asked.append(record)
        return self.answer

    def forget(self, plates: Iterable[str]) -> None:
        self.forgotten.append(frozenset(plates))


def record(plate: str) -> EventRecord:
    return EventRecord(
        id="e1", type=EventType.PLATE, received_at=AT, camera="cam-1", lane="Entrance", plate=plate
    )


def read(license: str, lane: GateLane | None = CLOUD_LANE, offline: bool = False) -> PlateRead:
    return PlateRead(
        license=license,
        has_plate=True,
        offline=offline,
        camera="cam-1",
        lane=lane,
        received_at=AT,
        record=record,
    )


class GateTests(TestCase):
    def gate(self, cloud: Cloud | None, *entries: WhitelistEntry, window: float = 0) -> Gate:
        self.clock = Clock()
        policy = WhitelistPolicy(WhitelistIndex(entries), tz=UTC)
        return Gate(clock=self.clock, local=policy, duplicate_window=window, cloud=cloud)

    async def test_the_local_blacklist_wins_and_the_cloud_is_not_asked(self) -> None:
        cloud = Cloud(CloudDecision(open=True, reason="paid"))
        gate = self.gate(cloud, WhitelistEntry("京B99999", blacklist=True))
        verdict = await gate.decide(read("京B99999"))
        self.assertEqual((verdict.decision.open, verdict.decision.reason), (False, "blacklist"))
        self.assertEqual(cloud.asked, [])

    async def test_a_lane_may_let_the_cloud_overrule_the_blacklist(self) -> None:
        cloud = Cloud(CloudDecision(open=True, reason="paid", display=("Welcome",)))
        gate = self.gate(cloud, WhitelistEntry("京B99999", blacklist=True))
        lane = GateLane(name="Entrance", ask_cloud=True, cloud_overrides_blacklist=True)
        verdict = await gate.decide(read("京B99999", lane))
        self.assertEqual(
            (verdict.decision.open, verdict.decision.reason, verdict.decision.source),
            (True, "paid", "cloud"),
        )
        self.assertEqual(verdict.display, ("Welcome",))
        self.assertEqual(cloud.asked[0].plate, "京B99999")

    async def test_the_cloud_decides_when_it_answers_else_the_local_list(self) -> None:
        cloud = Cloud(CloudDecision(open=False, reason="unpaid"))
        gate = self.gate(cloud, WhitelistEntry("京A12345"))
        verdict = await gate.decide(read("京A12345"))
        self.assertEqual((verdict.decision.open, verdict.decision.reason), (False, "unpaid"))
        cloud.answer = None
        verdict = await gate.decide(read("京A12345"))
        self.assertEqual((verdict.decision.open, verdict.decision.reason), (True, "whitelist"))
        # A lane that does not ask the cloud never waits for it.
        asked = len(cloud.asked)
        verdict = await gate.decide(read("京A12345", GateLane(name="Exit")))
        self.assertEqual(len(cloud.asked), asked)

    async def test_offline_records_never_open_and_never_ask(self) -> None:
        cloud = Cloud(CloudDecision(open=True))
        gate = self.gate(cloud, WhitelistEntry("京A12345"))
        verdict = await gate.decide(read("京A12345", offline=True))
        self.assertEqual((verdict.decision.open, verdict.act), (False, False))
        self.assertEqual(cloud.asked, [])

    async def test_a_local_change_ends_the_clouds_cached_decisions_for_its_plates(self) -> None:
        cloud = Cloud(None)
        gate = self.gate(cloud)
        gate.plate_list_changed(
            PlateListChange(upserts=(WhitelistEntry("京A12345"),), deletes=("京B22222",))
        )
        self.assertEqual(cloud.forgotten, [frozenset({"京A12345", "京B22222"})])
        gate.plate_list_changed(PlateListChange())
        self.assertEqual(len(cloud.forgotten), 1)

    async def test_a_repeat_is_recorded_but_does_not_open_again(self) -> None:
        gate = self.gate(None, WhitelistEntry("京A12345"), window=10)
        first = await gate.decide(read("京A12345"))
        self.assertTrue(first.act and first.decision.open)
        # Not kept (the store refused it): the camera's re-send is no repeat.
        again = await gate.decide(read("京A12345"))
        self.assertFalse(again.repeat)
        gate.kept(again)
        self.clock.advance(3)
        repeat = await gate.decide(read("京A12345"))
        self.assertEqual(
            (repeat.repeat, repeat.act, repeat.decision.open, repeat.decision.reason),
            (True, False, False, "duplicate"),
        )
        self.clock.advance(10)
        later = await gate.decide(read("京A12345"))
        self.assertTrue(later.act and later.decision.open)
