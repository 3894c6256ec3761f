"""The gateway run inside a benchmark process, for what needs a prepared store.

``python -m bench.inproc outbox``: a store with ``--events`` plate events
queued in its outbox, then the gateway (built by ``gateway.tap.build_service``)
draining it to a stub cloud; prints ``RESULT <json>`` with the drain time and
this process's CPU while draining.
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


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.inproc outbox ...``"""
    parser = argparse.ArgumentParser(prog="python -m bench.inproc")
    sub = parser.add_subparsers(dest="mode", required=True)
    outbox = sub.add_parser("outbox", help="queue events, drain them to a stub cloud")
    outbox.add_argument("--state-dir", required=True)
    outbox.add_argument("--events", type=int, default=100_000)
    outbox.add_argument("--cloud", required=True, help="http://127.0.0.1:PORT")
    outbox.add_argument("--secret", required=True)
    outbox.add_argument("--batch-size", type=int, default=200)
    outbox.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    react(lambda reactor: Deferred.fromCoroutine(run_outbox(reactor, args)))


if __name__ == "__main__":
    main(sys.argv[1:])
