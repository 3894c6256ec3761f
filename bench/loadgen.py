"""Camera load from the simulator, in a process of its own.

``python -m bench.loadgen MODE --server http://127.0.0.1:PORT ...`` runs a
:class:`gateway.simulator.CameraFleet` and prints one ``RESULT <json>`` line
at the end (after SIGTERM for the modes that run until told to stop):

* ``paced``: ``--cameras`` cameras each reading ``--rate`` plates a second
  for ``--duration`` seconds, every reply timed (the latency rows);
* ``flood``: the same cameras as fast as the server answers them, each one
  push at a time on its keep-alive connection (the throughput rows when
  ``wrk`` is not installed);
* ``comet``: cameras that only comet-poll, until SIGTERM; the result lists
  when each camera's barrier relay pulsed (command delivery);
* ``site``: the cameras of a site's lanes, comet-polling (Vzenith) or on
  their JSON heartbeat (ParkingCam), each reading ``--rate`` plates a second
  (0: none), until SIGTERM; the result lists every plate push with when it
  was sent and how long its reply took;
* ``offline``: one camera with offline records on, reading ``--plates``
  plates while the server is down; prints ``STORED <n>`` once they are all
  stored, then uploads them through the ContinuePushOffline handshake as
  soon as the server answers, and reports when the first and the last were
  answered.

Times in the results are ``time.time()`` seconds, comparable across
processes on one machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater, react

from gateway.simulator import CameraConfig, CameraFleet, fleet_configs
from gateway.simulator.report import CameraEvent, percentile


def _template(args: argparse.Namespace, **overrides: Any) -> CameraConfig:
    values: dict[str, Any] = dict(
        serialno="template",
        servers=(args.server,),
        heartbeat="off",
        no_plate_rate=0.0,
        images=args.images,
        image_bytes=args.image_bytes,
        seed=args.seed,
        # Distinct runs against one gateway never reuse (serialno, plateid):
        # every push is a new event, none is answered as a re-send.
        first_plateid=int(time.time() * 1000) % 1_000_000_000,
        timeout=args.timeout,
    )
    values.update(overrides)
    return CameraConfig(**values)


def _spread(configs: list[CameraConfig], rate: float) -> list[CameraConfig]:
    # Each camera starts a little later than the one before, so the plates
    # of the fleet arrive evenly rather than in bursts of all cameras at once.
    step = 1.0 / (rate * max(1, len(configs)))
    return [attrs.evolve(config, start_delay=config.index * step) for config in configs]


def _latencies(fleet: CameraFleet) -> list[float]:
    return [value * 1000 for camera in fleet.cameras for value in camera.latencies]


def _summary(fleet: CameraFleet, began: float, ended: float) -> dict[str, Any]:
    latencies = _latencies(fleet)
    replies = sum(sum(camera.replies.values()) for camera in fleet.cameras)
    failures = sum(sum(camera.failures.values()) for camera in fleet.cameras)
    return {
        "cameras": len(fleet.cameras),
        "replies": replies,
        "failures": failures,
        "seconds": ended - began,
        "p50_ms": percentile(latencies, 0.5),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": max(latencies) if latencies else None,
    }


async def paced(reactor: Any, args: argparse.Namespace) -> dict[str, Any]:
    plates = max(1, round(args.rate * args.duration))
    configs = fleet_configs(args.cameras, _template(args, plates=plates, rate=args.rate))
    fleet = CameraFleet(reactor, _spread(configs, args.rate))
    began = time.time()
    await fleet.run(duration=args.duration + 30.0, drain_timeout=10.0)
    return _summary(fleet, began, time.time())


async def flood(reactor: Any, args: argparse.Namespace) -> dict[str, Any]:
    # More plates than any server answers in the time: each camera always has
    # the next one waiting, so it pushes again as soon as it is answered.
    rate = 200.0
    plates = int(rate * args.duration) + 1
    configs = fleet_configs(args.cameras, _template(args, plates=plates, rate=rate))
    fleet = CameraFleet(reactor, configs)
    began = time.time()
    await fleet.run(duration=args.duration)
    return _summary(fleet, began, time.time())


def _print_result(result: dict[str, Any]) -> None:
    print("RESULT " + json.dumps(result), flush=True)


def _until_terminated(reactor: Any) -> tuple[Deferred[None], Deferred[None]]:
    """(stopped, reported): ``stopped`` fires at SIGTERM; the reactor then
    waits for ``reported`` (fire it once the result is written)."""
    stopped: Deferred[None] = Deferred()
    reported: Deferred[None] = Deferred()

    def shutting_down() -> Deferred[None]:
        stopped.callback(None)
        return reported

    reactor.addSystemEventTrigger("before", "shutdown", shutting_down)
    return stopped, reported


async def comet(reactor: Any, args: argparse.Namespace) -> None:
    template = _template(args, heartbeat="comet", comet_timeout=30.0)
    fleet = CameraFleet(reactor, fleet_configs(args.cameras, template))
    stopped, reported = _until_terminated(reactor)
    began = time.time()
    # Cameras on a site boot at different times: their polls are spread
    # over the hold time, not all answered in one burst.
    step = args.spread / max(1, len(fleet.cameras))
    for index, camera in enumerate(fleet.cameras):
        reactor.callLater(index * step, camera.start)
    print("STARTED", flush=True)
    await stopped
    ended = time.time()
    await fleet.stop()
    summary = _summary(fleet, began, ended)
    summary["polls"] = sum(camera.pushes.get("comet", 0) for camera in fleet.cameras)
    summary["pulses"] = {
        camera.config.serialno: [pulse.at for pulse in camera.relay_pulses]
        for camera in fleet.cameras
        if camera.relay_pulses
    }
    summary["serials"] = [camera.config.serialno for camera in fleet.cameras]
    _print_result(summary)
    reported.callback(None)


async def site(reactor: Any, args: argparse.Namespace) -> None:
    heartbeat: dict[str, Any] = (
        {"heartbeat": "comet", "comet_timeout": 30.0}
        if args.dialect == "vzenith"
        else {"heartbeat": "common", "heartbeat_interval": args.heartbeat_interval}
    )
    plates = int(args.rate * 24 * 3600) if args.rate > 0 else 0
    template = _template(
        args, dialect=args.dialect, plates=plates, rate=max(args.rate, 0.001), **heartbeat
    )
    configs = fleet_configs(args.cameras, template)
    fleet = CameraFleet(reactor, _spread(configs, max(args.rate, 1.0)))
    stopped, reported = _until_terminated(reactor)
    began = time.time()
    fleet.start()
    print("STARTED " + " ".join(camera.config.serialno for camera in fleet.cameras), flush=True)
    await stopped
    ended = time.time()
    await fleet.stop()
    summary = _summary(fleet, began, ended)
    summary["plates"] = sorted(
        (sent, seconds * 1000) for camera in fleet.cameras for sent, seconds in camera.plate_timings
    )
    summary["plate_failures"] = sorted(
        sent for camera in fleet.cameras for sent in camera.plate_failures
    )
    _print_result(summary)
    reported.callback(None)


async def offline(reactor: Any, args: argparse.Namespace) -> dict[str, Any]:
    answered: list[float] = []

    def seen(event: CameraEvent) -> None:
        if event.kind == "push" and event.text.startswith("offline "):
            answered.append(event.at)

    template = _template(
        args,
        plates=args.plates,
        # As fast as the failing pushes go: the records pile up while the server is down.
        rate=5000.0,
        offline_records=True,
        offline_capacity=max(args.plates, 1),
        offline_retry=0.05,
    )
    fleet = CameraFleet(reactor, fleet_configs(1, template), on_event=seen)
    camera = fleet.cameras[0]
    fleet.start()
    while not (
        camera.produced and camera.offline_pending + camera.offline_delivered >= args.plates
    ):
        await deferLater(reactor, 0.05)
    print(f"STORED {camera.offline_pending}", flush=True)
    deadline = time.time() + args.duration
    while not camera.drained and time.time() < deadline:
        await deferLater(reactor, 0.01)
    await fleet.stop()
    first = answered[0] if answered else None
    last = answered[-1] if answered else None
    return {
        "stored": camera.offline_stored,
        "delivered": camera.offline_delivered,
        "pending": camera.offline_pending,
        "interrupted": camera.offline_interrupted,
        "dropped": camera.offline_dropped,
        "first_answer": first,
        "last_answer": last,
        "drained": camera.drained,
    }


Mode = Callable[[Any, argparse.Namespace], Awaitable[dict[str, Any] | None]]
MODES: dict[str, Mode] = {
    "paced": paced,
    "flood": flood,
    "comet": comet,
    "offline": offline,
    "site": site,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen")
    parser.add_argument("mode", choices=sorted(MODES))
    parser.add_argument("--server", required=True, help="http://127.0.0.1:PORT")
    parser.add_argument("--cameras", type=int, default=20)
    parser.add_argument("--rate", type=float, default=10.0, help="plates/s per camera (paced)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds")
    parser.add_argument("--plates", type=int, default=9000, help="offline records (offline)")
    parser.add_argument("--images", choices=("none", "full"), default="none")
    parser.add_argument("--image-bytes", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=5.0, help="push timeout, seconds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--spread", type=float, default=0.0, help="seconds over which comet cameras start"
    )
    parser.add_argument("--dialect", choices=("vzenith", "parkingcam"), default="vzenith")
    parser.add_argument(
        "--heartbeat-interval", type=float, default=10.0, help="ParkingCam heartbeats (site)"
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    """Run one mode and print ``RESULT <json>``."""
    args = build_parser().parse_args(argv)

    async def entry(reactor: Any) -> None:
        result = await MODES[args.mode](reactor, args)
        if result is not None:
            _print_result(result)

    react(lambda reactor: Deferred.fromCoroutine(entry(reactor)))


if __name__ == "__main__":
    main(sys.argv[1:])
