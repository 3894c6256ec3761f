"""A store that has lived for years: start-up time on it with a cold page
cache, retention bringing a year and more down to its caps while plates are
answered, and the bytes written to the SD card per plate event."""

from __future__ import annotations

import os
import sqlite3
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from bench.gatewayproc import GatewayProcess, GatewaySetup, Lane
from bench.report import Row, ScenarioResult, verdict
from bench.settings import Context, progress
from bench.system import BenchError, run_simulator, wait_until
from gateway.camera.events import CameraEvent
from gateway.camera.recorder import to_record
from gateway.protocol.parse import parse_push
from gateway.store.database import Database, compress_raw, encode_raw, to_us
from gateway.store.ids import new_event_id

NAME = "long life"
STARTUP_TARGET = 3.0
CAMERA = "bench-lane-0"
#: Rows written per seeding transaction.
SEED_CHUNK = 20_000


def _sample_row() -> tuple[bytes, str]:
    """A real plate push as the gateway keeps it: the compressed record and reply."""
    from bench.wrk import push_body

    body = push_body(0).render({"serialno": CAMERA, "plateid": "1", "license": "京A12345"})
    message = parse_push(body, "application/json")
    event = CameraEvent(
        id=new_event_id("plate"),
        kind="plate",
        camera=CAMERA,
        lane="lane-0",
        received_at=datetime.now(timezone.utc),
        message=message,
    )
    record = to_record(event)
    return compress_raw(encode_raw(record.raw)), record.reply or ""


def seed(state_dir: Path, events: int, *, days: float, lanes: int) -> int:
    """A store of ``events`` plate events spread evenly over the last ``days``
    days on ``lanes`` lanes, written with the gateway's own schema; the
    newest 1 000 still queued for the cloud. Returns the file size."""
    database = Database(state_dir)
    now = datetime.now(timezone.utc)
    database.open(now)
    raw_z, reply = _sample_row()
    start = to_us(now - timedelta(days=days))
    step = int(days * 86_400_000_000 / events)
    connection = database.connection
    try:
        for first in range(0, events, SEED_CHUNK):
            rows = []
            for n in range(first, min(first + SEED_CHUNK, events)):
                lane = n % lanes
                rows.append(
                    (
                        new_event_id("plate"),
                        f"bench-lane-{lane}",
                        f"lane-{lane}",
                        start + n * step,
                        start + n * step,
                        f"京A{n % 100_000:05d}",
                        f"京A{n % 100_000:05d}",
                        raw_z,
                        reply,
                    )
                )
            connection.execute("BEGIN")
            connection.executemany(
                "INSERT INTO events (id, type, camera, lane, received_at, camera_time, plate, "
                "license, decision_open, decision_reason, decision_source, raw, raw_z, reply) "
                "VALUES (?, 'plate', ?, ?, ?, ?, ?, ?, 0, 'unknown', 'local', '', ?, ?)",
                rows,
            )
            if first + SEED_CHUNK >= events:
                connection.executemany(
                    "INSERT INTO outbox (event_id, camera, enqueued_at) VALUES (?, ?, ?)",
                    [(row[0], row[1], row[3]) for row in rows[-1000:]],
                )
            connection.execute("COMMIT")
    finally:
        database.close()
    return (state_dir / "gateway.db").stat().st_size


def drop_page_cache() -> bool:
    """Empty the kernel's page cache (root only); whether it could."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as control:
            control.write("3\n")
    except OSError:
        return False
    return True


def _plate_body(plateid: int) -> bytes:
    from bench.wrk import push_body

    return push_body(0).render(
        {"serialno": CAMERA, "plateid": str(plateid), "license": "京A12345"}
    )


def _start_to_answer(directory: Path, setup: GatewaySetup) -> tuple[float, float, GatewayProcess]:
    gateway = GatewayProcess.start(directory, setup, timeout=120)
    ready = gateway.wait_ready(_plate_body(int(time.time())), timeout=120)
    return gateway.listening_after, ready, gateway


def _write_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/io", encoding="ascii") as stats:
        for line in stats:
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    raise BenchError("no write_bytes in /proc/<pid>/io")


def _paced(
    port: int,
    directory: Path,
    seconds: float,
    rate: float,
    cameras: int,
    image_bytes: int = 0,
    name: str = "paced",
) -> dict[str, Any]:
    """``cameras`` simulated cameras reading ``rate`` plates a second in all."""
    extra = ["--cameras", str(cameras), "--rate", str(rate / cameras)]
    result, _ = run_simulator(directory, "paced", port, seconds, extra, image_bytes, name=name)
    return result


def _db_pages(path: Path) -> tuple[int, int]:
    """(bytes in use, file bytes) of a database no one writes to."""
    with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True) as connection:
        size = connection.execute("PRAGMA page_size").fetchone()[0]
        pages = connection.execute("PRAGMA page_count").fetchone()[0]
        free = connection.execute("PRAGMA freelist_count").fetchone()[0]
    return (pages - free) * size, path.stat().st_size


def run(ctx: Context) -> ScenarioResult:
    settings = ctx.settings
    began = time.monotonic()
    directory = ctx.directory("longlife")
    rows: list[Row] = []
    notes: list[str] = []
    events = settings.longlife_events
    lanes = tuple(Lane(f"lane-{n}", f"bench-lane-{n}") for n in range(10))

    # -- start-up on a store of `events` events, cold page cache -------------
    progress(f"long life: seeding a store of {events} events")
    aged = directory / "aged"
    seeded = time.monotonic()
    size = seed(aged / "state", events, days=365, lanes=len(lanes))
    seed_seconds = time.monotonic() - seeded
    setup = GatewaySetup(lanes=lanes, store=(("event_retention_days", 3650),))
    results: dict[str, tuple[float, float]] = {}
    cold = True
    for shutdown in ("clean", "unclean"):
        if shutdown == "unclean":
            (aged / "state" / "gateway.db.clean").unlink(missing_ok=True)
        cold = drop_page_cache() and cold
        progress(f"long life: start after a {shutdown} shutdown")
        listening, ready, gateway = _start_to_answer(aged, setup)
        try:
            if shutdown == "unclean":
                # The whole-file check runs in the background; say how long it took.
                def checked(gateway: GatewayProcess = gateway) -> bool:
                    state = gateway.status()["store"]["integrity"]["state"]
                    return bool(state != "checking")

                wait_until(checked, 900, "the database check", interval=1.0)
                check_done = time.monotonic() - gateway.child.started
                integrity = gateway.status()["store"]["integrity"]["state"]
        finally:
            gateway.stop()
        results[shutdown] = (listening, ready)
    cache = "page cache dropped before each start" if cold else (
        "page cache NOT dropped (not root): warm-cache figures"
    )
    for shutdown, (listening, ready) in results.items():
        extra = (
            f"; the background check then took until {check_done:.0f} s ({integrity})"
            if shutdown == "unclean" else ""
        )
        rows.append(
            Row(
                NAME,
                f"start to first answered plate, {events:,} events "
                f"({size / 1e9:.2f} GB), {shutdown} shutdown",
                f"{ready:.2f} s (listening after {listening:.2f} s{extra})",
                "-",
                "-",
                f"< {STARTUP_TARGET:.0f} s",
                verdict(ready < STARTUP_TARGET),
                "-",
            )
        )
    notes.append(
        f"long life, start-up: a store of {events:,} plate events over a year on 10 lanes "
        f"(the gateway's schema, each row a real push as the gateway keeps it, compressed; "
        f"seeded in {seed_seconds:.0f} s), {cache}; the time from starting twistd to the "
        f"first plate push answered 200. After an unclean shutdown (no clean-close marker) "
        f"the whole file is checked in the background while plates are answered."
    )

    # -- a year and more through retention, plates answered meanwhile --------
    empty = directory / "empty"
    progress("long life: plate replies on an empty store")
    gateway = GatewayProcess.start(empty, GatewaySetup(lanes=lanes))
    try:
        baseline = _paced(gateway.camera_port, directory, settings.longlife_seconds, 20.0, 10,
                          name="paced-empty")
    finally:
        gateway.stop()
    cap = max(int(size * 0.75), 64 << 20)  # the smallest cap a site may set
    retention_days = 300
    setup = GatewaySetup(
        lanes=lanes,
        store=(("event_retention_days", retention_days), ("max_db_bytes", cap)),
    )
    progress(f"long life: retention to {retention_days} days and {cap / 1e9:.2f} GB, plates answered")
    gateway = GatewayProcess.start(aged, setup, timeout=120)
    try:
        during = _paced(gateway.camera_port, directory, settings.longlife_seconds, 20.0, 10,
                        name="paced-retention")

        log_path = aged / "gateway.log"

        def settled() -> bool:
            # The pass says what it deleted once it is over, the freed pages
            # given back to the file system too.
            text = log_path.read_text(encoding="utf-8", errors="replace")
            return "Event retention deleted" in text

        wait_until(settled, 1800, "retention to finish", interval=2.0)
        status = gateway.status()["store"]
        settled_after = time.monotonic() - gateway.child.started
        progress("long life: plate replies on the aged store, retention done")
        after = _paced(gateway.camera_port, directory, settings.longlife_seconds, 20.0, 10,
                       name="paced-aged")
    finally:
        gateway.stop()
    live, file_bytes = _db_pages(aged / "state" / "gateway.db")
    rows.append(
        Row(
            NAME,
            f"{events:,} events through retention ({retention_days} days, "
            f"max_db_bytes {cap / 1e9:.2f} GB)",
            f"{status['events_expired']:,} expired, {status['events_dropped']:,} dropped for size "
            f"({status['events_dropped_unsent']} undelivered); {live / 1e9:.2f} GB in use, "
            f"file {file_bytes / 1e9:.2f} GB (was {size / 1e9:.2f}); done {settled_after:.0f} s "
            f"after start",
            "-",
            "-",
            "in use <= max_db_bytes",
            verdict(live <= cap),
            "-",
        )
    )
    base_p99 = baseline["p99_ms"]
    p99 = after["p99_ms"]
    rows.append(
        Row(
            NAME,
            f"plate reply p99 at 20 pushes/s on the aged store ({events - status['events_expired'] - status['events_dropped']:,} events kept)",
            f"p99 {p99:.1f} ms, max {after['max_ms']:.1f} ms ({after['failures']} failures)",
            f"empty store: p99 {base_p99:.1f} ms",
            f"{p99 / base_p99:.2f}" if base_p99 else "-",
            "p99 within 1.25x of the empty store's (or 2 ms), no failure",
            verdict(
                (p99 <= 1.25 * base_p99 or p99 - base_p99 <= 2.0) and after["failures"] == 0
            ),
            "-",
        )
    )
    rows.append(
        Row(
            NAME,
            "plate reply p99 at 20 pushes/s during the catch-up pass",
            f"p99 {during['p99_ms']:.1f} ms, max {during['max_ms']:.1f} ms "
            f"({during['failures']} failures)",
            f"empty store: p99 {base_p99:.1f} ms",
            f"{during['p99_ms'] / base_p99:.2f}" if base_p99 else "-",
            "no failure, every reply under 200 ms",
            verdict(during["failures"] == 0 and during["max_ms"] < 200.0),
            "-",
        )
    )
    notes.append(
        f"long life, retention: the same store (older rows than the retention, and more "
        f"than max_db_bytes), the gateway started with event_retention_days = "
        f"{retention_days} and max_db_bytes = 75 % of the file (64 MiB at least); 10 "
        f"simulated cameras push "
        f"2 plates a second each for {settings.longlife_seconds:.0f} s from the start (a "
        f"separate process), while the first pass catches up, and again once it is done, "
        f"against the same load on an empty store. The file shrinks "
        f"only for databases created with incremental vacuum (every database this release "
        f"creates; the seeded one is)."
    )

    # -- bytes written per plate event ---------------------------------------
    progress("long life: bytes written per plate event")
    for image_bytes in (0, 200_000):
        gateway = GatewayProcess.start(directory / f"writes-{image_bytes}", GatewaySetup(lanes=lanes))
        try:
            time.sleep(1.0)
            before = _write_bytes(gateway.pid)
            result = _paced(gateway.camera_port, directory, settings.longlife_seconds, 20.0, 10,
                            image_bytes=image_bytes, name=f"paced-writes-{image_bytes}")
            time.sleep(2.0)
            written = _write_bytes(gateway.pid) - before
        finally:
            gateway.stop()
        replies = max(result["replies"], 1)
        per_event = written / replies
        per_year = per_event * 365_000
        rows.append(
            Row(
                NAME,
                "bytes written per plate event, "
                + (f"{image_bytes // 1000} kB image" if image_bytes else "no image"),
                f"{per_event / 1e3:.1f} kB ({per_year / 1e9:.1f} GB a year per 1 000 plates a day)",
                "-",
                "-",
                "-",
                "info",
                "-",
            )
        )
    notes.append(
        f"long life, writes: write_bytes of the gateway process from /proc/<pid>/io (what "
        f"reached the block layer: the write-ahead log, checkpoints into the database, "
        f"images) over {settings.longlife_seconds:.0f} s of 20 plates a second, divided by "
        f"the plates answered; a year at 1 000 plates a day is 365 000 events."
    )
    return ScenarioResult(NAME, tuple(rows), tuple(notes), time.monotonic() - began)

