"""The gateway run inside a benchmark process, for what needs a prepared store.

``python -m bench.inproc outbox``: a store with ``--events`` plate events
queued in its outbox, then the gateway (built by ``gateway.tap.build_service``)
draining it to a stub cloud; prints ``RESULT <json>`` with the drain time and
this process's CPU while draining.

``python -m bench.inproc mqtt``: the same with ``--events`` plate events
behind the MQTT cursor (committed while the broker was away), then the
gateway publishing them to a broker at QoS 1 until the broker acknowledged
every one; then ``--paced`` more events committed one at a time, each timed
from its commit to the broker's acknowledgement.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import deferLater, react

from gateway.store import EventRecord, EventType, StoreService, plate_event_id


def _plate_record(number: int, now: datetime) -> EventRecord:
    camera = f"bench-{number % 20:02d}"
    plate = f"京A{number % 100000:05d}"
    return EventRecord(
        id=plate_event_id(camera, number, plate, int(now.timestamp()), number % 1_000_000),
        type=EventType.PLATE,
        received_at=now,
        camera=camera,
        lane=f"lane-{number % 20:02d}",
        camera_time=now,
        plate=plate,
        license=plate,
        decision_open=True,
        decision_reason="whitelist",
        decision_source="local",
        raw={"plateid": number, "license": plate, "confidence": 91, "triggerType": 1},
    )


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run_outbox(reactor: Any, args: argparse.Namespace) -> None:
    from gateway.config import parse_config
    from gateway.tap import build_service

    # The store alone fills the outbox (as a gateway that was offline for
    # days would have); then the gateway the composition root builds, with
    # its cloud link, drains it.
    filling = StoreService(reactor, Path(args.state_dir))
    filling.startService()
    store = await filling.when_open()
    filled = time.monotonic()
    now = datetime.now(timezone.utc)
    chunk = 1000
    for start in range(0, args.events, chunk):
        await gatherResults(
            [
                Deferred.fromCoroutine(store.commit_event(_plate_record(number, now)))
                for number in range(start, min(args.events, start + chunk))
            ]
        )
    depth = await store.outbox_depth()
    await filling.stopService()
    print(f"FILLED {depth} in {time.monotonic() - filled:.1f} s", flush=True)
    config = parse_config(
        {
            "gateway": {"state_dir": args.state_dir, "id": "bench-site", "timezone": "UTC"},
            "camera_server": {"listen": ["tcp:0:interface=127.0.0.1"]},
            "admin": {"listen": []},
            "upstream": {
                "url": args.cloud,
                "secret": args.secret,
                "images": "none",
                "batch_size": args.batch_size,
            },
        },
        source="<bench>",
    )
    gateway = build_service(config, reactor)
    upstream = gateway.upstream
    assert upstream is not None
    cpu, began = _cpu(), time.monotonic()
    gateway.startService()
    deadline = began + args.timeout
    while upstream.drainer.delivered < depth and time.monotonic() < deadline:
        await deferLater(reactor, 0.02)
    seconds = time.monotonic() - began
    used = _cpu() - cpu
    opened = gateway.store.store
    left = await opened.outbox_depth() if opened is not None else depth
    await gateway.stopService()
    print(
        "RESULT "
        + json.dumps(
            {
                "queued": depth,
                "delivered": upstream.drainer.delivered,
                "left": left,
                "seconds": seconds,
                "cpu_seconds": used,
                "batch_size": args.batch_size,
            }
        ),
        flush=True,
    )


async def _fill(reactor: Any, state_dir: str, events: int, cursors: tuple[str, ...]) -> tuple[int, float]:
    """A store with ``events`` plate events after the named consumers'
    cursors; (how many are behind them, seconds it took)."""
    filling = StoreService(reactor, Path(state_dir))
    filling.startService()
    store = await filling.when_open()
    for consumer in cursors:
        await store.start_cursor(consumer)  # the consumer existed before the outage
    filled = time.monotonic()
    now = datetime.now(timezone.utc)
    chunk = 1000
    for start in range(0, events, chunk):
        await gatherResults(
            [
                Deferred.fromCoroutine(store.commit_event(_plate_record(number, now)))
                for number in range(start, min(events, start + chunk))
            ]
        )
    behind = await store.events_behind(0)
    await filling.stopService()
    return behind, time.monotonic() - filled


async def run_mqtt(reactor: Any, args: argparse.Namespace) -> None:
    from gateway.config import parse_config
    from gateway.mqtt.publisher import CONSUMER, WINDOW
    from gateway.tap import build_service

    depth, fill_seconds = await _fill(reactor, args.state_dir, args.events, (CONSUMER,))
    print(f"FILLED {depth} in {fill_seconds:.1f} s", flush=True)
    config = parse_config(
        {
            "gateway": {"state_dir": args.state_dir, "id": "bench-site", "timezone": "UTC"},
            "camera_server": {"listen": ["tcp:0:interface=127.0.0.1"]},
            "admin": {"listen": []},
            "mqtt": {"url": args.broker, "discovery": False, "qos": 1},
        },
        source="<bench>",
    )
    gateway = build_service(config, reactor)
    mqtt = gateway.mqtt
    assert mqtt is not None
    publisher = mqtt.publisher
    stalls = _StallMeter(reactor)
    cpu, began = _cpu(), time.monotonic()
    gateway.startService()
    stalls.start()
    deadline = began + args.timeout
    while publisher.published < depth and time.monotonic() < deadline:
        await deferLater(reactor, 0.02)
    seconds = time.monotonic() - began
    used = _cpu() - cpu
    worst_stall = stalls.stop()
    drained = publisher.published
    # Paced: one event at a time, from its commit to the broker's acknowledgement.
    store = gateway.store.store
    assert store is not None
    latencies: list[float] = []
    now = datetime.now(timezone.utc)
    for number in range(args.paced):
        before = publisher.published
        sent = time.monotonic()
        await store.commit_event(_plate_record(depth + 1_000_000 + number, now))
        mqtt.notify_new_event()
        while publisher.published == before and time.monotonic() < sent + 5:
            await deferLater(reactor, 0.0005)
        latencies.append(time.monotonic() - sent)
        await deferLater(reactor, 0.01)
    await gateway.stopService()
    latencies.sort()
    print(
        "RESULT "
        + json.dumps(
            {
                "queued": depth,
                "delivered": drained,
                "seconds": seconds,
                "cpu_seconds": used,
                "worst_stall": worst_stall,
                "window": WINDOW,
                "paced": len(latencies),
                "p50": latencies[len(latencies) // 2] if latencies else None,
                "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
                if latencies
                else None,
            }
        ),
        flush=True,
    )


class _StallMeter:
    """The longest the reactor went without running a 10 ms timer on time."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._worst = 0.0
        self._call: Any = None
        self._due = 0.0

    def start(self) -> None:
        self._due = time.monotonic() + 0.01
        self._call = self._reactor.callLater(0.01, self._tick)

    def _tick(self) -> None:
        now = time.monotonic()
        self._worst = max(self._worst, now - self._due)
        self._due = now + 0.01
        self._call = self._reactor.callLater(0.01, self._tick)

    def stop(self) -> float:
        if self._call is not None and self._call.active():
            self._call.cancel()
        return self._worst


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.inproc outbox|mqtt ...``"""
    parser = argparse.ArgumentParser(prog="python -m bench.inproc")
    sub = parser.add_subparsers(dest="mode", required=True)
    outbox = sub.add_parser("outbox", help="queue events, drain them to a stub cloud")
    outbox.add_argument("--state-dir", required=True)
    outbox.add_argument("--events", type=int, default=100_000)
    outbox.add_argument("--cloud", required=True, help="http://127.0.0.1:PORT")
    outbox.add_argument("--secret", required=True)
    outbox.add_argument("--batch-size", type=int, default=200)
    outbox.add_argument("--timeout", type=float, default=300.0)
    mqtt = sub.add_parser("mqtt", help="queue events, publish them to a broker")
    mqtt.add_argument("--state-dir", required=True)
    mqtt.add_argument("--events", type=int, default=100_000)
    mqtt.add_argument("--broker", required=True, help="mqtt://127.0.0.1:PORT")
    mqtt.add_argument("--paced", type=int, default=200)
    mqtt.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    run = run_outbox if args.mode == "outbox" else run_mqtt
    react(lambda reactor: Deferred.fromCoroutine(run(reactor, args)))


if __name__ == "__main__":
    main(sys.argv[1:])
