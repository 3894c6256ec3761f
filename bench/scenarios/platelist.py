"""A site at field scale: 100 000 plates, 20 lanes whose cameras comet-poll and
read plates, while the plate list changes every way it does on a site.

The gateway runs in a measuring process of its own on the gateway's core
(``python -m bench.scenarios.platelist serve ...``): the real service tree
built by ``gateway.tap.build_service`` from a configuration, as twistd builds
it, plus a probe that measures how late the event loop runs a timer due every
5 ms (the event-loop stall). The lanes' cameras are simulated in another
process on the other core (``bench.loadgen site``), each reading a plate a
second; every plate reply is timed as the camera sees it.

Phases, one after the other, each measured from its start until the plate
list and every camera's work have settled:

(a) one row appended to the watched CSV file of 100 000 rows;
(b) one admin edit (the plate list's upsert, which ``POST /api/whitelist``
    calls once the body is checked);
(c) a cloud sync page of 1 000 changes (decoded by the sync feed's own
    ``decode_page``, then applied as the feed applies it);
(e) the hourly validity pass (every camera's list recomputed);
(d) a cloud replacement of 100 000 entries (the cloud's whole list);
(f) a CSV file of 500 000 rows imported;

and the time a new camera takes to receive its whole list: a Vzenith camera
(5 rows a reply, comet polls answered at once while rows are pending) and a
ParkingCam camera (batches of 1 000 rows, one per heartbeat, each confirmed).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.report import Row, ScenarioResult, ms, number, verdict
from bench.settings import Context, progress
from bench.system import LOAD_CPU, SERVER_CPU, BenchError, Child, free_port, python

NAME = "plate list at field scale"
STALL_TARGET_MS = 50.0
REPLY_TARGET_MS = 200.0
PROBE_SECONDS = 0.005
PLATES_PER_SECOND = 1.0  # per camera
SEED_LANES = 11
SEED_NEW_VZENITH = 12
SEED_NEW_PARKINGCAM = 13
PARKINGCAM_HEARTBEAT = 1.0
PHASES = (
    ("a", "one CSV row changes"),
    ("b", "one admin edit"),
    ("c", "a cloud sync page of 1 000 changes"),
    ("d", "a cloud replacement of 100 000 entries"),
    ("e", "the hourly validity pass"),
    ("f", "a CSV import of 500 000 rows"),
)


def _serials(count: int, seed: int, dialect: str) -> list[str]:
    """The serial numbers ``bench.loadgen site`` gives its cameras."""
    from gateway.simulator.config import CameraConfig, fleet_configs

    template = CameraConfig(
        serialno="template", servers=("http://127.0.0.1:1",), seed=seed, dialect=dialect
    )
    return [config.serialno for config in fleet_configs(count, template, bind_base=None)]


def _plates(count: int, seed: int, exclude: set[str] = frozenset()) -> list[str]:  # type: ignore[assignment]
    from gateway.simulator.plates import generate_plate

    rng = random.Random(seed)
    unique: dict[str, None] = {}
    while len(unique) < count:
        plate = generate_plate(rng, no_plate_rate=0.0).license
        if plate not in exclude:
            unique[plate] = None
    return list(unique)


def _csv(plates: list[str]) -> str:
    return "plate,valid_until,note\n" + "".join(f"{plate},,resident\n" for plate in plates)


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


# -- the measuring process -------------------------------------------------------------


class StallProbe:
    """How late the event loop runs a timer due every ``interval`` seconds."""

    def __init__(self, reactor: Any, interval: float = PROBE_SECONDS) -> None:
        self._reactor = reactor
        self._interval = interval
        self.samples: list[tuple[float, float]] = []  # (wall time, seconds late) over 1 ms
        self._due = 0.0

    def start(self) -> None:
        self._due = time.monotonic() + self._interval
        self._reactor.callLater(self._interval, self._tick)

    def _tick(self) -> None:
        now = time.monotonic()
        late = now - self._due
        if late > 0.001:
            self.samples.append((time.time(), late))
        self._due = now + self._interval
        self._reactor.callLater(self._interval, self._tick)

    def watch_gc(self) -> None:
        """Also time every garbage collection (generation, wall time, seconds)."""
        import gc

        self.collections: list[tuple[int, float, float]] = []
        began: list[float] = [0.0]

        def callback(phase: str, info: dict[str, Any]) -> None:
            if phase == "start":
                began[0] = time.monotonic()
            else:
                self.collections.append(
                    (info["generation"], time.time(), time.monotonic() - began[0])
                )

        gc.callbacks.append(callback)

    def watch_stalls(self, path: Path) -> None:
        """Debugging: a thread that samples the event loop thread's stack
        while the loop is more than 30 ms late, written to ``path`` at exit."""
        import atexit
        import collections
        import threading
        import traceback

        reactor_thread = threading.get_ident()
        seen: collections.Counter[str] = collections.Counter()

        def watch() -> None:
            while True:
                time.sleep(0.005)
                if self._due and time.monotonic() - self._due > 0.030:
                    for ident, frame in sys._current_frames().items():
                        if ident == threading.get_ident():
                            continue
                        name = "reactor" if ident == reactor_thread else "thread"
                        stack = "".join(traceback.format_stack(frame)[-6:])
                        seen[f"{name}\n{stack}"] += 1

        threading.Thread(target=watch, daemon=True).start()

        def write() -> None:
            timeline = path.with_name("timeline.json")
            timeline.write_text(
                json.dumps({"stalls": self.samples, "collections": self.collections})
            )
            with open(path, "w", encoding="utf-8") as out:
                for stack, count in seen.most_common(15):
                    out.write(f"=== {count}\n{stack}\n")

        atexit.register(write)

    def worst(self, start: float, end: float) -> float:
        return max((late for at, late in self.samples if start <= at <= end), default=0.0)


async def serve(reactor: Any, args: argparse.Namespace) -> None:
    from twisted.internet.task import deferLater

    from gateway.config import parse_config
    from gateway.policy.cameralist import CameraListRules, desired_rows
    from gateway.policy.whitelist import WhitelistEntry
    from gateway.store import PlateRow, Store
    from gateway.tap import build_service
    from gateway.upstream.sync import decode_page

    directory = Path(args.dir)
    state_dir = directory / "state"
    csv_path = directory / "plates.csv"
    plates = _plates(args.plates, 1)
    csv_path.write_text(_csv(plates), encoding="utf-8")
    # What the cloud and the staff send is made before the gateway starts: its making
    # is not the gateway's work.
    cloud_plates = _plates(args.plates, 2, exclude=set(plates))
    page_of_1000 = json.dumps(
        {
            "cursor": "1",
            "whitelist": {"upsert": [{"plate": p, "note": "cloud"} for p in cloud_plates[:1000]]},
        }
    ).encode()
    whole_cloud_list = json.dumps(
        {
            "cursor": "2",
            "whitelist": {
                "replace": True,
                "upsert": [{"plate": p, "note": "cloud list"} for p in cloud_plates],
            },
        }
    ).encode()
    big = _plates(args.big_csv, 3, exclude=set(cloud_plates))
    # The new file is written beside the watched one and moved over it in
    # the phase, as a site's script would: writing it is not the gateway's work.
    big_path = directory / "plates-big.csv"
    big_path.write_text(_csv(big), encoding="utf-8")
    lanes = _serials(args.lanes, SEED_LANES, "vzenith")
    (new_vzenith,) = _serials(1, SEED_NEW_VZENITH, "vzenith")
    (new_parkingcam,) = _serials(1, SEED_NEW_PARKINGCAM, "parkingcam")

    # The site as it ran yesterday: the list stored, each camera holding
    # its lane's part (its default capacity) as checkpointed then.
    seeded = time.monotonic()
    store = await Store.open(reactor, state_dir)
    rows = [PlateRow(plate=plate, note="resident", source="csv") for plate in plates]
    await store.write_plates(rows)
    entries = [WhitelistEntry(plate, note="resident", source="csv") for plate in plates]
    from datetime import datetime, timezone

    now = datetime.now(timezone.utc)
    for index, serialno in enumerate(lanes):
        desired = desired_rows(
            entries, CameraListRules(lane=f"Lane {index + 1}", capacity=10_000), now
        )
        await store.save_camera_list(
            serialno.casefold(), dialect="vzenith", known=True, cleared=True, changes=desired.rows
        )
    await store.close()
    print(f"SEEDED {time.monotonic() - seeded:.1f}", flush=True)

    config = parse_config(
        {
            "gateway": {"state_dir": str(state_dir), "timezone": "UTC", "id": "bench-site"},
            "camera_server": {"listen": [f"tcp:{args.port}:interface=127.0.0.1"]},
            "admin": {"listen": []},
            "policy": {"whitelist_csv": str(csv_path)},
            "lane": [
                {"name": f"Lane {index + 1}", "camera": serialno, "heartbeat": "comet"}
                for index, serialno in enumerate(lanes)
            ]
            + [
                {
                    "name": "New Vzenith",
                    "camera": new_vzenith,
                    "heartbeat": "comet",
                    "camera_list_max": args.new_camera_plates,
                },
                {"name": "New ParkingCam", "camera": new_parkingcam},
            ],
        },
        source="<bench>",
    )
    service = build_service(config, reactor)
    probe = StallProbe(reactor)
    probe.watch_gc()
    if args.debug_stalls:
        probe.watch_stalls(directory / "stalls.txt")
    started = time.monotonic()
    service.startService()
    await service.plate_list.when_settled()
    probe.start()
    startup = time.monotonic() - started
    print(f"READY {startup:.2f}", flush=True)
    plate_list, sync, registry = service.plate_list, service.camera_sync, service.registry
    assert sync is not None

    def settled(serials: list[str]) -> bool:
        if plate_list._lock.locked or sync._recompute_running or sync._recompute_queue:
            return False
        states = [sync.state(serialno) for serialno in serials]
        return all(state is not None and state.in_sync for state in states)

    async def until(condition: Callable[[], bool], seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if condition():
                return True
            await deferLater(reactor, 0.05, lambda: None)
        return False

    if not await until(lambda: settled(lanes), 300):
        raise SystemExit("the lanes' cameras never came in sync")
    rss_loaded = _rss_mb()
    phases: list[dict[str, Any]] = []

    async def phase(key: str, action: Callable[[], Awaitable[Any]]) -> None:
        await deferLater(reactor, 2.0, lambda: None)  # a quiet moment between phases
        began = time.time()
        await action()
        done = await until(lambda: settled(lanes), 600)
        ended = time.time()
        collections = [c for c in probe.collections if began <= c[1] <= ended + 0.5]
        phases.append(
            {
                "gc_worst_ms": max((c[2] for c in collections), default=0.0) * 1000,
                "gc_full": sum(1 for c in collections if c[0] == 2),
                "phase": key,
                "start": began,
                "end": ended,
                "seconds": ended - began,
                "settled": done,
                "stall_ms": probe.worst(began, ended + 0.5) * 1000,
                "plates": len(plate_list.index),
            }
        )
        print(f"PHASE {json.dumps(phases[-1])}", flush=True)

    # The sync feed decodes pages in the gateway's bulk thread.
    in_thread = service.getServiceNamed("background-work")

    async def csv_row() -> None:
        with csv_path.open("a", encoding="utf-8") as handle:
            handle.write("粤Z99999,,visitor\n")
        await until(lambda: "粤Z99999" in plate_list.index, 60)

    async def admin_edit() -> None:
        await plate_list.upsert([WhitelistEntry("粤Z88888", note="visitor", source="admin")])


    async def cloud_page() -> None:
        page = page_of_1000
        decoded = await decode_page(page, plate_list.codec, in_thread)
        await plate_list.upsert(list(decoded.whitelist.upsert))

    async def validity_pass() -> None:
        sync._last_expiry_pass = -1e9  # as when the hour is up
        sync._periodic()

    async def cloud_replacement() -> None:
        page = whole_cloud_list
        decoded = await decode_page(page, plate_list.codec, in_thread)
        await plate_list.replace_cloud(list(decoded.whitelist.upsert))

    async def big_import() -> None:
        os.replace(big_path, csv_path)
        await until(lambda: big[-1] in plate_list.index, 300)

    for key, action in (
        ("a", csv_row),
        ("b", admin_edit),
        ("c", cloud_page),
        ("e", validity_pass),
    ):
        if key in args.phases:
            await phase(key, action)

    # New cameras: the parent starts them on cue; each is timed from its
    # first contact to holding its whole list.
    lists = len(plate_list.index)
    print("NEW-CAMERAS", flush=True)
    new: dict[str, float] = {}
    first: dict[str, float] = {}
    deadline = time.monotonic() + (900 if "n" in args.phases else 0)
    while len(new) < 4 and time.monotonic() < deadline:
        for serialno in (new_vzenith, new_parkingcam):
            camera = registry.get(serialno)
            if serialno not in first and camera is not None and camera.online:
                first[serialno] = time.monotonic()
            if serialno in first and serialno not in new and settled([serialno]):
                state = sync.state(serialno)
                assert state is not None
                new[serialno] = time.monotonic() - first[serialno]
                new[serialno + ":rows"] = len(state.work.has)
        await deferLater(reactor, 0.05, lambda: None)
    if len(new) < 4 and "n" in args.phases:
        raise SystemExit("the new cameras never got their lists")
    print("NEW-DONE", flush=True)

    for key, action in (("d", cloud_replacement), ("f", big_import)):
        if key in args.phases:
            await phase(key, action)

    await service.stopService()
    print(
        "RESULT "
        + json.dumps(
            {
                "startup_s": startup,
                "rss_loaded_mb": rss_loaded,
                "rss_end_mb": _rss_mb(),
                "phases": phases,
                "new_vzenith_s": new.get(new_vzenith),
                "new_vzenith_rows": new.get(new_vzenith + ":rows"),
                "new_parkingcam_s": new.get(new_parkingcam),
                "new_parkingcam_rows": new.get(new_parkingcam + ":rows"),
                "list_when_new": lists,
                "stalls_over_10ms": sum(1 for _, late in probe.samples if late > 0.010),
            }
        ),
        flush=True,
    )


# -- the harness side ------------------------------------------------------------------


def _loadgen(directory: Path, name: str, port: int, *options: str) -> Child:
    child = Child(
        name,
        [
            python(),
            "-m",
            "bench.loadgen",
            "site",
            "--server",
            f"http://127.0.0.1:{port}",
            *options,
        ],
        log=directory / f"{name}.log",
        cpu=LOAD_CPU,
        capture=True,
    )
    line = child.read_line(60)
    if line is None or not line.startswith("STARTED"):
        raise BenchError(f"{name} did not start: {child.output_tail()}")
    return child


def _result(child: Child, timeout: float) -> dict[str, Any]:
    for line in child.lines_until_end(timeout):
        if line.startswith("RESULT "):
            child.wait(30)
            result: dict[str, Any] = json.loads(line[len("RESULT ") :])
            return result
    child.wait(30)
    raise BenchError(f"{child.name} gave no result: {child.output_tail()}")


def _wait_line(child: Child, prefix: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = child.read_line(max(0.1, deadline - time.monotonic()))
        if line is None:
            break
        if line.startswith(prefix):
            return line.strip()
    raise BenchError(f"{child.name}: no {prefix} line: {child.output_tail()}")


def run(ctx: Context) -> ScenarioResult:
    settings = ctx.settings
    began = time.monotonic()
    directory = ctx.directory("platelist")
    port = free_port()
    progress(
        f"plate list: {settings.site_plates} plates, {settings.site_lanes} lanes, "
        f"a {settings.site_big_csv}-row CSV"
    )
    gateway = Child(
        "platelist-gateway",
        [
            python(),
            "-m",
            "bench.scenarios.platelist",
            "serve",
            "--dir",
            str(directory),
            "--port",
            str(port),
            "--plates",
            str(settings.site_plates),
            "--lanes",
            str(settings.site_lanes),
            "--big-csv",
            str(settings.site_big_csv),
            "--new-camera-plates",
            str(settings.site_new_camera_plates),
        ],
        log=directory / "gateway.log",
        cpu=SERVER_CPU,
        capture=True,
    )
    loads: list[Child] = []
    try:
        _wait_line(gateway, "READY", 600)
        lanes = _loadgen(
            directory,
            "platelist-lanes",
            port,
            "--cameras",
            str(settings.site_lanes),
            "--seed",
            str(SEED_LANES),
            "--rate",
            str(PLATES_PER_SECOND),
        )
        loads.append(lanes)
        _wait_line(gateway, "NEW-CAMERAS", 1800)
        loads.append(
            _loadgen(directory, "platelist-new-vzenith", port, "--cameras", "1", "--seed",
                     str(SEED_NEW_VZENITH), "--rate", "0")
        )
        loads.append(
            _loadgen(directory, "platelist-new-parkingcam", port, "--cameras", "1", "--seed",
                     str(SEED_NEW_PARKINGCAM), "--rate", "0", "--dialect", "parkingcam",
                     "--heartbeat-interval", str(PARKINGCAM_HEARTBEAT))
        )
        _wait_line(gateway, "NEW-DONE", 1800)
        for child in loads[1:]:
            child.stop()
        result = _result(gateway, 1800)
        lanes.process.terminate()
        load = _result(lanes, 120)
    finally:
        for child in [gateway, *loads]:
            child.stop()
    return _report(settings, result, load, time.monotonic() - began)


def _report(settings: Any, result: dict[str, Any], load: dict[str, Any], seconds: float) -> ScenarioResult:
    plates = [(sent, latency) for sent, latency in load["plates"]]
    failures = load["plate_failures"]
    site = f"{number(settings.site_plates)} plates, {settings.site_lanes} lanes"
    rows = []
    names = dict(PHASES)
    for phase in result["phases"]:
        window = [lat for sent, lat in plates if phase["start"] <= sent <= phase["end"]]
        failed = sum(1 for sent in failures if phase["start"] <= sent <= phase["end"])
        worst_reply = max(window, default=0.0)
        label = names[phase["phase"]]
        if phase["phase"] == "d":
            label = f"a cloud replacement of {number(settings.site_plates)} entries"
        if phase["phase"] == "f":
            label = f"a CSV import of {number(settings.site_big_csv)} rows"
        met = (
            phase["stall_ms"] < STALL_TARGET_MS
            and worst_reply < REPLY_TARGET_MS
            and failed == 0
            and phase["settled"]
        )
        rows.append(
            Row(
                f"site of {site}",
                f"({phase['phase']}) {label}: worst event-loop stall, worst plate reply",
                f"stall {ms(phase['stall_ms'])}, reply {ms(worst_reply)} "
                f"({len(window)} plates answered, {failed} failed; settled in "
                f"{phase['seconds']:.1f} s, list then {number(phase['plates'])})",
                "-",
                "-",
                f"stall < {STALL_TARGET_MS:.0f} ms, replies < {REPLY_TARGET_MS:.0f} ms",
                verdict(met),
                "-",
            )
        )
    rows.append(
        Row(
            f"site of {site}",
            "a new camera receives its whole list",
            f"Vzenith {number(result['new_vzenith_rows'])} rows in "
            f"{result['new_vzenith_s']:.1f} s; ParkingCam {number(result['new_parkingcam_rows'])} "
            f"rows in {result['new_parkingcam_s']:.1f} s (heartbeat every "
            f"{PARKINGCAM_HEARTBEAT:.0f} s)",
        )
    )
    rows.append(
        Row(
            f"site of {site}",
            "RSS of the gateway with the list loaded",
            f"{result['rss_loaded_mb']:.0f} MB loaded and in sync; {result['rss_end_mb']:.0f} MB "
            f"after the last phase",
        )
    )
    batches = -(-result["new_parkingcam_rows"] // 1000)
    note = (
        f"plate list: the gateway's real service tree in a process of its own on the gateway's "
        f"core, the lanes' {settings.site_lanes} Vzenith cameras comet-polling in another process "
        f"on the other core, each reading {PLATES_PER_SECOND:.0f} plate a second (unknown plates); "
        f"every plate reply timed by the camera. The stall is the latest a 5 ms timer of the "
        f"gateway's event loop ran. Each lane's camera holds 10 000 plates (the default "
        f"camera_list_max), so every change also moves plates across that cut. Phases run one "
        f"after the other with 2 s between them and last until the list and every camera's work "
        f"have settled; the list grows with them. The new Vzenith camera's lane takes "
        f"{number(settings.site_new_camera_plates)} plates; the new ParkingCam camera's lane the "
        f"default 10 000 in {batches} batches, one per heartbeat (with the firmware's 10 s "
        f"heartbeat that is about {batches * 10} s). The gateway started in "
        f"{result['startup_s']:.1f} s on the seeded state; {result['stalls_over_10ms']} stalls "
        f"over 10 ms in the whole run."
    )
    return ScenarioResult(NAME, tuple(rows), (note,), seconds)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scenarios.platelist")
    parser.add_argument("mode", choices=("serve",))
    parser.add_argument("--dir", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--plates", type=int, default=100_000)
    parser.add_argument("--lanes", type=int, default=20)
    parser.add_argument("--big-csv", type=int, default=500_000)
    parser.add_argument("--new-camera-plates", type=int, default=100_000)
    parser.add_argument(
        "--phases", default="abcendf", help="debugging: only these phases (n: new cameras)"
    )
    parser.add_argument("--debug-stalls", action="store_true", help="sample the stalled loop")
    args = parser.parse_args(argv)
    from twisted.internet.defer import Deferred
    from twisted.internet.task import react

    os.makedirs(args.dir, exist_ok=True)
    react(lambda reactor: Deferred.fromCoroutine(serve(reactor, args)))


if __name__ == "__main__":
    main(sys.argv[1:])
