"""The benchmark harness runs end to end: a tiny run starts the real
processes, measures, prints a table and writes the report. These are not
performance assertions: only that the machinery works and says what it
measured."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import pytest

from bench import run
from bench.report import MET, MISSED, NOT_MEASURED, ScenarioResult
from bench.scenarios import longlife as longlife_scenario
from bench.scenarios import mqtt as mqtt_scenario
from bench.settings import Context, Settings
from bench.system import describe_machine
from bench.wrk import push_body
from gateway.protocol.messages import PlateResult
from gateway.protocol.parse import parse_push

pytestmark = pytest.mark.system

TINY = attrs.evolve(
    Settings.quick(),
    whitelist_plates=300,
    whitelist_reads=20,
    footprint_cameras=3,
    startups=1,
)


def test_a_tiny_run_measures_prints_a_table_and_writes_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "benchmarks.md"
    status = run.main(
        ["--only", "whitelist", "--only", "footprint", "--output", str(output)], settings=TINY
    )
    printed = capsys.readouterr().out
    assert status == 0
    printed_lines = printed.splitlines()
    start = next(i for i, line in enumerate(printed_lines) if line.startswith("scenario "))
    header, rule = printed_lines[start : start + 2]
    lines = printed_lines[start + 2 : printed_lines.index("", start)]
    assert [cell.strip() for cell in header.split(" | ")][:3] == ["scenario", "measure", "measured"]
    assert set(rule) <= {"-", "+"}
    rows = [[cell.strip() for cell in line.split(" | ")] for line in lines]
    assert [row[0] for row in rows] == [
        "whitelist of 300 plates, max_plate_distance 0",
        "whitelist of 300 plates, max_plate_distance 1",
        "footprint",
        "footprint",
    ]
    # Every row was measured and judged against its target.
    assert all(row[6] in (MET, MISSED) for row in rows)
    rss, startup = rows[2], rows[3]
    assert "3 polls held" in rss[2] and rss[5] == "< 80 MB"
    assert startup[1] == "start-up time to listening" and startup[2].endswith(")")

    document = output.read_text(encoding="utf-8")
    assert document.startswith("# Benchmarks")
    assert "| scenario | measure | measured |" in document
    assert f"Python {describe_machine().python}" in document
    assert "python -m bench" in document
    assert "whitelist of 300 plates, max_plate_distance 1" in document


def test_a_scenario_that_fails_is_reported_as_not_measured(tmp_path: Path) -> None:
    def broken(ctx: Context) -> ScenarioResult:
        raise RuntimeError("the load generator could not start")

    ctx = Context(settings=TINY, workdir=tmp_path, machine=describe_machine(), wrk=None)
    original = dict(run.SCENARIOS)
    run.SCENARIOS["broken"] = broken
    try:
        results, all_ran = run.run_scenarios(ctx, ["broken"])
    finally:
        run.SCENARIOS.clear()
        run.SCENARIOS.update(original)
    assert not all_ran
    (row,) = results[0].rows
    assert row.result == NOT_MEASURED
    assert "the load generator could not start" in row.measured


def test_the_push_template_makes_distinct_camera_plate_events() -> None:
    template = push_body(0)
    bodies = [
        template.render({"serialno": f"cam-{n}", "plateid": str(1000 + n), "license": plate})
        for n, plate in enumerate(["京A12345", "粤B6789D"])
    ]
    messages = [parse_push(body, "application/Json") for body in bodies]
    assert all(isinstance(message, PlateResult) for message in messages)
    assert [(m.serialno, m.plateid, m.license) for m in messages] == [  # type: ignore[union-attr]
        ("cam-0", 1000, "京A12345"),
        ("cam-1", 1001, "粤B6789D"),
    ]
    with_image = push_body(50_000)
    body = with_image.render({"serialno": "cam-9", "plateid": "7", "license": "京A12345"})
    image = json.loads(body)["AlarmInfoPlate"]["result"]["PlateResult"]["imageFile"]
    assert len(image) > 50_000  # base64 of a 50 KB JPEG


@pytest.mark.skipif(mqtt_scenario._mosquitto() is None, reason="Mosquitto is not installed")
def test_the_mqtt_scenario_drains_every_event_and_times_single_ones(tmp_path: Path) -> None:
    settings = attrs.evolve(TINY, mqtt_events=300, mqtt_paced=5)
    ctx = Context(settings=settings, workdir=tmp_path, machine=describe_machine(), wrk=None)
    drain, latency = mqtt_scenario.run(ctx).rows
    assert drain.scenario == "MQTT, 300 events queued during a broker outage"
    assert "(300 in " in drain.measured and drain.result in (MET, MISSED)
    assert "(5 events, one at a time)" in latency.measured and latency.result in (MET, MISSED)


def test_the_long_life_scenario_ages_a_store_and_measures_it(tmp_path: Path) -> None:
    settings = attrs.evolve(TINY, longlife_events=3000, longlife_seconds=1.0)
    ctx = Context(settings=settings, workdir=tmp_path, machine=describe_machine(), wrk=None)
    result = longlife_scenario.run(ctx)
    measures = [row.measure for row in result.rows]
    assert measures[0].startswith("start to first answered plate, 3,000 events")
    assert measures[1].endswith("unclean shutdown")
    # After the unclean one the whole file was checked in the background, and found sound.
    assert "the background check then took until" in result.rows[1].measured
    assert "(ok))" in result.rows[1].measured
    trimmed = result.rows[2]
    assert trimmed.measure.startswith("3,000 events through retention")
    assert "expired" in trimmed.measured and trimmed.result == MET  # under the cap
    assert [row.measure.split(",")[0] for row in result.rows[5:]] == [
        "bytes written per plate event",
        "bytes written per plate event",
    ]
    assert all(" kB (" in row.measured for row in result.rows[5:])
