"""The sync feed: plate list changes applied to the sink (and to the real site
plate list), commands submitted, bad entries and commands skipped and
reported, the cursor persisted across restarts, ``more`` fetched at once."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

from twisted.internet import reactor as global_reactor

from gateway.platelist import PlateList
from gateway.policy.codec import EntryCodec
from gateway.policy.decision import PlateQuery
from gateway.policy.whitelist import WhitelistEntry
from gateway.upstream.link import LinkState
from support.threads import inline_threads
from support.upstream import UpstreamTestCase

reactor: Any = global_reactor

PAGES: dict[str | None, dict[str, Any]] = {
    None: {
        "cursor": "c1",
        "more": True,
        "whitelist": {
            "replace": False,
            "upsert": [
                {"plate": "京A11111", "note": "staff"},
                {
                    "plate": "京a·22222",
                    "enabled": True,
                    "blacklist": False,
                    "valid_from": "2025-01-01T00:00:00+08:00",
                    "valid_until": "2025-12-31T23:59:59Z",
                    "lanes": ["Entry"],
                    "hours": "Mon-Fri 07:00-19:00",
                    "note": "tenant",
                },
                {"note": "no plate at all"},
                {"plate": "京A33333", "valid_until": "31/12/2025"},
            ],
            "delete": [],
        },
        "commands": [
            {"id": "k1", "camera": "cam-1", "type": "open"},
            {"id": "k2", "camera": "cam-2", "type": "serial", "channel": 1, "data": "AAEC/w=="},
            {"id": "k3", "camera": "cam-1", "type": "display", "lines": ["Hello"], "voice": "Hi"},
            {"id": "k4", "camera": "cam-9", "type": "snapshot"},
            {"id": "k5", "camera": "cam-1", "type": "explode"},
            {
                "id": "k6",
                "camera": "cam-1",
                "type": "trigger",
                "expires_at": "2025-03-01T11:00:00Z",
            },
        ],
    },
    "c1": {
        "cursor": "c2",
        "more": True,
        "whitelist": {"upsert": [{"plate": "京C33333"}], "delete": ["京A11111", 7]},
        # The same command again (a page fetched twice): submitted once.
        "commands": [{"id": "k1", "camera": "cam-1", "type": "open"}],
    },
    "c2": {
        "cursor": "c3",
        "more": False,
        "whitelist": {
            "replace": True,
            "upsert": [{"plate": "京D44444"}, {"plate": "京E55555", "blacklist": True}],
        },
    },
    "c3": {"cursor": "c3", "more": False},
}


class SyncFeedTests(UpstreamTestCase):
    async def test_pages_apply_in_order_and_the_cursor_survives_a_restart(self) -> None:
        self.cloud.sync_pages = lambda cursor: PAGES[cursor]
        service = await self.start_upstream()
        await self.until(lambda: service.sync.cursor == "c3", "the three pages")
        # "more": fetched back to back, without waiting for the interval.
        cursors = [r.query.get("cursor") for r in self.cloud.requests_to("GET", "/sync")]
        self.assertEqual(cursors, [None, "c1", "c2"])
        self.assertTrue(
            all(r.query["gateway"] == "site-7" for r in self.cloud.requests_to("GET", "/sync"))
        )
        self.assertEqual(
            self.whitelist.calls, [("upsert", 2), ("upsert", 1), ("delete", 1), ("replace", 2)]
        )
        self.assertEqual(set(self.whitelist.entries), {"京D44444", "京E55555"})
        self.assertTrue(self.whitelist.entries["京E55555"].blacklist)
        self.assertEqual(self.log.count("Plate list entry from the cloud skipped"), 3)

        submitted = {command.id: command.fields for command in self.commands.submitted}
        self.assertEqual(sorted(submitted), ["k1", "k2", "k3"])
        self.assertEqual(submitted["k1"]["channel"], None)
        self.assertEqual((submitted["k2"]["channel"], submitted["k2"]["data"]), (1, b"\0\1\2\xff"))
        self.assertEqual((submitted["k3"]["lines"], submitted["k3"]["voice"]), (("Hello",), "Hi"))

        # Refused, malformed and expired commands come back as command results.
        await self.settle(self.outbox_empty, "the command results")
        results = {
            event["command"]["id"]: event["command"]
            for event in self.cloud.events.values()
            if event["type"] == "command_result"
        }
        self.assertEqual(sorted(results), ["k4", "k5", "k6"])
        self.assertEqual(results["k4"]["outcome"], "rejected")
        self.assertIn("no camera cam-9", results["k4"]["detail"])
        self.assertEqual(results["k5"]["outcome"], "rejected")
        self.assertIn('"type" must be one of', results["k5"]["detail"])
        self.assertEqual(results["k6"]["outcome"], "expired")

        store = await self.open_store()
        self.assertEqual(await store.kv_get("upstream.sync_cursor"), "c3")
        self.clock.advance(10)  # the interval
        await self.until(lambda: len(self.cloud.requests_to("GET", "/sync")) == 4, "the next poll")
        await self.stop_upstream(service)

        service = await self.start_upstream()
        await self.until(lambda: len(self.cloud.requests_to("GET", "/sync")) == 5, "after restart")
        self.assertEqual(self.cloud.requests_to("GET", "/sync")[-1].query["cursor"], "c3")
        self.assertEqual(self.cloud.requests_to("GET", "/sync")[-1].body, b"")
        self.assertEqual(self.cloud.bad_signatures, [])

    async def test_an_unusable_page_is_fetched_again_later_without_moving_the_cursor(
        self,
    ) -> None:
        pages: list[dict[str, Any]] = [{"more": False}, {"cursor": "x1", "more": False}]
        self.cloud.sync_pages = lambda cursor: pages.pop(0) if pages else {"cursor": "x1"}
        service = await self.start_upstream()
        await self.until(lambda: service.link.state is LinkState.BACKING_OFF, "the bad page")
        self.assertIn("unusable answer", str(service.link.status.last_error))
        self.assertIsNone(service.sync.cursor)
        self.clock.advance(10)
        await self.until(lambda: service.sync.cursor == "x1", "the good page")
        self.assertEqual(service.link.state, LinkState.UP)


class SitePlateListTests(UpstreamTestCase):
    """The feed into the real site plate list (the lead's wiring)."""

    async def test_upsert_delete_and_replace_reach_the_site_plate_list(self) -> None:
        await self.open_store()
        assert self.store_service is not None
        site = PlateList(
            reactor,
            self.store_service,
            codec=EntryCodec(tz=ZoneInfo("Asia/Shanghai")),
            unknown_plate="deny",
            lane_overrides={},
            max_plate_distance=0,
            csv_path=None,
            clock=self.clock,
            in_thread=inline_threads,
        )
        site.startService()
        self.addCleanup(site.stopService)
        await site.when_loaded()
        await site.upsert([WhitelistEntry(plate="京L00001", source="admin")])
        self.whitelist = site  # type: ignore[assignment]

        pages: dict[str | None, dict[str, Any]] = {
            None: {
                "cursor": "p1",
                "more": True,
                "whitelist": {"upsert": [{"plate": "京K00001"}, {"plate": "京K00002"}]},
            },
            "p1": {"cursor": "p2", "more": True, "whitelist": {"delete": ["京K00001"]}},
            "p2": {
                "cursor": "p3",
                "whitelist": {
                    "replace": True,
                    "upsert": [{"plate": "京K00003"}, {"plate": "京L00001", "blacklist": True}],
                },
            },
        }
        self.cloud.sync_pages = lambda cursor: pages.get(cursor, {"cursor": "p3"})
        service = await self.start_upstream()
        await self.until(lambda: service.sync.cursor == "p3", "the pages")

        store = await self.open_store()
        rows = {row.plate: row.source for row in await store.whitelist_entries()}
        # K00002 was a cloud row not in the full list: gone. The admin's
        # L00001 is kept and the conflict logged.
        self.assertEqual(rows, {"京K00003": "cloud", "京L00001": "admin"})
        self.assertEqual(self.log.count("1 plates from the cloud are also set locally"), 1)
        self.assertEqual(self.log.count("the local entry is kept: 京L00001"), 1)

        def decide(plate: str) -> str:
            at = datetime.fromtimestamp(self.clock.seconds(), tz=timezone.utc)
            return site.decide(PlateQuery(license=plate, has_plate=True, at=at)).reason

        self.assertEqual(decide("京K00003"), "whitelist")
        self.assertEqual(decide("京K00002"), "unknown")
        self.assertEqual(decide("京K00001"), "unknown")
        self.assertEqual(decide("京L00001"), "whitelist")

