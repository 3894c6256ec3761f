"""Plates as the field reads them: multi-region plates matched on any of their regions
(at the 100 000-plate scale, one lookup per region), no-plate spellings and their
mis-decoded forms that never open, whatever the lane or the cloud says. In memory."""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from gateway import protocol
from gateway.gate import CloudAnswer, Gate, GateLane, PlateRead
from gateway.policy.decision import BLACKLIST, NO_PLATE, UNKNOWN, WHITELIST, PlateQuery
from gateway.policy.plates import (
    NO_PLATE_MISREADINGS,
    NO_PLATE_READS,
    NO_PLATE_SPELLINGS,
    is_no_plate,
    normalise_plate,
    plate_regions,
)
from gateway.policy.whitelist import (
    MAX_REGIONS,
    PlateMatch,
    WhitelistEntry,
    WhitelistIndex,
    WhitelistPolicy,
)
from gateway.store import EventRecord, EventType
from gateway.upstream.decisions import CloudDecision

UTC = timezone.utc
AT = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
THREE_REGIONS = "粤ZJ068澳|MX7742|ZM127"
PROVINCES = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"
CHARACTERS = LETTERS + "0123456789"


def query(license: str, lane: str | None = "Entrance", has_plate: bool = True) -> PlateQuery:
    return PlateQuery(license=license, has_plate=has_plate, at=AT, lane=lane)


def policy(*entries: WhitelistEntry, **options: Any) -> WhitelistPolicy:
    return WhitelistPolicy(WhitelistIndex.from_entries(entries), tz=UTC, **options)


# --------------------------------------------------------------------------- normalisation


def test_multi_region_plate_is_kept_whole_region_by_region() -> None:
    assert normalise_plate(THREE_REGIONS) == THREE_REGIONS
    assert normalise_plate("粤zj068澳 | mx·7742 ｜zm127") == THREE_REGIONS
    assert normalise_plate("|粤ZJ068澳||") == "粤ZJ068澳"
    assert plate_regions(THREE_REGIONS) == ("粤ZJ068澳", "MX7742", "ZM127")
    assert plate_regions("粤ZJ068澳|无") == ("粤ZJ068澳",)
    assert plate_regions("京A12345") == ("京A12345",)
    assert plate_regions("无") == ()


@given(st.text(alphabet=st.sampled_from(["|", "｜", " ", "_", "a", "粤", "无", "\x00", "Ｚ"])))
def test_normalise_with_regions_is_idempotent(text: str) -> None:
    once = normalise_plate(text)
    assert normalise_plate(once) == once
    assert "||" not in once and not once.startswith("|") and not once.endswith("|")


def test_policy_and_protocol_share_one_no_plate_list() -> None:
    # policy and protocol import nothing of each other: the lists are kept equal here.
    assert NO_PLATE_SPELLINGS == protocol.NO_PLATE_SPELLINGS
    assert NO_PLATE_MISREADINGS == protocol.NO_PLATE_MISREADINGS
    assert NO_PLATE_READS == protocol.NO_PLATE_LICENSES


@pytest.mark.parametrize("license", sorted(NO_PLATE_READS))
def test_every_listed_no_plate_read_is_no_plate_on_both_sides(license: str) -> None:
    assert is_no_plate(license)
    assert protocol.is_no_plate_license(license)
    assert is_no_plate(f" {license.lower()} ")
    assert is_no_plate(f"{license}|{license}")


@given(st.text(max_size=12))
def test_protocol_never_calls_a_plate_what_the_policy_calls_no_plate(text: str) -> None:
    # The gate asks the policy too; the camera server's reading must not be looser.
    if protocol.is_no_plate_license(text):
        assert is_no_plate(text)


@pytest.mark.parametrize("plate", ["京A12345", "无A12345", "A", "MX7742", THREE_REGIONS])
def test_plates_are_not_no_plate_reads(plate: str) -> None:
    assert not is_no_plate(plate)
    assert not protocol.is_no_plate_license(plate)


def test_control_characters_never_reach_a_plate() -> None:
    assert normalise_plate("粤B\x0012345") == "粤B12345"
    assert normalise_plate("京A12345\r\n\x1b") == "京A12345"


# --------------------------------------------------------------------------- multi-region matching


@pytest.mark.parametrize("listed", ["粤ZJ068澳", "MX7742", "ZM127"])
def test_a_three_region_read_matches_any_of_its_regions(listed: str) -> None:
    decision = policy(WhitelistEntry(listed)).decide(query(THREE_REGIONS))
    assert (decision.open, decision.reason, decision.plate) == (True, WHITELIST, THREE_REGIONS)


def test_a_listed_whole_license_matches_the_whole_read() -> None:
    decision = policy(WhitelistEntry(THREE_REGIONS)).decide(query(THREE_REGIONS))
    assert (decision.open, decision.reason) == (True, WHITELIST)


def test_a_region_alone_does_not_match_a_different_car() -> None:
    decision = policy(WhitelistEntry("MX7742")).decide(query("粤ZJ068澳|MX7743|ZM127"))
    assert (decision.open, decision.reason) == (False, UNKNOWN)


def test_a_blacklisted_region_wins_over_an_allowed_one_equally_close() -> None:
    gate = policy(WhitelistEntry("粤ZJ068澳"), WhitelistEntry("MX7742", blacklist=True))
    decision = gate.decide(query(THREE_REGIONS))
    assert (decision.open, decision.reason) == (False, BLACKLIST)


def test_an_exact_region_wins_over_a_fuzzy_match_of_another() -> None:
    gate = policy(
        WhitelistEntry("粤ZJ068澳"), WhitelistEntry("MX7743", blacklist=True), max_plate_distance=1
    )
    assert gate.decide(query(THREE_REGIONS)).reason == WHITELIST
    # Without the exact region, the fuzzy blacklisted one is the closest match.
    assert gate.decide(query("粤ZJ999澳|MX7742")).reason == BLACKLIST


def test_regions_are_matched_with_the_same_tolerance_as_plates() -> None:
    gate = policy(WhitelistEntry("MX7742"), max_plate_distance=1)
    assert gate.decide(query("粤ZJ068澳|MX7748|ZM127")).reason == WHITELIST  # one edit
    assert gate.decide(query("粤ZJ068澳|MX7O42|ZM127")).reason == WHITELIST  # confusable


def test_a_no_plate_region_is_not_looked_up() -> None:
    gate = policy(WhitelistEntry("粤ZJ068澳"))
    assert gate.decide(query("粤ZJ068澳|_无_")).reason == WHITELIST
    assert gate.decide(query("_无_|_Œﬁ_")).reason == NO_PLATE


def test_closest_orders_matches_by_plate_and_dedupes() -> None:
    index = WhitelistIndex.from_entries([WhitelistEntry("ZM127"), WhitelistEntry("MX7742")])
    tier = index.closest("ZM127|MX7742|ZM127")
    assert [match.entry.plate for match in tier] == ["MX7742", "ZM127"]
    assert all(match.exact for match in tier)
    assert index.closest("京A12345") == ()


class CountingIndex(WhitelistIndex):
    """An index that counts its lookups (one per key searched)."""

    lookups: list[str]

    def _search(self, read: str, max_distance: int) -> Iterator[tuple[PlateMatch, ...]]:
        self.lookups.append(read)
        return super()._search(read, max_distance)


def random_plate(rng: random.Random) -> str:
    return (
        rng.choice(PROVINCES)
        + rng.choice(LETTERS)
        + "".join(rng.choice(CHARACTERS) for _ in range(5))
    )


@pytest.fixture(scope="module")
def site_list() -> tuple[CountingIndex, list[str]]:
    """100 000 plates, indexed for one edit of tolerance."""
    rng = random.Random(16)
    plates: set[str] = set()
    while len(plates) < 100_000:
        plates.add(random_plate(rng))
    listed = sorted(plates)
    index = CountingIndex.from_entries((WhitelistEntry(p) for p in listed), max_distance=1)
    assert isinstance(index, CountingIndex)
    index.lookups = []
    return index, listed


def test_multi_region_reads_at_scale_cost_one_lookup_per_region(
    site_list: tuple[CountingIndex, list[str]],
) -> None:
    index, listed = site_list
    gate = WhitelistPolicy(index, tz=UTC, max_plate_distance=1)
    rng = random.Random(7)
    for plate in rng.sample(listed, 200):
        # The listed plate in any position among foreign regions.
        regions = ["MX7742", "ZM127"]
        regions.insert(rng.randrange(3), plate)
        index.lookups.clear()
        decision = gate.decide(query("|".join(regions)))
        assert (decision.open, decision.reason) == (True, WHITELIST), regions
        assert len(index.lookups) == 1 + len(regions)  # the whole read, then each region
    index.lookups.clear()
    decision = gate.decide(query("|".join(["MX7742"] * 50)))
    assert decision.reason == UNKNOWN
    assert len(index.lookups) == 1 + MAX_REGIONS


def test_a_single_plate_read_is_one_lookup(site_list: tuple[CountingIndex, list[str]]) -> None:
    index, listed = site_list
    gate = WhitelistPolicy(index, tz=UTC, max_plate_distance=1)
    index.lookups.clear()
    assert gate.decide(query(listed[123])).reason == WHITELIST
    assert index.lookups == [listed[123]]


def test_a_very_long_read_is_not_searched_fuzzily(
    site_list: tuple[CountingIndex, list[str]],
) -> None:
    index, _ = site_list
    long_read = "京A" + "1" * 5000
    assert list(index.search(long_read, 1)) == []


# --------------------------------------------------------------------------- the gate


class Cloud:
    """A cloud that would open everything."""

    def __init__(self) -> None:
        self.asked: list[EventRecord] = []

    async def decide(self, record: EventRecord, deadline: float) -> CloudAnswer | None:
        self.asked.append(record)
        return CloudDecision(open=True, reason="paid")

    def forget(self, plates: Iterable[str]) -> None:
        pass


def record(plate: str) -> EventRecord:
    return EventRecord(id="e1", type=EventType.PLATE, received_at=AT, plate=plate)


def plate_read(license: str, has_plate: bool, lane: GateLane | None) -> PlateRead:
    return PlateRead(
        license=license,
        has_plate=has_plate,
        offline=False,
        camera="cam-1",
        lane=lane,
        received_at=AT,
        record=record,
    )


class NoPlateGateTests(TestCase):
    def gate(self, cloud: Cloud | None = None) -> Gate:
        local = WhitelistPolicy(
            WhitelistIndex([WhitelistEntry("京A12345")]), tz=UTC, unknown_plate="allow"
        )
        return Gate(clock=Clock(), local=local, duplicate_window=0, cloud=cloud)

    async def test_no_plate_reads_never_open_an_allow_lane(self) -> None:
        gate = self.gate()
        lane = GateLane(name="Exit")
        for license in sorted(NO_PLATE_READS) + ["_无_|_нч_", "\x00_无_\x00"]:
            # Even when the camera (or an older parser) called it a plate.
            for has_plate in (True, False):
                verdict = await gate.decide(plate_read(license, has_plate, lane))
                assert not verdict.decision.open, (license, has_plate)
                assert verdict.decision.reason == NO_PLATE, license
        # A plate on the same lane does open (unknown plates are allowed there).
        verdict = await gate.decide(plate_read("京B99999", True, lane))
        assert (verdict.decision.open, verdict.decision.reason) == (True, UNKNOWN)

    async def test_no_plate_reads_are_not_sent_to_the_cloud(self) -> None:
        cloud = Cloud()
        gate = self.gate(cloud)
        lane = GateLane(name="Entrance", ask_cloud=True)
        for license in ("_Œﬁ_", "_нч_", "无牌", "未识别"):
            verdict = await gate.decide(plate_read(license, True, lane))
            assert (verdict.decision.open, verdict.decision.reason) == (False, NO_PLATE)
        assert cloud.asked == []
        verdict = await gate.decide(plate_read(THREE_REGIONS, True, lane))
        assert verdict.decision.open
        assert [asked.plate for asked in cloud.asked] == [THREE_REGIONS]

    async def test_a_policy_that_would_open_a_no_plate_read_is_overruled(self) -> None:
        class OpensEverything:
            def decide(self, query: PlateQuery) -> Any:
                from gateway.policy.decision import Decision

                return Decision(open=True, reason="whitelist")

        gate = Gate(clock=Clock(), local=OpensEverything(), duplicate_window=0)
        verdict = await gate.decide(plate_read("_Œﬁ_", True, GateLane(name="Exit")))
        assert (verdict.decision.open, verdict.decision.reason) == (False, NO_PLATE)


def test_every_no_plate_text_the_simulator_sends_is_no_plate() -> None:
    from gateway.simulator.plates import NO_PLATE_TEXTS

    for text in NO_PLATE_TEXTS:
        assert is_no_plate(text), text
        assert protocol.is_no_plate_license(text), text
