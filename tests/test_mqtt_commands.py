"""Commands from the broker, in memory: a lane's barrier opened from an MQTT
message reaches the camera in its next reply, the way the admin page's
button does; plate list additions and removals with the admin API's checks;
every command answered once on <prefix>/command_result and recorded as a
command_result event with origin mqtt; bad payloads, retained commands and
floods refused without harm. The broker is support.mqtt's in-memory
session."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from gateway.mqtt.commands import MAX_COMMAND_BYTES, MAX_COMMANDS_PER_MINUTE
from gateway.mqtt.service import MqttService
from gateway.store import EventType, Store
from gateway.tap import Seams, build_mqtt
from support import CapturedLog, loopback_config
from support.camera import START, MemoryCamera
from support.gateway import plate_body
from support.mqtt import MemoryBroker
from support.parts import GatewayParts, build_parts, parts_config

CAMERA = "d85b1269-8f942256"
OTHER = "QFX2182310150262"
PREFIX = "anpr/site-7"
ENTRANCE = f"{PREFIX}/lane/entrance/command"
WHITELIST = f"{PREFIX}/whitelist/command"


def site(**mqtt: Any) -> dict[str, Any]:
    return loopback_config(
        gateway={"id": "site-7"},
        lane=[
            {"name": "Entrance", "camera": CAMERA, "sync_whitelist": False, "barrier_channel": 1},
            {"name": "Exit", "camera": OTHER, "sync_whitelist": False},
        ],
        mqtt={"url": "mqtt://broker.test", "discovery": False, "commands": True, **mqtt},
    )


class CommandTestCase(TestCase):
    timeout = 10

    async def start(self, config: dict[str, Any] | None = None) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        gateway_config = parts_config(config or site(), self.mktemp())
        assert gateway_config.mqtt is not None
        self.parts: GatewayParts = build_parts(gateway_config, self.clock)
        self.broker = MemoryBroker(will_topic=f"{PREFIX}/status")
        self.mqtt: MqttService = build_mqtt(
            self.parts.root, self.parts.core, self.parts.cameras, gateway_config.mqtt,
            gateway_config.lanes, seams=Seams(mqtt_client=lambda settings, will: self.broker),
        )
        await self.parts.start()
        self.addCleanup(lambda: Deferred.fromCoroutine(self.parts.stop()))
        self.broker.accept()
        self.camera = MemoryCamera(self.parts)

    @property
    def store(self) -> Store:
        store = self.parts.store
        assert store is not None
        return store

    async def plate(self, number: int = 1, camera: str = CAMERA) -> dict[str, Any]:
        reply = await self.camera.post(plate_body(camera, f"京A{number:05d}", plateid=number))
        assert reply.status == 200, reply
        answer: dict[str, Any] = json.loads(reply.body)
        return answer

    def command(self, topic: str, payload: Any) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.broker.deliver(topic, body)

    async def results(self) -> list[dict[str, Any]]:
        """The command_result events in the store, oldest first."""
        events = await self.store.recent_events(limit=100, type=EventType.COMMAND_RESULT)
        return [dict(event.raw["command"]) for event in reversed(events)]


class LaneCommandTests(CommandTestCase):
    async def test_subscribed_at_qos_0_on_every_connection(self) -> None:
        await self.start()
        self.assertEqual(self.broker.subscriptions, [f"{PREFIX}/lane/+/command", WHITELIST])
        self.broker.drop()
        self.clock.advance(1)
        self.broker.accept()
        self.assertEqual(self.broker.subscriptions.count(WHITELIST), 2)

    async def test_open_reaches_the_camera_in_its_next_reply(self) -> None:
        await self.start(site())
        await self.plate(1)  # the camera is online (and denied: unknown plate)
        self.command(ENTRANCE, {"action": "open", "id": "ha-1"})
        self.assertEqual(self.broker.answers(), [])  # not delivered yet
        reply = await self.plate(2)
        self.assertEqual(reply["Response_AlarmInfoPlate"]["channelNum"], 1)  # the lane's barrier
        [answer] = self.broker.answers()
        self.assertEqual(
            {k: answer[k] for k in ("id", "action", "lane", "outcome", "command_id")},
            {"id": "ha-1", "action": "open", "lane": "Entrance", "outcome": "delivered",
             "command_id": "ha-1"},
        )
        [result] = await self.results()
        self.assertEqual(
            (result["id"], result["type"], result["outcome"], result["origin"]),
            ("ha-1", "open", "delivered", "mqtt"),
        )
        # The result event goes out on the events topic too, like any event.
        published = self.broker.events_published("command_result")
        self.assertEqual(published[-1]["command"]["origin"], "mqtt")

    async def test_close_with_a_channel_and_an_expired_command(self) -> None:
        await self.start()
        await self.plate(1)
        self.command(ENTRANCE, {"action": "close", "channel": 2})
        self.clock.advance(31)  # the camera says nothing before the command expires
        [answer] = self.broker.answers()
        self.assertEqual((answer["action"], answer["outcome"]), ("close", "expired"))
        self.assertIsNone(answer["id"])
        [result] = await self.results()
        self.assertEqual((result["type"], result["outcome"], result["origin"]),
                         ("io", "expired", "mqtt"))

    async def test_refused_commands_are_answered_and_recorded(self) -> None:
        await self.start()
        # The Exit camera never spoke: offline, refused at once.
        self.command(f"{PREFIX}/lane/exit/command", {"action": "open", "id": "x"})
        self.command(f"{PREFIX}/lane/garage/command", {"action": "open"})
        self.command(ENTRANCE, {"action": "open", "channel": 7})
        self.command(ENTRANCE, {"action": "launch"})
        self.command(ENTRANCE, {"action": "open", "colour": "red"})
        self.command(ENTRANCE, {"action": "say", "text": "x" * 201})
        answers = self.broker.answers()
        self.assertEqual([a["outcome"] for a in answers], ["rejected"] * 6)
        details = [a["detail"] for a in answers]
        self.assertIn("offline", details[0])
        self.assertIn("garage", details[1])
        self.assertIn("channel must be 0-3", details[2])
        self.assertIn("action must be one of open, close, snapshot, say", details[3])
        self.assertIn("'colour'", details[4])
        self.assertIn("at most 200", details[5])
        results = await self.results()
        self.assertEqual(len(results), 6)
        self.assertTrue(all(r["origin"] == "mqtt" and r["outcome"] == "rejected" for r in results))
        self.assertEqual((results[0]["id"], results[0]["type"]), ("x", "open"))
        self.assertIsNone(results[3]["type"])  # an unknown action is not named as a type

    async def test_malformed_payloads_get_an_error_and_a_log_line(self) -> None:
        await self.start()
        with CapturedLog() as captured:
            for payload in (b"{not json", b"\xff\xfe", b"[1, 2]", b"{}", b" " * (MAX_COMMAND_BYTES + 1),
                            json.dumps({"action": "open", "id": 7}).encode()):
                self.command(ENTRANCE, payload)
        answers = self.broker.answers()
        self.assertEqual([a["outcome"] for a in answers], ["rejected"] * 6)
        self.assertEqual(
            [a["detail"] for a in answers[:5]],
            [
                "the payload is not JSON",
                "the payload is not JSON",
                "the payload must be a JSON object, not list",
                "action must be one of open, close, snapshot, say",
                f"the payload is larger than {MAX_COMMAND_BYTES} bytes",
            ],
        )
        self.assertIn("id must be text", answers[5]["detail"])
        rejected = [line for line in captured.texts() if "rejected" in line]
        self.assertEqual(len(rejected), 6)
        self.assertTrue(self.mqtt.running)

    async def test_a_retained_command_is_never_obeyed(self) -> None:
        await self.start()
        await self.plate(1)
        with CapturedLog() as captured:
            for _ in range(3):  # as on every reconnect
                self.broker.deliver(ENTRANCE, b'{"action": "open"}', retained=True)
        reply = await self.plate(2)
        self.assertNotIn("channelNum", reply["Response_AlarmInfoPlate"])
        self.assertEqual(self.broker.answers(), [])
        self.assertEqual(len([line for line in captured.texts() if "retained" in line]), 1)

    async def test_a_flood_is_cut_at_the_limit_and_logged_once(self) -> None:
        await self.start()
        with CapturedLog() as captured:
            for _ in range(MAX_COMMANDS_PER_MINUTE + 40):
                self.command(ENTRANCE, b"nonsense")
        self.assertEqual(len(self.broker.answers()), MAX_COMMANDS_PER_MINUTE)
        self.assertEqual(len([line for line in captured.texts() if "in a minute" in line]), 1)
        self.clock.advance(61)
        self.command(ENTRANCE, b"nonsense")
        self.assertEqual(len(self.broker.answers()), MAX_COMMANDS_PER_MINUTE + 1)

    async def test_say_on_the_camera_speaker(self) -> None:
        await self.start()
        await self.plate(1)
        self.command(ENTRANCE, {"action": "say", "text": "Welcome"})
        await self.plate(2)
        [answer] = self.broker.answers()
        self.assertEqual((answer["action"], answer["outcome"]), ("say", "delivered"))

    async def test_no_subscription_without_commands(self) -> None:
        await self.start(site(commands=False))
        self.assertEqual(self.broker.subscriptions, [])
        await self.plate(1)
        self.command(ENTRANCE, {"action": "open"})
        reply = await self.plate(2)
        self.assertNotIn("channelNum", reply["Response_AlarmInfoPlate"])
        self.assertEqual(self.broker.answers(), [])


class WhitelistCommandTests(CommandTestCase):
    async def test_add_then_remove_a_plate(self) -> None:
        await self.start()
        self.command(WHITELIST, {"action": "add", "id": "w1", "plate": "京a 12345",
                                 "lanes": ["entrance"], "note": "visitor"})
        entry = self.parts.core.plate_list.get("京A12345")
        assert entry is not None
        self.assertEqual((entry.lanes, entry.note, entry.source), (frozenset({"Entrance"}), "visitor", "mqtt"))
        reply = await self.plate(12345)
        self.assertEqual(reply["Response_AlarmInfoPlate"]["channelNum"], 1)  # now it opens
        self.command(WHITELIST, {"action": "remove", "plate": "京A12345"})
        self.assertIsNone(self.parts.core.plate_list.get("京A12345"))
        answers = self.broker.answers()
        self.assertEqual([(a["action"], a["outcome"], a["plate"]) for a in answers],
                         [("add", "completed", "京A12345"), ("remove", "completed", "京A12345")])
        self.assertEqual(answers[0]["entry"]["lanes"], ["Entrance"])
        results = await self.results()
        self.assertEqual(
            [(r["id"] if r["type"] == "whitelist_add" else "-", r["type"], r["outcome"], r["plate"],
              r["origin"]) for r in results],
            [("w1", "whitelist_add", "completed", "京A12345", "mqtt"),
             ("-", "whitelist_remove", "completed", "京A12345", "mqtt")],
        )

    async def test_the_admin_api_checks_apply(self) -> None:
        await self.start()
        self.command(WHITELIST, {"action": "add", "plate": "京A12345"})
        for payload in (
            {"action": "add", "plate": "京A12345"},  # already listed
            {"action": "add", "plate": "京B1", "lanes": ["Entrnace"]},  # no such lane
            {"action": "add", "plate": "无牌"},  # a no-plate read
            {"action": "add", "plate": "京B1", "valid_from": "2025-02-01", "valid_until": "2025-01-01"},
            {"action": "remove", "plate": "京C99999"},  # not on the list
            {"action": "remove"},
            {"action": "remove", "plate": "京A12345", "note": "x"},
            {"action": "purge"},
        ):
            self.command(WHITELIST, payload)
        answers = self.broker.answers()
        self.assertEqual([a["outcome"] for a in answers], ["completed"] + ["rejected"] * 8)
        self.assertIn("already listed", answers[1]["detail"])
        self.assertIn("Entrnace", answers[2]["detail"])
        self.assertIn("not on the list", answers[5]["detail"])
        self.assertIn("plate is required", answers[6]["detail"])
        self.assertIn("'note'", answers[7]["detail"])
        self.assertIn("add, remove", answers[8]["detail"])
        self.assertEqual([e.plate for e in self.parts.core.plate_list.entries()], ["京A12345"])
        results = await self.results()
        self.assertEqual([r["outcome"] for r in results], ["completed"] + ["rejected"] * 8)
