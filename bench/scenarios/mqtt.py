"""MQTT: the drain of events queued while the broker was away, published at
QoS 1 to a local Mosquitto (its own process), and the time from one event's
commit to the broker's acknowledgement."""

from __future__ import annotations

import getpass
import json
import os
import shutil
import time

from bench.report import Row, ScenarioResult, ms, not_measured, number, percent, verdict
from bench.settings import Context, progress
from bench.system import (
    LOAD_CPU,
    SERVER_CPU,
    BenchError,
    Child,
    CpuMeter,
    free_port,
    port_open,
    python,
)

NAME = "mqtt"
TARGET = 2000.0  # events/s drained at QoS 1
LATENCY_TARGET = 50.0  # ms: p99 from commit to the broker's acknowledgement


def _mosquitto() -> str | None:
    found = shutil.which("mosquitto")
    if found is None and os.path.exists("/usr/sbin/mosquitto"):
        found = "/usr/sbin/mosquitto"
    return found


def run(ctx: Context) -> ScenarioResult:
    began = time.monotonic()
    events = ctx.settings.mqtt_events
    paced = ctx.settings.mqtt_paced
    scenario = f"MQTT, {number(events)} events queued during a broker outage"
    binary = _mosquitto()
    if binary is None:
        row = not_measured(scenario, "events/s to a local Mosquitto at QoS 1",
                           f">= {number(TARGET)} events/s", "mosquitto is not installed")
        return ScenarioResult(NAME, (row,), (), time.monotonic() - began)
    directory = ctx.directory("mqtt")
    port = free_port()
    config = directory / "mosquitto.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        f"max_queued_messages 0\nuser {getpass.getuser()}\nlog_dest stderr\nlog_type error\n"
    )
    broker = Child("mosquitto", [binary, "-c", str(config)], log=directory / "mosquitto.log",
                   cpu=LOAD_CPU)
    gateway: Child | None = None
    try:
        deadline = time.monotonic() + 10
        while not port_open(port):
            if time.monotonic() > deadline or not broker.alive():
                raise BenchError(f"mosquitto did not start: {broker.output_tail()}")
            time.sleep(0.05)
        progress(f"mqtt: queueing {events} events behind the MQTT cursor")
        gateway = Child(
            "mqtt",
            [python(), "-m", "bench.inproc", "mqtt", "--state-dir", str(directory / "state"),
             "--events", str(events), "--broker", f"mqtt://127.0.0.1:{port}",
             "--paced", str(paced)],
            log=directory / "gateway.log",
            cpu=SERVER_CPU,
            capture=True,
        )
        broker_meter = CpuMeter(broker.pid)
        broker_cpu = 0.0
        fill_note = ""
        result = None
        while True:
            line = gateway.read_line(900)
            if line is None:
                break
            if line.startswith("FILLED "):
                fill_note = line.removeprefix("FILLED ").strip()
                progress(f"mqtt: filled {fill_note}; publishing")
                broker_meter.start()
            elif line.startswith("RESULT "):
                broker_cpu = broker_meter.percent()
                result = json.loads(line.removeprefix("RESULT "))
        gateway.wait(30)
        if result is None:
            raise BenchError(f"the MQTT drain gave no result: {gateway.output_tail()}")
    finally:
        if gateway is not None:
            gateway.stop()
        broker.stop()
    seconds = result["seconds"]
    rate = result["delivered"] / seconds if seconds > 0 else 0.0
    cpu = 100.0 * result["cpu_seconds"] / seconds if seconds > 0 else 0.0
    complete = result["delivered"] >= result["queued"]
    drain = Row(
        scenario,
        "events/s to a local Mosquitto at QoS 1 (drain, all acknowledged)",
        f"{number(rate)} events/s ({result['delivered']} in {seconds:.1f} s, gateway CPU "
        f"{percent(cpu)}, worst event-loop stall {ms(result['worst_stall'] * 1000)})",
        "-",
        "-",
        f">= {number(TARGET)} events/s",
        verdict(rate >= TARGET and complete),
        f"mosquitto {percent(broker_cpu)} over the run",
    )
    p50 = result["p50"] * 1000 if result["p50"] is not None else None
    p99 = result["p99"] * 1000 if result["p99"] is not None else None
    latency = Row(
        scenario,
        "one event, commit to the broker's acknowledgement",
        f"p50 {ms(p50)}, p99 {ms(p99)} ({result['paced']} events, one at a time)",
        "-",
        "-",
        f"p99 < {ms(LATENCY_TARGET)}",
        verdict(p99 is not None and p99 < LATENCY_TARGET),
        "-",
    )
    note = (
        f"mqtt: {number(result['queued'])} plate events committed to a fresh store behind "
        f"the MQTT cursor ({fill_note or 'untimed'}), as during a broker outage; then the "
        f"gateway (gateway.tap.build_service with [mqtt], in a bench process) connected to "
        f"a Mosquitto of its own (persistence off) and was timed until the broker had "
        f"acknowledged every event (QoS 1, at most {result['window']} in flight, the JSON "
        f"of the upstream API's event). Then {result['paced']} events committed one at a "
        f"time, each timed from the commit's start to its PUBACK (polled every 0.5 ms). "
        f"No camera traffic competes."
    )
    return ScenarioResult(NAME, (drain, latency), (note,), time.monotonic() - began)
