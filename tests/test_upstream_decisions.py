"""Synchronous decisions: the cloud's answer within the deadline, the
fallback when it is slow or away, and decisions cached with ``cache_until``
(kept in the store, served while the cloud cannot be asked, expiring)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from twisted.internet.defer import Deferred

from gateway.policy.decision import CLOUD
from gateway.store import Store
from gateway.upstream.decisions import CloudDecision
from gateway.upstream.events import event_json
from support.upstream import UpstreamTestCase, plate_event


async def no_cached_rows(store: Store) -> bool:
    return await store.cloud_decisions(datetime(1970, 1, 2, tzinfo=timezone.utc)) == []


async def cached_rows(store: Store, count: int) -> bool:
    return len(await store.cloud_decisions(datetime(1970, 1, 2, tzinfo=timezone.utc))) == count


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat()


class DecisionTests(UpstreamTestCase):
    async def test_answer_in_time_is_the_decision(self) -> None:
        service = await self.start_upstream()
        self.cloud.decide_answer = {
            "open": True,
            "display": ["京A12345", "Welcome"],
            "voice": "Welcome",
            "reason": "season_ticket",
        }
        record = plate_event("cam-1", 1, self.clock, license="京A12345")
        event = event_json(record)
        decision = await service.decider.decide(event, deadline=self.clock.seconds() + 2.0)
        self.assertEqual(
            decision,
            CloudDecision(
                open=True,
                reason="season_ticket",
                display=("京A12345", "Welcome"),
                voice="Welcome",
            ),
        )
        assert decision is not None
        as_policy = decision.to_decision("京A12345")
        self.assertEqual((as_policy.open, as_policy.source), (True, CLOUD))
        (request,) = self.cloud.requests_to("POST", "/decide")
        self.assertEqual(json.loads(request.body), {"gateway": "site-7", "event": event})
        self.assertEqual(self.cloud.bad_signatures, [])
        # Without cache_until nothing is kept for later.
        self.assertIsNone(service.decider.cached("京A12345", "lane-cam-1"))

    async def test_slow_cloud_falls_back_within_the_deadline_and_cancels(self) -> None:
        service = await self.start_upstream(decision_timeout_seconds=1.5)
        self.cloud.decide_answer = Deferred()  # never answers
        asked = Deferred.fromCoroutine(
            service.decider.decide(
                {"plate": "京B00001", "lane": "Entry"}, deadline=self.clock.seconds() + 1.0
            )
        )
        await self.until(lambda: bool(self.cloud.requests_to("POST", "/decide")), "the request")
        self.clock.advance(0.999)
        self.assertFalse(asked.called)
        self.clock.advance(0.001)  # the deadline, before decision_timeout_seconds
        self.assertTrue(asked.called)
        self.assertIsNone(await asked)
        await self.until(lambda: self.cloud.decide_cancelled == 1, "the request to be cut")

        # Without a deadline of its own, decision_timeout_seconds bounds it.
        asked = Deferred.fromCoroutine(service.decider.decide({"plate": "京B00002"}))
        await self.until(lambda: len(self.cloud.requests_to("POST", "/decide")) == 2, "again")
        self.clock.advance(1.499)
        self.assertFalse(asked.called)
        self.clock.advance(0.001)
        self.assertIsNone(await asked)
        # No time left: not asked at all.
        self.assertIsNone(
            await service.decider.decide({"plate": "京B00003"}, deadline=self.clock.seconds())
        )
        self.assertEqual(len(self.cloud.requests_to("POST", "/decide")), 2)

    async def test_cached_decision_serves_while_the_cloud_is_away_then_expires(self) -> None:
        service = await self.start_upstream()
        until = self.clock.seconds() + 900
        self.cloud.decide_answer = {
            "open": True,
            "reason": "paid",
            "display": ["Paid", "Goodbye"],
            "cache_until": iso(until),
        }
        event = {"plate": "京C55555", "lane": "Exit"}
        fresh = await service.decider.decide(event)
        assert fresh is not None
        self.assertFalse(fresh.cached)
        self.assertEqual(fresh.cache_until, datetime.fromtimestamp(until, tz=timezone.utc))
        # Not for another lane or plate.
        self.assertIsNone(service.decider.cached("京C55555", "Entry"))
        self.assertIsNone(service.decider.cached("京C55556", "Exit"))

        await self.cloud.go_down()
        away = await service.decider.decide(event)
        assert away is not None
        self.assertTrue(away.cached)
        self.assertEqual(
            (away.open, away.reason, away.display), (True, "paid", ("Paid", "Goodbye"))
        )
        self.assertEqual(away.to_decision("京C55555").note, "cached cloud decision")

        # The gateway restarts during the outage: the cache is in the store.
        await self.stop_upstream(service)
        service = await self.start_upstream()
        await self.until(lambda: len(service.decider) == 1, "the cache to load")
        self.assertEqual(service.decider.cached("京C55555", "Exit"), away)
        self.clock.advance(899)
        self.assertIsNotNone(service.decider.cached("京C55555", "Exit"))
        self.clock.advance(1)
        self.assertIsNone(service.decider.cached("京C55555", "Exit"))
        self.assertIsNone(await service.decider.decide(event))
        store = await self.open_store()
        self.clock.advance(60)  # housekeeping removes it from the store too
        await self.settle(lambda: no_cached_rows(store), "the expired row to go")

    async def test_a_local_change_of_the_plate_ends_its_cached_decisions(self) -> None:
        service = await self.start_upstream()
        self.cloud.decide_answer = {"open": True, "cache_until": iso(self.clock.seconds() + 600)}
        for lane in ("Entry", "Exit"):
            await service.decider.decide({"plate": "京E12345", "lane": lane})
        await service.decider.decide({"plate": "京E99999", "lane": "Exit"})
        store = await self.open_store()
        await self.settle(lambda: cached_rows(store, 3), "the three cached rows")
        service.decider.forget(["京e·12345"])
        # On every lane, at once in memory; the other plate's stays.
        self.assertIsNone(service.decider.cached("京E12345", "Entry"))
        self.assertIsNone(service.decider.cached("京E12345", "Exit"))
        self.assertIsNotNone(service.decider.cached("京E99999", "Exit"))
        await self.settle(lambda: cached_rows(store, 1), "the forgotten rows to leave the store")
        await self.cloud.go_down()
        self.assertIsNone(await service.decider.decide({"plate": "京E12345", "lane": "Exit"}))

    async def test_a_change_of_one_region_ends_the_multi_region_reads_cached_decision(
        self,
    ) -> None:
        service = await self.start_upstream()
        self.cloud.decide_answer = {"open": True, "cache_until": iso(self.clock.seconds() + 600)}
        await service.decider.decide({"plate": "粤ZJ068澳|MX7742|ZM127", "lane": "Exit"})
        await service.decider.decide({"plate": "粤ZJ068澳|MX7000|ZM100", "lane": "Exit"})
        store = await self.open_store()
        await self.settle(lambda: cached_rows(store, 2), "the two cached rows")
        service.decider.forget(["MX7742"])
        self.assertIsNone(service.decider.cached("粤ZJ068澳|MX7742|ZM127", "Exit"))
        self.assertIsNotNone(service.decider.cached("粤ZJ068澳|MX7000|ZM100", "Exit"))
        await self.settle(lambda: cached_rows(store, 1), "the forgotten row to leave the store")

    async def test_a_new_answer_without_cache_until_ends_the_cached_one(self) -> None:
        service = await self.start_upstream()
        event = {"plate": "京D12345", "lane": "Exit"}
        self.cloud.decide_answer = {"open": True, "cache_until": iso(self.clock.seconds() + 600)}
        await service.decider.decide(event)
        self.assertIsNotNone(service.decider.cached("京D12345", "Exit"))
        self.cloud.decide_answer = {"open": False, "reason": "unpaid"}
        answer = await service.decider.decide(event)
        self.assertEqual(answer, CloudDecision(open=False, reason="unpaid"))
        self.assertIsNone(service.decider.cached("京D12345", "Exit"))
        store = await self.open_store()
        await self.settle(lambda: no_cached_rows(store), "the stored decision to go")

    async def test_unusable_answers_fall_back(self) -> None:
        service = await self.start_upstream()
        for answer in (
            {"open": "yes"},
            ["open"],
            {"open": True, "cache_until": "tomorrow"},
            {"open": True, "voice": "x" * 70000},  # over the 64 KiB an answer may have
        ):
            self.cloud.decide_answer = answer
            self.assertIsNone(await service.decider.decide({"plate": "京E00001"}))
        self.cloud.refuse_credentials = True
        self.assertIsNone(await service.decider.decide({"plate": "京E00001"}))
        self.assertEqual(self.log.count("did not decide in time"), 1)
        self.assertEqual(service.decider.asked - service.decider.answered, 5)
