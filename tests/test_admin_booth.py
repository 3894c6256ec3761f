"""The booth's answers to a refused car and its reports, over the admin API,
against the real parts (store, gate, camera command path, camera server):

* an open for a read, a plate correction (decided again through the gate), a
  manual entry, and Open barrier on the lane card with a reason: each an
  event of its own, naming the operator and the read it answers, in the
  cloud's outbox with the documented shape, and in the audit log;
* who may: a viewer (session or token) can do none of them; a session must
  send its CSRF token;
* the day report per lane in the site's time zone, the shift hand-over, and
  the CSV export, read from the store a page at a time, with formulas
  neutralised."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta, timezone
from typing import Any

from gateway.admin import booth
from gateway.policy.occupancy import ParkingSession, SessionState
from gateway.store import EventRecord, EventType
from gateway.upstream.events import event_json
from support.admin import BASE, ENTRANCE, EXIT, SCRAPER_TOKEN, AdminTestCase, Camera, Client, settle
from support.gateway import plate_body

SITE = timezone(timedelta(hours=8))  # Asia/Shanghai, the test site's zone


def read_record(
    event_id: str,
    plate: str,
    at: datetime,
    *,
    lane: str = "Entrance",
    camera: str = ENTRANCE,
    opened: bool = False,
    reason: str = "unknown",
    repeat: bool = False,
) -> EventRecord:
    return EventRecord(
        id=event_id,
        type=EventType.PLATE,
        received_at=at,
        camera=camera,
        lane=lane,
        plate=plate,
        license=plate,
        decision_open=opened,
        decision_reason=reason,
        decision_source="local",
        repeat=repeat,
        raw={"PlateResult": {"license": plate}},
    )


class BoothTestCase(AdminTestCase):
    async def refused_read(self, camera: Camera, plate: str, plateid: int) -> dict[str, Any]:
        """A plate the gate refuses (not on the list) on the Entrance lane,
        as the camera pushes it; its stored summary."""
        await camera.post(plate_body(ENTRANCE, plate, plateid=plateid))
        records = await self.store.recent_events(limit=1, type=EventType.PLATE)
        self.assertEqual(records[0].plate, plate)
        self.assertFalse(records[0].decision_open)
        return {"id": records[0].id, "record": records[0]}

    async def kept(self, kind: EventType) -> list[EventRecord]:
        return list(reversed(await self.store.recent_events(limit=100, type=kind)))

    async def outbox_ids(self) -> list[str]:
        return [item.event.id for item in await self.store.outbox_batch(1000)]

    async def audit(self) -> list[Any]:
        return list(await self.store.audit_entries(None, 100))


class OpenForReadTests(BoothTestCase):
    async def test_open_for_a_refused_read_is_an_event_naming_the_operator(self) -> None:
        await self.build()
        self.store_outbox_on()
        client = await self.operator()
        camera = await self.camera_online()
        read = await self.refused_read(camera, "京A54321", 2)
        answer = await client.post(
            f"/api/events/{read['id']}/open",
            {"reason": "visitor", "note": "expected by reception"},
        )
        self.assertEqual(answer.status, 202, answer.body)
        body = answer.json()
        self.assertEqual(body["command"]["type"], "open")
        self.assertEqual(body["event"]["type"], "operator_open")
        self.assertEqual(body["event"]["answers"], read["id"])
        # The barrier opens through the camera command path, on the lane's channel.
        reply = await camera.post(plate_body(ENTRANCE, "京A00009", plateid=3))
        self.assertEqual(reply["Response_AlarmInfoPlate"]["channelNum"], 2)
        (opened,) = await self.kept(EventType.OPERATOR_OPEN)
        self.assertEqual(opened.answers, read["id"])
        self.assertEqual(
            (opened.lane, opened.camera, opened.plate), ("Entrance", ENTRANCE, "京A54321")
        )
        self.assertEqual(
            opened.raw["operator"], {"name": "olga", "role": "operator", "via": "session"}
        )
        self.assertEqual(
            (opened.raw["reason"], opened.raw["note"]), ("visitor", "expected by reception")
        )
        self.assertTrue(opened.decision_open)
        # The command's own result names the operator too.
        results = await self.kept(EventType.COMMAND_RESULT)
        self.assertEqual(
            [(r.raw["command"]["type"], r.raw["command"].get("operator")) for r in results],
            [("open", "olga")],
        )
        # Upstream like every event, in the documented shape.
        self.assertIn(opened.id, await self.outbox_ids())
        sent = event_json(opened)
        self.assertEqual(sent["type"], "operator_open")
        self.assertEqual(sent["answers"], read["id"])
        self.assertEqual(sent["operator"]["name"], "olga")
        self.assertEqual((sent["reason"], sent["note"]), ("visitor", "expected by reception"))
        self.assertEqual(
            sent["decision"], {"open": True, "reason": "visitor", "source": "operator"}
        )
        self.assertEqual(sent["command"]["id"], body["command"]["id"])
        # The read is unchanged and lists what answered it.
        self.assertFalse((await self.store.get_event(read["id"])).decision_open)
        answers = (await client.get(f"/api/events/{read['id']}/answers")).json()["events"]
        self.assertEqual([a["id"] for a in answers], [opened.id])
        # The audit log has who, what, on what and why.
        entry = next(e for e in await self.audit() if e.action == "open_for_read")
        self.assertEqual((entry.who, entry.target, entry.reason), ("olga", read["id"], "visitor"))
        self.assertEqual(entry.detail["event"], opened.id)
        self.assertEqual(entry.detail["note"], "expected by reception")

    def store_outbox_on(self) -> None:
        # The gateway queues events for the cloud when it has one.
        self.parts.recorder.outbox = True

    async def test_a_reason_from_the_list_and_a_note_are_required(self) -> None:
        await self.build()
        client = await self.operator()
        camera = await self.camera_online()
        read = await self.refused_read(camera, "京A54321", 2)
        path = f"/api/events/{read['id']}/open"
        no_reason = await client.post(path, {"note": "x"})
        self.assertEqual(no_reason.status, 400)
        self.assertEqual(no_reason.json()["errors"], {"reason": "required"})
        unknown = await client.post(path, {"reason": "bribe", "note": "x"})
        self.assertEqual(unknown.status, 400)
        self.assertIn("visitor", unknown.json()["errors"]["reason"])
        no_note = await client.post(path, {"reason": "visitor", "note": "  "})
        self.assertEqual(no_note.status, 400)
        self.assertEqual(no_note.json()["errors"], {"note": "required"})
        self.assertEqual((await client.post(path)).status, 400)
        missing = await client.post(
            "/api/events/p-nosuchevent0000/open", {"reason": "visitor", "note": "x"}
        )
        self.assertEqual(missing.status, 404)
        self.assertEqual(await self.kept(EventType.OPERATOR_OPEN), [])

    async def test_only_plate_reads_of_online_cameras_are_opened(self) -> None:
        await self.build()
        client = await self.operator()
        await self.store.commit_event(
            read_record(
                "p-exitread000000001",
                "京B11111",
                datetime.now(timezone.utc),
                lane="Exit",
                camera=EXIT,
            )
        )
        await self.store.commit_event(
            EventRecord(
                id="io-event00000000001",
                type=EventType.IO,
                received_at=datetime.now(timezone.utc),
                camera=ENTRANCE,
                lane="Entrance",
            )
        )
        body = {"reason": "visitor", "note": "x"}
        offline = await client.post("/api/events/p-exitread000000001/open", body)
        self.assertEqual(offline.status, 409)
        self.assertIn("offline", offline.json()["error"])
        not_a_read = await client.post("/api/events/io-event00000000001/open", body)
        self.assertEqual(not_a_read.status, 409)
        self.assertEqual(await self.kept(EventType.OPERATOR_OPEN), [])

    async def test_configured_reasons_are_offered_and_required(self) -> None:
        from support.admin import default_settings

        await self.build(settings=default_settings(open_reasons=("Taxi", "Ambulance")))
        client = await self.operator()
        self.assertEqual(
            (await client.get("/api/booth")).json()["open_reasons"], ["Taxi", "Ambulance"]
        )
        camera = await self.camera_online()
        read = await self.refused_read(camera, "京A54321", 2)
        self.assertEqual(
            (
                await client.post(
                    f"/api/events/{read['id']}/open", {"reason": "visitor", "note": "x"}
                )
            ).status,
            400,
        )
        self.assertEqual(
            (
                await client.post(f"/api/events/{read['id']}/open", {"reason": "Taxi", "note": "x"})
            ).status,
            202,
        )


class CorrectionTests(BoothTestCase):
    async def test_a_correction_keeps_the_read_and_is_decided_again_through_the_gate(self) -> None:
        await self.build()
        client = await self.operator()
        listed = await client.post("/api/whitelist", {"plate": "京A12345"})
        self.assertEqual(listed.status, 201)
        camera = await self.camera_online()
        read = await self.refused_read(camera, "京A17345", 2)
        answer = await client.post(
            f"/api/events/{read['id']}/correct",
            {"plate": "京a 12345", "decide": True, "note": "7 read for 2"},
        )
        self.assertEqual(answer.status, 201, answer.body)
        body = answer.json()
        self.assertEqual(body["event"]["type"], "plate_correction")
        self.assertEqual(body["event"]["plate"], "京A12345")
        self.assertEqual(body["event"]["license"], "京A17345")
        self.assertEqual(
            body["event"]["decision"], {"open": True, "reason": "whitelist", "source": "local"}
        )
        self.assertEqual(body["command"]["type"], "open")
        reply = await camera.post(plate_body(ENTRANCE, "京A00009", plateid=3))
        self.assertEqual(reply["Response_AlarmInfoPlate"]["channelNum"], 2)
        # The camera's read stays as it was read.
        kept_read = await self.store.get_event(read["id"])
        self.assertEqual((kept_read.plate, kept_read.decision_open), ("京A17345", False))
        (fixed,) = await self.kept(EventType.PLATE_CORRECTION)
        self.assertEqual(fixed.answers, read["id"])
        self.assertEqual(fixed.raw["read_plate"], "京A17345")
        self.assertEqual(fixed.raw["operator"]["name"], "olga")
        sent = event_json(fixed)
        self.assertEqual(
            (sent["plate"], sent["license"], sent["answers"]), ("京A12345", "京A17345", read["id"])
        )
        entry = next(e for e in await self.audit() if e.action == "correct_read")
        self.assertEqual((entry.who, entry.target), ("olga", read["id"]))
        self.assertEqual(
            (entry.detail["plate"], entry.detail["read_plate"]), ("京A12345", "京A17345")
        )

    async def test_a_correction_without_deciding_opens_nothing(self) -> None:
        await self.build()
        client = await self.operator()
        camera = await self.camera_online()
        read = await self.refused_read(camera, "京A17345", 2)
        answer = await client.post(f"/api/events/{read['id']}/correct", {"plate": "京A12345"})
        self.assertEqual(answer.status, 201)
        self.assertIsNone(answer.json()["event"]["decision"])
        self.assertIsNone(answer.json()["command"])
        reply = await camera.post(plate_body(ENTRANCE, "京A00009", plateid=3))
        self.assertNotIn("channelNum", reply["Response_AlarmInfoPlate"])
        # Still refused after deciding again: recorded, the barrier stays shut.
        denied = await client.post(
            f"/api/events/{read['id']}/correct", {"plate": "京A99999", "decide": True}
        )
        self.assertEqual(denied.json()["event"]["decision"]["open"], False)
        self.assertEqual(denied.json()["event"]["decision"]["reason"], "unknown")
        self.assertIsNone(denied.json()["command"])

    async def test_bad_corrections_are_refused(self) -> None:
        await self.build()
        client = await self.operator()
        camera = await self.camera_online()
        read = await self.refused_read(camera, "京A17345", 2)
        path = f"/api/events/{read['id']}/correct"
        self.assertEqual((await client.post(path, {})).json()["errors"], {"plate": "required"})
        self.assertEqual((await client.post(path, {"plate": "_无_"})).status, 400)
        self.assertIn("plate", (await client.post(path, {"plate": "京A17345"})).json()["errors"])
        self.assertEqual(
            (await client.post(path, {"plate": "京A12345", "decide": "yes"})).status, 400
        )
        self.assertEqual((await client.post(path, {"plate": "X" * 40})).status, 400)
        self.assertEqual(await self.kept(EventType.PLATE_CORRECTION), [])


class ManualEntryTests(BoothTestCase):
    async def test_a_car_with_no_readable_plate_is_let_in_with_its_plate_typed(self) -> None:
        await self.build()
        client = await self.operator()
        camera = await self.camera_online()
        await camera.post(plate_body(ENTRANCE, "_无_", plateid=2))
        (no_plate,) = await self.store.recent_events(limit=1, type=EventType.PLATE)
        answer = await client.post(
            "/api/lanes/entrance/manual-entry",
            {"plate": "京c 77777", "reason": "no_plate", "note": "mud", "event_id": no_plate.id},
        )
        self.assertEqual(answer.status, 201, answer.body)
        body = answer.json()
        self.assertEqual(
            (body["event"]["type"], body["event"]["plate"]), ("manual_entry", "京C77777")
        )
        self.assertEqual(body["event"]["answers"], no_plate.id)
        self.assertEqual(body["command"]["type"], "open")
        reply = await camera.post(plate_body(ENTRANCE, "京A00009", plateid=3))
        self.assertEqual(reply["Response_AlarmInfoPlate"]["channelNum"], 2)
        (entry,) = await self.kept(EventType.MANUAL_ENTRY)
        self.assertEqual(
            (entry.lane, entry.camera, entry.license), ("Entrance", ENTRANCE, "京c 77777")
        )
        self.assertEqual(entry.raw["operator"]["name"], "olga")
        self.assertEqual(event_json(entry)["reason"], "no_plate")
        audit = next(e for e in await self.audit() if e.action == "manual_entry")
        self.assertEqual((audit.who, audit.target, audit.reason), ("olga", "Entrance", "no_plate"))

    async def test_without_opening_and_refusals(self) -> None:
        await self.build()
        client = await self.operator()
        await self.camera_online()
        quiet = await client.post(
            "/api/lanes/Entrance/manual-entry",
            {"plate": "京C77777", "reason": "staff", "open": False},
        )
        self.assertEqual(quiet.status, 201)
        self.assertIsNone(quiet.json()["command"])
        self.assertFalse(quiet.json()["event"]["decision"]["open"])
        body = {"plate": "京C77777", "reason": "staff"}
        self.assertEqual((await client.post("/api/lanes/Nowhere/manual-entry", body)).status, 404)
        self.assertEqual(
            (await client.post("/api/lanes/Entrance/manual-entry", {"plate": "京C77777"})).status,
            400,
        )
        self.assertEqual(
            (await client.post("/api/lanes/Entrance/manual-entry", {"reason": "staff"})).status, 400
        )
        # The Exit camera was never heard from: its barrier cannot open.
        self.assertEqual((await client.post("/api/lanes/Exit/manual-entry", body)).status, 409)
        await self.store.commit_event(
            read_record(
                "p-exitread000000001", "", datetime.now(timezone.utc), lane="Exit", camera=EXIT
            )
        )
        other_lane = await client.post(
            "/api/lanes/Entrance/manual-entry", {**body, "event_id": "p-exitread000000001"}
        )
        self.assertEqual(other_lane.status, 400)
        self.assertEqual(len(await self.kept(EventType.MANUAL_ENTRY)), 1)


class LaneCardOpenTests(BoothTestCase):
    async def test_open_barrier_with_a_reason_is_an_event_naming_the_operator(self) -> None:
        await self.build()
        client = await self.operator()
        await self.camera_online()
        answer = await client.post(
            f"/api/cameras/{ENTRANCE}/open", {"reason": "delivery", "note": "parcel van"}
        )
        self.assertEqual(answer.status, 202, answer.body)
        self.assertEqual(answer.json()["command"]["channel"], 2)
        (opened,) = await self.kept(EventType.OPERATOR_OPEN)
        self.assertIsNone(opened.answers)
        self.assertEqual(opened.raw["operator"]["name"], "olga")
        self.assertEqual((opened.raw["reason"], opened.raw["note"]), ("delivery", "parcel van"))
        self.assertEqual(answer.json()["event"]["id"], opened.id)
        entry = next(e for e in await self.audit() if e.action == "open_barrier")
        self.assertEqual((entry.reason, entry.detail["note"]), ("delivery", "parcel van"))
        bad = await client.post(f"/api/cameras/{ENTRANCE}/open", {"reason": "because"})
        self.assertEqual(bad.status, 400)
        self.assertEqual(len(await self.kept(EventType.OPERATOR_OPEN)), 1)


ACTIONS = (
    ("POST", "/api/events/{read}/open", {"reason": "visitor", "note": "x"}),
    ("POST", "/api/events/{read}/correct", {"plate": "京A12345", "decide": True}),
    ("POST", "/api/lanes/Entrance/manual-entry", {"plate": "京C77777", "reason": "staff"}),
    ("POST", f"/api/cameras/{ENTRANCE}/open", {"reason": "visitor", "note": "x"}),
)
READS = (
    "/api/booth",
    "/api/reports/daily?date=2025-03-01",
    "/api/reports/handover?since={since}",
    "/api/events.csv?from=2025-03-01",
    "/api/sessions.csv?from=2025-03-01",
    "/api/events/{read}/answers",
)


class RoleTests(BoothTestCase):
    async def test_a_viewer_can_do_none_of_the_actions_but_reads_the_reports(self) -> None:
        await self.build()
        camera = await self.camera_online()
        read = await self.refused_read(camera, "京A17345", 2)
        viewer = Client(self.api)
        self.assertEqual((await viewer.login("vera")).status, 200)
        machine = Client(self.api, token=SCRAPER_TOKEN)
        since = (datetime.now(SITE) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
        for client in (viewer, machine):
            for method, path, body in ACTIONS:
                answer = await client.request(method, path.format(read=read["id"]), json_body=body)
                self.assertEqual(answer.status, 403, (client.token, path))
            for path in READS:
                answer = await client.get(path.format(read=read["id"], since=since))
                self.assertEqual(answer.status, 200, (client.token, path, answer.body))
        nobody = Client(self.api)
        for method, path, body in ACTIONS:
            answer = await nobody.request(method, path.format(read=read["id"]), json_body=body)
            self.assertEqual(answer.status, 401)
        for path in READS:
            self.assertEqual(
                (await nobody.get(path.format(read=read["id"], since=since))).status, 401
            )
        for kind in (EventType.OPERATOR_OPEN, EventType.PLATE_CORRECTION, EventType.MANUAL_ENTRY):
            self.assertEqual(await self.kept(kind), [])

    async def test_a_session_must_send_its_csrf_token(self) -> None:
        await self.build()
        client = await self.operator()
        camera = await self.camera_online()
        read = await self.refused_read(camera, "京A17345", 2)
        for method, path, body in ACTIONS:
            answer = await client.request(
                method, path.format(read=read["id"]), json_body=body, csrf=False
            )
            self.assertEqual(answer.status, 403, path)
            self.assertIn("CSRF", answer.json()["error"])
        for kind in (EventType.OPERATOR_OPEN, EventType.PLATE_CORRECTION, EventType.MANUAL_ENTRY):
            self.assertEqual(await self.kept(kind), [])


class AddToListTests(BoothTestCase):
    async def test_an_entry_added_from_a_read_names_it_in_the_audit_log(self) -> None:
        await self.build()
        client = await self.operator()
        camera = await self.camera_online()
        read = await self.refused_read(camera, "京A17345", 2)
        added = await client.post(
            f"/api/whitelist?event={read['id']}",
            {
                "plate": "京A17345",
                "valid_from": "2025-03-01",
                "valid_until": "2025-03-01",
                "lanes": ["Entrance"],
            },
        )
        self.assertEqual(added.status, 201, added.body)
        self.assertEqual(added.json()["valid_until"], "2025-03-01T23:59:59.999999+08:00")
        entry = next(e for e in await self.audit() if e.action == "add_whitelist_entry")
        self.assertEqual((entry.target, entry.detail["event"]), ("京A17345", read["id"]))
        bad = await client.post("/api/whitelist?event=../x", {"plate": "京A1234T"})
        self.assertEqual(bad.status, 400)


def local(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2025, 3, day, hour, minute, tzinfo=SITE)


class ReportTests(BoothTestCase):
    async def fill(self) -> None:
        store = self.store
        records = [
            # 1 March, site time: the day starts at 16:00 UTC the day before.
            read_record(
                "p-r000000000000001", "京A11111", local(1, 0, 5), opened=True, reason="whitelist"
            ),
            read_record(
                "p-r000000000000002", "京A11111", local(1, 0, 6), reason="duplicate", repeat=True
            ),
            read_record("p-r000000000000003", "京A22222", local(1, 9), reason="unknown"),
            read_record("p-r000000000000004", "京A33333", local(1, 10), reason="unknown"),
            read_record("p-r000000000000005", "京A44444", local(1, 11), reason="blacklist"),
            read_record(
                "p-r000000000000006",
                "京A11111",
                local(1, 18),
                lane="Exit",
                camera=EXIT,
                opened=True,
                reason="whitelist",
            ),
            # The days around it.
            read_record(
                "p-r000000000000007",
                "京A55555",
                local(1, 0) - timedelta(seconds=1),
                reason="unknown",
            ),
            read_record("p-r000000000000008", "京A55555", local(2, 0), reason="unknown"),
        ]
        for record in records:
            await store.commit_event(record)
        operator = {"operator": {"name": "olga", "role": "operator", "via": "session"}}
        for event_id, kind, at, opened, answers, reason in (
            (
                "open-r000000000000001",
                EventType.OPERATOR_OPEN,
                local(1, 9, 1),
                True,
                "p-r000000000000003",
                "visitor",
            ),
            (
                "fix-r000000000000001",
                EventType.PLATE_CORRECTION,
                local(1, 10, 1),
                True,
                "p-r000000000000004",
                "whitelist",
            ),
            (
                "manual-r000000000000001",
                EventType.MANUAL_ENTRY,
                local(1, 12),
                True,
                None,
                "no_plate",
            ),
            ("manual-r000000000000002", EventType.MANUAL_ENTRY, local(1, 19), False, None, "staff"),
        ):
            await store.commit_event(
                EventRecord(
                    id=event_id,
                    type=kind,
                    received_at=at,
                    camera=ENTRANCE if at.hour < 19 else EXIT,
                    lane="Entrance" if at.hour < 19 else "Exit",
                    plate="京A33333",
                    decision_open=opened,
                    decision_reason=reason,
                    decision_source="operator",
                    answers=answers,
                    raw={**operator, "reason": reason, "note": f"note {event_id}"},
                )
            )

    async def test_the_day_per_lane_in_the_site_time_zone(self) -> None:
        await self.build()
        await self.fill()
        client = await self.operator()
        report = (await client.get("/api/reports/daily?date=2025-03-01")).json()
        self.assertEqual((report["date"], report["timezone"]), ("2025-03-01", "Asia/Shanghai"))
        self.assertEqual(report["from"], "2025-03-01T00:00:00+08:00")
        entrance, exit_ = report["lanes"]
        self.assertEqual(entrance["lane"], "Entrance")
        # Entries: a read that opened, an operator's open, a correction that
        # opened and a manual entry that opened.
        self.assertEqual(
            {
                key: entrance[key]
                for key in ("entries", "exits", "reads", "refused_total", "repeats")
            },
            {"entries": 4, "exits": 0, "reads": 4, "refused_total": 3, "repeats": 1},
        )
        self.assertEqual(entrance["refused"], {"blacklist": 1, "unknown": 2})
        self.assertEqual(
            (entrance["manual_opens"], entrance["corrections"], entrance["manual_entries"]),
            (1, 1, 1),
        )
        self.assertEqual((exit_["lane"], exit_["exits"], exit_["entries"]), ("Exit", 1, 0))
        self.assertEqual(exit_["manual_entries"], 1)  # let out without opening
        self.assertEqual(report["totals"]["refused"], {"blacklist": 1, "unknown": 2})
        self.assertEqual((report["totals"]["entries"], report["totals"]["exits"]), (4, 1))
        # The days around it hold only their own reads.
        before = (await client.get("/api/reports/daily?date=2025-02-28")).json()
        self.assertEqual(before["totals"]["refused"], {"unknown": 1})
        after = (await client.get("/api/reports/daily?date=2025-03-02")).json()
        self.assertEqual(after["totals"]["refused"], {"unknown": 1})
        for bad in ("", "?date=", "?date=1.3.2025", "?date=2025-02-30"):
            self.assertEqual((await client.get(f"/api/reports/daily{bad}")).status, 400, bad)

    async def test_the_shift_hand_over_lists_what_operators_did(self) -> None:
        await self.build()
        client = await self.operator()
        camera = await self.camera_online()
        read = await self.refused_read(camera, "京A54321", 2)
        await client.post(
            f"/api/events/{read['id']}/open", {"reason": "visitor", "note": "taxi rank"}
        )
        await client.post(
            "/api/lanes/Entrance/manual-entry", {"plate": "京C77777", "reason": "no_plate"}
        )
        since = (datetime.now(SITE) - timedelta(hours=8)).strftime("%Y-%m-%dT%H:%M")
        handover = (await client.get(f"/api/reports/handover?since={since}")).json()
        self.assertEqual(handover["by"], "olga")
        self.assertEqual(handover["totals"]["manual_opens"], 1)
        self.assertEqual(handover["totals"]["manual_entries"], 1)
        self.assertEqual(handover["totals"]["refused"], {"unknown": 2})
        self.assertEqual(
            [
                (a["type"], a["raw"]["operator"]["name"], a["raw"]["reason"], a["raw"]["note"])
                for a in handover["actions"]
            ],
            [
                ("operator_open", "olga", "visitor", "taxi rank"),
                ("manual_entry", "olga", "no_plate", ""),
            ],
        )
        self.assertEqual((await client.get("/api/reports/handover")).status, 400)
        old = (datetime.now(SITE) - timedelta(days=40)).strftime("%Y-%m-%dT%H:%M")
        self.assertEqual((await client.get(f"/api/reports/handover?since={old}")).status, 400)
        self.assertEqual((await client.get("/api/reports/handover?since=yesterday")).status, 400)


def parse_csv(body: bytes) -> list[dict[str, str]]:
    text = body.decode("utf-8")
    assert text.startswith("\ufeff"), text[:20]
    return list(csv.DictReader(io.StringIO(text[1:], newline="")))


class ExportTests(BoothTestCase):
    async def test_a_day_of_events_as_csv_read_a_page_at_a_time(self) -> None:
        await self.build()
        store = self.store
        # Pages of 40 here (500 in the gateway): the same walk, with fewer rows.
        page_size = 40
        self.patch(booth, "EXPORT_PAGE", page_size)
        count = page_size * 2 + 7
        for number in range(count):
            await store.commit_event(
                read_record(
                    f"p-x{number:015d}", f"京A{number:05d}", local(1, 8) + timedelta(seconds=number)
                )
            )
        await store.commit_event(read_record("p-outside000000001", "京B00001", local(2, 0)))
        await store.commit_event(
            read_record("p-formula000000001", '=HYPERLINK("http://x")', local(1, 23, 59))
        )
        pages: list[int] = []
        reading = store.events_in_range

        async def counted(*args: Any, **kwargs: Any) -> list[EventRecord]:
            page = await reading(*args, **kwargs)
            pages.append(len(page))
            return page

        self.patch(store, "events_in_range", counted)
        client = await self.operator()
        answer = await client.get("/api/events.csv?from=2025-03-01&to=2025-03-01")
        self.assertEqual(answer.status, 200, answer.body)
        self.assertEqual(answer.header("content-type"), "text/csv; charset=utf-8")
        self.assertIn("attachment", answer.header("content-disposition") or "")
        rows = parse_csv(answer.body)
        self.assertEqual(len(rows), count + 1)
        self.assertEqual(rows[0]["time"], "2025-03-01T08:00:00+08:00")
        self.assertEqual(
            (rows[0]["plate"], rows[0]["decision"], rows[0]["reason"]),
            ("京A00000", "refused", "unknown"),
        )
        self.assertEqual([row["id"] for row in rows[:-1]], [f"p-x{n:015d}" for n in range(count)])
        # A cell a spreadsheet would run is shown as text.
        self.assertEqual(rows[-1]["license"], '\'=HYPERLINK("http://x")')
        # Never read whole: the store was asked a bounded page at a time.
        self.assertEqual(pages, [page_size, page_size, 8])

    async def test_a_client_that_does_not_read_holds_the_export_back(self) -> None:
        await self.build()
        store = self.store
        page_size = 20
        self.patch(booth, "EXPORT_PAGE", page_size)
        for number in range(page_size * 3):
            await store.commit_event(
                read_record(
                    f"p-y{number:015d}", "京A00001", local(1, 8) + timedelta(seconds=number)
                )
            )
        pages: list[int] = []
        reading = store.events_in_range

        async def counted(*args: Any, **kwargs: Any) -> list[EventRecord]:
            page = await reading(*args, **kwargs)
            pages.append(len(page))
            return page

        self.patch(store, "events_in_range", counted)
        held: list[Any] = []

        class FullConnection(booth._Paced):
            """The client's connection is full from the start."""

            def __init__(self) -> None:
                super().__init__()
                self.pauseProducing()
                held.append(self)

        self.patch(booth, "_Paced", FullConnection)
        client = await self.operator()
        waiting = client.stub.get(BASE + "/api/events.csv?from=2025-03-01", headers={})
        client.stub.flush()
        # One page written; the next is not read while the client takes nothing.
        self.assertEqual(pages, [page_size])
        held[0].resumeProducing()
        response = await settle(client.stub, waiting)
        body = await settle(client.stub, client.stub.content(response), "body")
        self.assertEqual(pages, [page_size] * 3 + [0])
        self.assertEqual(len(parse_csv(body)), page_size * 3)

    async def test_operators_and_their_notes_are_in_the_export(self) -> None:
        await self.build()
        client = await self.operator()
        camera = await self.camera_online()
        read = await self.refused_read(camera, "京A54321", 2)
        await client.post(
            f"/api/events/{read['id']}/open", {"reason": "visitor", "note": "+1 555 guard"}
        )
        today = datetime.now(SITE).date().isoformat()
        rows = parse_csv((await client.get(f"/api/events.csv?from={today}")).body)
        opened = next(row for row in rows if row["type"] == "operator_open")
        self.assertEqual((opened["operator"], opened["answers"]), ("olga", read["id"]))
        self.assertEqual(opened["note"], "'+1 555 guard")

    async def test_the_sessions_of_a_day_stream_in_time_order_guarded(self) -> None:
        await self.build()
        store = self.store
        page_size = 20
        self.patch(booth, "EXPORT_PAGE", page_size)
        sessions = [
            ParkingSession(
                key=f"p-s{n:015d}:",
                plate=f"京S{n:05d}",
                area="",
                state=SessionState.CLOSED,
                entered_at=local(1, 8) + timedelta(minutes=n),
                entry_lane="Entrance",
                entry_event=f"p-s{n:015d}",
                left_at=local(1, 9) + timedelta(minutes=n),
                exit_lane="Exit",
                exit_event=f"p-t{n:015d}",
            )
            for n in range(page_size * 2 + 5)
        ]
        # An exit with no entry is timed by its exit; one on the next day is out.
        sessions.append(
            ParkingSession(
                key="p-u000000000000001:", plate='=HYPERLINK("http://x")', area="",
                state=SessionState.NO_ENTRY, left_at=local(1, 23, 30), exit_lane="Exit",
                exit_event="p-u000000000000001",
            )
        )
        sessions.append(
            ParkingSession(
                key="p-v000000000000001:", plate="京B00001", area="",
                state=SessionState.INSIDE, entered_at=local(2, 0, 30), entry_lane="Entrance",
                entry_event="p-v000000000000001",
            )
        )
        await store.save_parking_sessions(
            sessions, consumer="occupancy", cursor=0, offsets_key="occupancy:corrections",
            offsets="{}",
        )
        pages: list[int] = []
        reading = store.sessions_in_range

        async def counted(*args: Any, **kwargs: Any) -> list[Any]:
            page = await reading(*args, **kwargs)
            pages.append(len(page))
            return page

        self.patch(store, "sessions_in_range", counted)
        client = Client(self.api)
        self.assertEqual((await client.login("vera")).status, 200)  # a viewer reads it
        answer = await client.get("/api/sessions.csv?from=2025-03-01&to=2025-03-01")
        self.assertEqual(answer.status, 200, answer.body)
        self.assertEqual(answer.header("content-type"), "text/csv; charset=utf-8")
        self.assertIn("sessions-20250301", answer.header("content-disposition") or "")
        rows = parse_csv(answer.body)
        self.assertEqual(len(rows), page_size * 2 + 6)
        self.assertEqual(
            (rows[0]["entered"], rows[0]["left"], rows[0]["duration_seconds"], rows[0]["state"]),
            ("2025-03-01T08:00:00+08:00", "2025-03-01T09:00:00+08:00", "3600", "closed"),
        )
        self.assertEqual([row["plate"] for row in rows[:3]], ["京S00000", "京S00001", "京S00002"])
        flagged = rows[-1]
        self.assertEqual((flagged["state"], flagged["entered"]), ("no_entry", ""))
        self.assertEqual(flagged["plate"], '\'=HYPERLINK("http://x")')
        # Never read whole: the store was asked a bounded page at a time.
        self.assertEqual(pages, [page_size, page_size, 6])

    async def test_bad_ranges(self) -> None:
        await self.build()
        client = await self.operator()
        self.assertEqual((await client.get("/api/events.csv")).status, 400)
        self.assertEqual((await client.get("/api/events.csv?from=soon")).status, 400)
        backwards = await client.get(
            "/api/events.csv?from=2025-03-02T00:00:00Z&to=2025-03-01T00:00:00Z"
        )
        self.assertEqual(backwards.status, 400)
        empty = await client.get("/api/events.csv?from=2025-03-01&to=2025-03-01")
        self.assertEqual(empty.status, 200)
        self.assertEqual(parse_csv(empty.body), [])
