"""The site's plate list: CSV imported at start and on change, kept in the
store across restarts, edits applied at once, decisions through the real
camera server (the gateway's parts in memory, the file watch on a Clock)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from gateway.policy.whitelist import WhitelistEntry
from gateway.store import EventType
from support import CapturedLog, loopback_config
from support.camera import CameraServerTestCase
from support.gateway import plate_body

ENTRANCE = "d85b1269-8f942256"
EXIT = "QFX2182310150262"

CSV = """plate,enabled,blacklist,valid_from,valid_until,lanes,hours,note
京A0B8S5,1,0,,,,,staff car
京B99999,1,1,,,,,banned
粤C12345,1,0,2000-01-01,2001-12-31,,,expired long ago
京D11111,1,0,,,Exit,,exit only
not a plate row,maybe,0,,,,,
京E22222,1,0,,,,Mon-Sun 00:00-00:00,all week
"""


class WhitelistSiteTests(CameraServerTestCase):
    def site_config(self, csv_text: str = CSV, **policy: Any) -> dict[str, Any]:
        directory = Path(self.mktemp())
        directory.mkdir(parents=True)
        self.csv_path = directory / "whitelist.csv"
        self.csv_path.write_text(csv_text, encoding="utf-8")
        return loopback_config(
            lane=[
                {"name": "Entrance", "camera": ENTRANCE, "barrier_channel": 0},
                {"name": "Exit", "camera": EXIT, "barrier_channel": 1, "direction": "out"},
            ],
            policy={"whitelist_csv": str(self.csv_path), **policy},
        )

    async def decide(self, camera: str, license: str, plateid: int) -> dict[str, Any]:
        reply = await self.camera().post(plate_body(camera, license, plateid=plateid))
        answer: dict[str, Any] = reply.json()["Response_AlarmInfoPlate"]
        return answer

    async def reason(self, plateid: int) -> str | None:
        store = self.parts.store
        assert store is not None
        events = await store.recent_events(limit=50, type=EventType.PLATE)
        (event,) = [e for e in events if e.raw["PlateResult"].get("plateid") == plateid]
        return event.decision_reason

    async def test_csv_rows_decide_and_bad_rows_are_reported_by_line(self) -> None:
        with CapturedLog() as captured:
            await self.start(self.site_config())
        texts = list(captured.texts())
        self.assertTrue(any("line 6" in text and "skipped" in text for text in texts), texts)
        # An OCR confusable read of a listed plate (O for 0) opens.
        self.assertEqual((await self.decide(ENTRANCE, "京AOB8S5", 1))["info"], "ok")
        self.assertEqual(await self.reason(1), "whitelist")
        self.assertEqual((await self.decide(ENTRANCE, "京B99999", 2))["info"], "no")
        self.assertEqual(await self.reason(2), "blacklist")
        self.assertEqual((await self.decide(ENTRANCE, "粤C12345", 3))["info"], "no")
        self.assertEqual(await self.reason(3), "expired")
        self.assertEqual((await self.decide(ENTRANCE, "京D11111", 4))["info"], "no")
        self.assertEqual(await self.reason(4), "wrong_lane")
        answer = await self.decide(EXIT, "京D11111", 5)
        self.assertEqual((answer["info"], answer["channelNum"]), ("ok", 1))
        self.assertEqual((await self.decide(ENTRANCE, "京Z00000", 6))["info"], "no")
        self.assertEqual(await self.reason(6), "unknown")
        self.assertEqual((await self.decide(ENTRANCE, "京E22222", 7))["info"], "ok")

    async def test_changed_csv_is_imported_again(self) -> None:
        await self.start(self.site_config())
        self.assertEqual((await self.decide(ENTRANCE, "京F33333", 1))["info"], "no")
        self.csv_path.write_text(CSV + "京F33333,1,0,,,,,new tenant\n", encoding="utf-8")
        self.clock.advance(1.9)  # the file is checked every 2 s
        self.assertEqual((await self.decide(ENTRANCE, "京F33333", 2))["info"], "no")
        self.clock.advance(0.1)
        self.assertEqual((await self.decide(ENTRANCE, "京F33333", 3))["info"], "ok")

    async def test_edits_apply_at_once_and_survive_csv_reimport_and_restart(self) -> None:
        config = self.site_config()
        state_dir = self.mktemp()
        parts = await self.start(config, state_dir)
        whitelist = parts.plate_list
        # Denied, then listed by staff: the car waiting at the barrier is let in
        # at its next read even within the repeat window.
        self.assertEqual((await self.decide(ENTRANCE, "京G44444", 1))["info"], "no")
        await whitelist.upsert([WhitelistEntry(plate="京G44444", source="admin", note="visitor")])
        self.assertEqual((await self.decide(ENTRANCE, "京G44444", 2))["info"], "ok")
        store = parts.store
        assert store is not None
        events = await store.recent_events(limit=5, type=EventType.PLATE)
        self.assertTrue(events[0].repeat)
        # A CSV re-import (the staff entry is not in the file) leaves it alone.
        await whitelist.import_csv()
        self.assertIn("京G44444", whitelist.index)
        await whitelist.delete(["京B99999"])
        await parts.stop()

        parts = await self.start(config, state_dir)
        await parts.plate_list.when_settled()
        index = parts.plate_list.index
        self.assertIn("京G44444", index)
        self.assertIn("京A0B8S5", index)
        # The CSV row is back after the start-up import: the file is the truth
        # for its own rows.
        self.assertIn("京B99999", index)

    async def test_bad_header_keeps_the_previous_import(self) -> None:
        await self.start(self.site_config())
        whitelist = self.parts.plate_list
        self.csv_path.write_text("plate,enabld\n京A0B8S5,1\n", encoding="utf-8")
        with CapturedLog() as captured:
            await whitelist.import_csv()
        self.assertIn("京A0B8S5", whitelist.policy.index)
        self.assertTrue(any("enabld" in text for text in captured.texts()))
        os.utime(self.csv_path)
