"""The MQTT link in memory: events from the store's own cursor, at least once
and in commit order, through outages and restarts; reconnect with back-off;
the status topic; the credentials refused. The broker is the in-memory
session of support.mqtt (the link's one seam)."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from gateway.mqtt.service import MqttLinkState, MqttService
from gateway.store import Store
from gateway.tap import Seams, build_mqtt
from support import CapturedLog, loopback_config
from support.camera import START, MemoryCamera
from support.gateway import plate_body
from support.mqtt import MemoryBroker
from support.parts import GatewayParts, build_parts, parts_config

CAMERA = "d85b1269-8f942256"
OTHER = "QFX2182310150262"
PREFIX = "anpr/site-7"


def site(**mqtt: Any) -> dict[str, Any]:
    return loopback_config(
        gateway={"id": "site-7"},
        lane=[
            {"name": "Entrance", "camera": CAMERA, "sync_whitelist": False},
            {"name": "Exit", "camera": OTHER, "sync_whitelist": False},
        ],
        policy={"unknown_plate": "allow"},
        mqtt={"url": "mqtt://broker.test", "discovery": False, **mqtt},
    )


class MqttTestCase(TestCase):
    timeout = 10
    async def start(
        self, config: dict[str, Any] | None = None, state_dir: str | None = None, **broker: Any
    ) -> tuple[GatewayParts, MqttService, MemoryBroker]:
        if not hasattr(self, "clock"):
            self.clock = Clock()
            self.clock.advance(START)
        self.state_dir = state_dir or self.mktemp()
        gateway_config = parts_config(config or site(), self.state_dir)
        assert gateway_config.mqtt is not None
        parts = build_parts(gateway_config, self.clock)
        memory = MemoryBroker(will_topic=f"{gateway_config.mqtt.prefix}/status", **broker)
        mqtt = build_mqtt(
            parts.root, parts.core, parts.cameras, gateway_config.mqtt, gateway_config.lanes,
            seams=Seams(mqtt_client=lambda settings, will: memory),
        )
        await parts.start()
        self.addCleanup(lambda: Deferred.fromCoroutine(parts.stop()))
        self.parts, self.mqtt, self.broker = parts, mqtt, memory
        return parts, mqtt, memory

    async def plates(self, count: int, camera: str = CAMERA, first: int = 1) -> None:
        client = MemoryCamera(self.parts)
        for number in range(first, first + count):
            reply = await client.post(plate_body(camera, f"京A{number:05d}", plateid=number))
            assert reply.status == 200, reply

    @property
    def store(self) -> Store:
        store = self.parts.store
        assert store is not None
        return store


class PublishingTests(MqttTestCase):
    async def test_events_go_to_their_type_topic_with_the_upstream_shape(self) -> None:
        _, mqtt, broker = await self.start()
        broker.accept()
        await self.plates(2)
        published = broker.on(f"{PREFIX}/events/plate")
        self.assertEqual(len(published), 2)
        first = published[0]
        self.assertEqual((first.qos, first.retain), (1, False))
        event = first.json()
        self.assertEqual(event["type"], "plate")
        self.assertEqual(event["plate"], "京A00001")
        self.assertEqual(event["lane"], "Entrance")
        self.assertEqual(event["decision"], {"open": True, "reason": "unknown", "source": "local"})
        self.assertTrue(event["id"].startswith("p-"))
        self.assertEqual(
            set(event),
            {"id", "type", "camera", "lane", "received_at", "camera_time", "plate", "license",
             "offline", "decision", "repeat", "images", "raw"},
        )
        self.assertEqual(await self.store.cursor("mqtt"), (await self.store.events_after(0, 10))[-1].seq)

    async def test_status_is_online_retained_on_connect(self) -> None:
        _, mqtt, broker = await self.start()
        self.assertEqual(mqtt.state, MqttLinkState.CONNECTING)
        broker.accept()
        self.assertEqual(broker.retained[f"{PREFIX}/status"], b"online")
        self.assertEqual(mqtt.state, MqttLinkState.UP)

    async def test_a_clean_stop_says_offline(self) -> None:
        parts, _, broker = await self.start()
        broker.accept()
        await parts.stop()
        self.assertEqual(broker.retained[f"{PREFIX}/status"], b"offline")
        self.assertEqual(broker.disconnects, 1)

    async def test_an_outage_of_any_length_loses_nothing_and_keeps_the_order(self) -> None:
        _, mqtt, broker = await self.start()
        await self.plates(300, CAMERA)  # more than the publishing window
        await self.plates(5, OTHER, first=1000)
        self.assertEqual(broker.sent, [])
        # 305 plates and the two cameras coming online
        self.assertEqual(await mqtt.publisher.queued(), 307)
        for _ in range(5):
            broker.fail("connection refused")
            self.clock.advance(120)
        broker.accept()
        events = broker.events_published()
        self.assertEqual(len(events), 305)
        by_camera = [e["plate"] for e in events if e["camera"] == CAMERA]
        self.assertEqual(by_camera, [f"京A{n:05d}" for n in range(1, 301)])
        self.assertEqual(await mqtt.publisher.queued(), 0)

    async def test_nothing_more_is_read_while_the_broker_does_not_acknowledge(self) -> None:
        _, mqtt, broker = await self.start(auto_ack=False)
        broker.accept()
        await self.plates(250)
        # a bounded window in flight, whatever the backlog
        in_flight = [sent for sent in broker.sent if "/events/" in sent.topic]
        self.assertEqual(len(in_flight), 200)  # the window
        self.assertEqual(await mqtt.publisher.queued(), 251)  # and the camera online
        broker.ack_all()
        broker.ack_all()
        self.assertEqual(len(broker.events_published()), 250)
        broker.ack_all()
        self.assertEqual(await mqtt.publisher.queued(), 0)

    async def test_a_damaged_row_is_set_aside_and_the_other_events_are_published(self) -> None:
        _, mqtt, broker = await self.start()
        await self.plates(5)
        kept = await self.store.recent_events(10, type="plate")
        damaged = kept[2]  # the third newest
        await self.store._run_on_store_thread(
            lambda connection: connection.execute(
                "UPDATE events SET raw_z = x'00ff00ff' WHERE id = ?", (damaged.id,)
            )
        )
        broker.accept()
        published = [event["id"] for event in broker.events_published()]
        self.assertEqual(published, [record.id for record in reversed(kept) if record is not damaged])
        self.assertEqual(await mqtt.publisher.queued(), 0)
        self.assertEqual((await self.store.stats()).quarantined_rows, 1)

    async def test_messages_in_flight_at_a_drop_count_once_acknowledged(self) -> None:
        _, mqtt, broker = await self.start(auto_ack=False)
        broker.accept()
        await self.plates(3)
        broker.drop()
        self.assertEqual(mqtt.state, MqttLinkState.BACKING_OFF)
        await self.plates(2, first=10)
        self.assertEqual(len(broker.events_published()), 3)  # nothing new while down
        self.clock.advance(2)  # the first back-off is at most 1 s
        self.assertEqual(broker.attempts, 2)
        broker.auto_ack = True
        broker.accept()
        self.assertEqual(len(broker.events_published()), 5)
        self.assertEqual(await mqtt.publisher.queued(), 0)

    async def test_a_restart_publishes_again_what_was_not_acknowledged(self) -> None:
        parts, mqtt, broker = await self.start(auto_ack=False)
        broker.accept()
        await self.plates(4)
        first_two = [sent for sent in broker.sent if "/events/" in sent.topic][:3]
        for sent in first_two:
            sent.acked.callback(None)
        await parts.stop()
        _, _, again = await self.start(state_dir=self.state_dir)
        again.accept()
        plates = [e["plate"] for e in again.events_published()]
        self.assertEqual(plates, ["京A00003", "京A00004"])  # (the first was camera online)

    async def test_a_new_mqtt_consumer_starts_at_the_newest_event(self) -> None:
        config = loopback_config(
            gateway={"id": "site-7"},
            lane=[{"name": "Entrance", "camera": CAMERA, "sync_whitelist": False}],
            policy={"unknown_plate": "allow"},
        )
        self.clock = Clock()
        self.clock.advance(START)
        state_dir = self.mktemp()
        parts = build_parts(parts_config(config, state_dir), self.clock)
        await parts.start()
        self.parts = parts
        await self.plates(3)
        await parts.stop()
        _, _, broker = await self.start(state_dir=state_dir)
        broker.accept()
        await self.plates(1, first=50)
        self.assertEqual([e["plate"] for e in broker.events_published()], ["京A00050"])

    async def test_the_cloud_link_and_mqtt_do_not_wait_for_each_other(self) -> None:
        config = site()
        config["upstream"] = {
            "url": "http://127.0.0.1:9", "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        }
        parts, mqtt, broker = await self.start(config)
        broker.accept()
        await self.plates(3)
        # the cloud is unreachable (nothing is built for it here): the outbox keeps them
        self.assertEqual(await self.store.outbox_depth(), 4)  # and the camera online
        self.assertEqual(len(broker.events_published()), 3)


class ConnectionTests(MqttTestCase):
    async def test_back_off_grows_and_is_capped(self) -> None:
        _, mqtt, broker = await self.start(site(max_backoff_seconds=8))
        for _ in range(10):
            broker.fail()
            before = broker.attempts
            self.clock.advance(8.01)
            self.assertEqual(broker.attempts, before + 1)
        self.assertEqual(mqtt.state, MqttLinkState.BACKING_OFF)
        self.assertEqual(mqtt.last_error, "connection refused")

    async def test_refused_credentials_are_said_once_and_retried_at_the_cap(self) -> None:
        with CapturedLog() as captured:
            _, mqtt, broker = await self.start(site(max_backoff_seconds=30))
            for _ in range(3):
                broker.refuse("the broker refused the connection: Not authorized")
                self.clock.advance(29)
                attempts = broker.attempts
                self.clock.advance(1.01)
                self.assertEqual(broker.attempts, attempts + 1)
        self.assertEqual(mqtt.state, MqttLinkState.DOWN)
        status = await mqtt.status()
        self.assertEqual(status.last_error, "the broker refused the connection: Not authorized")
        self.assertFalse(status.connected)
        said = [e for e in captured.events if "is down:" in str(e.get("log_format"))]
        self.assertEqual(len(said), 1)

    async def test_reconnected_after_a_drop(self) -> None:
        _, mqtt, broker = await self.start()
        broker.accept()
        broker.drop()
        self.clock.advance(1.01)
        broker.accept()
        self.assertEqual(mqtt.state, MqttLinkState.UP)
        self.assertEqual(len(broker.on(f"{PREFIX}/status")), 2)
