"""How big and how long each scenario runs, and what every scenario is given."""

from __future__ import annotations

import sys
from pathlib import Path

import attrs

from bench.system import Machine


@attrs.frozen
class Settings:
    """Sizes and durations. :meth:`full` is the documented run, :meth:`quick`
    the one-minute run; tests make smaller ones."""

    mode: str
    push_seconds: float  # one throughput run
    push_rounds: int  # baseline and gateway alternate; the best round counts
    latency_seconds: float  # the paced 200 pushes/s run
    latency_rate: float  # pushes/s of the paced run
    cameras: int  # keep-alive cameras (wrk connections)
    image_bytes: int
    comet_cameras: int
    comet_hold: float  # the gateway's comet_hold_seconds
    comet_commands: int
    offline_records: int
    outbox_events: int
    whitelist_plates: int
    whitelist_reads: int  # per kind of read
    footprint_cameras: int
    startups: int  # start-up time: the median of this many starts
    site_plates: int  # the plate list of the site scenario
    site_lanes: int
    site_big_csv: int  # rows of the large CSV import
    site_new_camera_plates: int  # the list a new Vzenith camera receives
    longlife_events: int  # the aged store of the long-life scenario
    longlife_seconds: float  # each paced run of the long-life scenario
    mqtt_events: int  # queued during a broker outage, then drained
    mqtt_paced: int  # events timed one at a time to the broker's acknowledgement
    #: How long unfinished bodies are held against the body budget.
    bodies_seconds: float = 10.0

    @classmethod
    def full(cls) -> Settings:
        return cls(
            mode="full",
            push_seconds=12.0,
            push_rounds=2,
            latency_seconds=20.0,
            latency_rate=200.0,
            cameras=20,
            image_bytes=200_000,
            comet_cameras=500,
            comet_hold=20.0,
            comet_commands=200,
            offline_records=9000,
            outbox_events=100_000,
            whitelist_plates=100_000,
            whitelist_reads=5000,
            footprint_cameras=100,
            startups=3,
            site_plates=100_000,
            site_lanes=20,
            site_big_csv=500_000,
            site_new_camera_plates=100_000,
            longlife_events=2_000_000,
            longlife_seconds=20.0,
            mqtt_events=100_000,
            mqtt_paced=500,
        )

    @classmethod
    def quick(cls) -> Settings:
        return cls(
            mode="quick",
            push_seconds=3.0,
            push_rounds=1,
            latency_seconds=4.0,
            latency_rate=200.0,
            cameras=20,
            image_bytes=200_000,
            comet_cameras=200,
            comet_hold=4.0,
            comet_commands=40,
            offline_records=600,
            outbox_events=10_000,
            whitelist_plates=20_000,
            whitelist_reads=1000,
            footprint_cameras=100,
            startups=1,
            site_plates=10_000,
            site_lanes=4,
            site_big_csv=50_000,
            site_new_camera_plates=5_000,
            longlife_events=100_000,
            longlife_seconds=5.0,
            mqtt_events=10_000,
            mqtt_paced=100,
            bodies_seconds=5.0,
        )


@attrs.frozen
class Context:
    """What a scenario runs with."""

    settings: Settings
    workdir: Path  # scratch space; each scenario takes a subdirectory
    machine: Machine
    wrk: str | None  # the wrk binary, or None to use the simulator

    def directory(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path


def progress(message: str) -> None:
    """A line on stderr while the harness runs (the table goes to stdout)."""
    print(f"bench: {message}", file=sys.stderr, flush=True)
