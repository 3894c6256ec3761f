"""Prometheus metrics: what the code paths count, what is read at scrape
time, and ``/metrics`` on the admin listener."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import succeed
from twisted.trial.unittest import TestCase

from gateway import __version__
from gateway.admin.metrics import CONTENT_TYPE_LATEST, MAX_LABEL_VALUES, GatewayMetrics
from gateway.bus import EventBus
from support import CapturedLog
from support.admin import ENTRANCE, SCRAPER_TOKEN, AdminTestCase, Client, default_settings


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, by name and sorted labels."""
    found = {}
    for family in text_string_to_metric_families(text.decode("utf-8")):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def scrape(metrics: GatewayMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return samples(await metrics.render())


class GatewayMetricsTests(TestCase):
    async def test_code_path_counters_and_histograms(self) -> None:
        metrics = GatewayMetrics(process=False)
        for kind in ("plate", "plate", "heartbeat"):
            metrics.push(kind)
        metrics.decision("whitelist", "local")
        metrics.decision("unknown", "cloud")
        metrics.decision("unknown", "cloud")
        metrics.reply_latency(0.004)
        metrics.reply_latency(0.3)
        metrics.store_commit(0.002)
        metrics.upstream_error("connectivity")
        found = await scrape(metrics)
        self.assertEqual(found[("anpr_gateway_camera_pushes_total", (("kind", "plate"),))], 2)
        self.assertEqual(found[("anpr_gateway_camera_pushes_total", (("kind", "heartbeat"),))], 1)
        self.assertEqual(
            found[("anpr_gateway_decisions_total", (("reason", "unknown"), ("source", "cloud")))], 2
        )
        self.assertEqual(
            found[("anpr_gateway_decisions_total", (("reason", "whitelist"), ("source", "local")))],
            1,
        )
        self.assertEqual(found[("anpr_gateway_plate_reply_seconds_count", ())], 2)
        self.assertEqual(found[("anpr_gateway_plate_reply_seconds_bucket", (("le", "0.005"),))], 1)
        self.assertEqual(found[("anpr_gateway_plate_reply_seconds_bucket", (("le", "0.5"),))], 2)
        self.assertEqual(found[("anpr_gateway_plate_reply_seconds_bucket", (("le", "0.001"),))], 0)
        self.assertEqual(found[("anpr_gateway_plate_reply_seconds_bucket", (("le", "5.0"),))], 2)
        self.assertEqual(found[("anpr_gateway_store_commit_seconds_count", ())], 1)
        self.assertEqual(
            found[("anpr_gateway_upstream_errors_total", (("kind", "connectivity"),))], 1
        )
        self.assertIn(("anpr_gateway_info", (("version", __version__),)), found)

    async def test_each_instance_has_its_own_registry(self) -> None:
        first, second = GatewayMetrics(), GatewayMetrics()
        first.push("plate")
        self.assertEqual(
            (await scrape(first))[("anpr_gateway_camera_pushes_total", (("kind", "plate"),))], 1
        )
        self.assertNotIn(
            ("anpr_gateway_camera_pushes_total", (("kind", "plate"),)), await scrape(second)
        )
        # Process metrics come with it (Linux /proc).
        self.assertTrue(any(name.startswith("process_") for name, _ in await scrape(first)))

    async def test_scrape_time_gauges_sync_and_async_and_failing(self) -> None:
        held = [2]
        depth: list[Any] = [succeed(17)]

        def broken() -> int:
            raise RuntimeError("source bug")

        metrics = GatewayMetrics(
            comet_polls_held=lambda: held[0],
            cameras_online=broken,
            outbox_depth=lambda: depth[0],
            process=False,
        )
        with CapturedLog() as captured:
            found = await scrape(metrics)
        self.assertEqual(found[("anpr_gateway_comet_polls_held", ())], 2)
        self.assertEqual(found[("anpr_gateway_outbox_depth", ())], 17)
        self.assertEqual(found[("anpr_gateway_cameras_online", ())], 0)
        self.assertEqual(len(captured.failures()), 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        held[0] = 0

        async def later() -> int:
            return 3

        depth[0] = later()
        found = await scrape(metrics)
        self.flushLoggedErrors(RuntimeError)
        self.assertEqual(found[("anpr_gateway_comet_polls_held", ())], 0)
        self.assertEqual(found[("anpr_gateway_outbox_depth", ())], 3)
        # Metrics without a source are not exported at all.
        self.assertNotIn(("anpr_gateway_cameras_known", ()), found)

    async def test_serial_port_states(self) -> None:
        ports = [
            {"name": "entrance-board", "state": "open"},
            {"name": "exit-board", "state": "missing"},
        ]
        metrics = GatewayMetrics(serial_ports=lambda: ports, process=False)
        found = await scrape(metrics)

        def state(port: str, value: str) -> float:
            return found[("anpr_gateway_serial_port_state", (("port", port), ("state", value)))]

        self.assertEqual(state("entrance-board", "open"), 1)
        self.assertEqual(state("entrance-board", "missing"), 0)
        self.assertEqual(state("exit-board", "missing"), 1)
        self.assertEqual(state("exit-board", "open"), 0)
        del ports[1]
        found = await scrape(metrics)
        self.assertNotIn(
            ("anpr_gateway_serial_port_state", (("port", "exit-board"), ("state", "missing"))),
            found,
        )

    async def test_bus_events_and_commands_are_counted_until_unsubscribed(self) -> None:
        bus = EventBus()
        metrics = GatewayMetrics(process=False)
        stop = metrics.watch(bus)
        bus.publish("event", {"type": "plate"})
        bus.publish("event", {"type": "plate"})
        bus.publish("event", {"type": "io"})
        bus.publish("command", {"type": "open", "state": "delivered"})
        bus.publish("camera", {"serialno": "x"})
        stop()
        bus.publish("event", {"type": "plate"})
        found = await scrape(metrics)
        self.assertEqual(found[("anpr_gateway_events_total", (("type", "plate"),))], 2)
        self.assertEqual(found[("anpr_gateway_events_total", (("type", "io"),))], 1)
        self.assertEqual(
            found[("anpr_gateway_commands_total", (("state", "delivered"), ("type", "open")))], 1
        )
        self.assertEqual(len(bus), 0)

    async def test_label_values_are_bounded(self) -> None:
        metrics = GatewayMetrics(process=False)
        for number in range(MAX_LABEL_VALUES + 10):
            metrics.decision(f"reason-{number}", "local")
        found = await scrape(metrics)
        decisions = {
            labels: value
            for (name, labels), value in found.items()
            if name == "anpr_gateway_decisions_total"
        }
        self.assertEqual(len(decisions), MAX_LABEL_VALUES + 1)
        self.assertEqual(decisions[(("reason", "other"), ("source", "other"))], 10)


class MetricsEndpointTests(AdminTestCase):
    async def test_metrics_need_credentials_and_show_the_live_gateway(self) -> None:
        await self.build()
        self.assertEqual((await Client(self.api).get("/metrics")).status, 401)
        await self.camera_online()
        scraper = Client(self.api, token=SCRAPER_TOKEN)
        reply = await scraper.get("/metrics")
        self.assertEqual(reply.status, 200)
        self.assertEqual(reply.header("content-type"), CONTENT_TYPE_LATEST)
        found = samples(reply.body)
        self.assertEqual(found[("anpr_gateway_cameras_online", ())], 1)
        # The plate and the camera coming online, both queued for the cloud
        # in the real store, counted from the real bus.
        self.assertEqual(found[("anpr_gateway_outbox_depth", ())], await self.store.outbox_depth())
        self.assertEqual(found[("anpr_gateway_events_total", (("type", "plate"),))], 1)
        client = await self.operator()
        await client.post(f"/api/cameras/{ENTRANCE}/open")
        self.clock.advance(self.control.expiry)
        found = samples((await scraper.get("/metrics")).body)
        self.assertEqual(
            found[("anpr_gateway_commands_total", (("state", "expired"), ("type", "open")))], 1
        )

    async def test_public_metrics(self) -> None:
        await self.build(settings=default_settings(metrics_public=True))
        reply = await Client(self.api).get("/metrics")
        self.assertEqual(reply.status, 200)
        self.assertIn(b"anpr_gateway_info", reply.body)
        # Only the metrics: the rest still needs a login.
        self.assertEqual((await Client(self.api).get("/api/status")).status, 401)
