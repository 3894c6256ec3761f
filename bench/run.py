"""The benchmark harness: ``python -m bench`` (or ``python bench/run.py``).

Starts everything it needs on loopback (the gateway through twistd, the
baselines, the load generators, each its own process), runs each scenario
for a bounded time, prints a table and rewrites docs/benchmarks.md.

    python -m bench                 # the full run (about 10 minutes); writes the doc
    python -m bench --quick         # under a minute; prints only
    python -m bench --only comet    # one scenario (repeat --only for more)
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: make the repository importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import report  # noqa: E402
from bench.report import Row, ScenarioResult  # noqa: E402
from bench.scenarios import (  # noqa: E402
    bodies,
    comet,
    footprint,
    longlife,
    mqtt,
    offline,
    outbox,
    platelist,
    pushes,
    whitelist,
)
from bench.settings import Context, Settings, progress  # noqa: E402
from bench.system import (  # noqa: E402
    REPO,
    cpu_pressure,
    describe_machine,
    load_average,
    wrk_path,
)

Scenario = Callable[[Context], ScenarioResult]

SCENARIOS: dict[str, Scenario] = {
    "pushes": pushes.run,
    "comet": comet.run,
    "offline": offline.run,
    "outbox": outbox.run,
    "mqtt": mqtt.run,
    "whitelist": whitelist.run,
    "platelist": platelist.run,
    "footprint": footprint.run,
    "bodies": bodies.run,
    "longlife": longlife.run,
}
DEFAULT_OUTPUT = REPO / "docs" / "benchmarks.md"
ANALYSIS = Path(__file__).resolve().parent / "analysis.md"
COMMAND = "python -m bench          # the full run, 5-10 minutes; rewrites this file"


def run_scenarios(ctx: Context, names: Sequence[str]) -> tuple[list[ScenarioResult], bool]:
    """Run the named scenarios in order; a scenario that fails to run gives
    a "not measured" row with the reason. Returns (results, all ran)."""
    results: list[ScenarioResult] = []
    all_ran = True
    for name in names:
        progress(f"scenario {name}")
        began = time.monotonic()
        try:
            result = SCENARIOS[name](ctx)
        except Exception as error:  # one broken scenario must not lose the others
            all_ran = False
            traceback.print_exc(file=sys.stderr)
            reason = " ".join(str(error).split())[:200] or type(error).__name__
            result = ScenarioResult(
                name,
                (report.not_measured(name, "-", "-", f"the scenario failed: {reason}"),),
                (),
                time.monotonic() - began,
            )
        progress(f"scenario {name} done in {result.seconds:.0f} s")
        results.append(result)
    return results, all_ran


def document(
    ctx: Context, results: Sequence[ScenarioResult], started: datetime, seconds: float, load: str
) -> str:
    analysis = ANALYSIS.read_text(encoding="utf-8") if ANALYSIS.exists() else ""
    return report.markdown(
        machine=ctx.machine,
        results=results,
        date=started.strftime("%Y-%m-%d %H:%M UTC"),
        command=COMMAND,
        mode=ctx.settings.mode,
        seconds=seconds,
        load_average=load,
        analysis=analysis,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmarks of anpr-gateway: prints a table, writes docs/benchmarks.md.",
    )
    parser.add_argument("--quick", action="store_true", help="a smaller run, under a minute")
    parser.add_argument(
        "--only", action="append", choices=sorted(SCENARIOS), help="run only this scenario"
    )
    parser.add_argument(
        "--output",
        type=Path,
        help=f"where to write the Markdown report (default: {DEFAULT_OUTPUT.relative_to(REPO)} "
        "for a full run of every scenario; nothing for --quick or --only)",
    )
    parser.add_argument(
        "--no-wrk", action="store_true", help="use the simulator even if wrk is there"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory and logs")
    return parser


def main(argv: Sequence[str] | None = None, settings: Settings | None = None) -> int:
    """Run the harness; returns the exit status (1 if a scenario could not run)."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if settings is None:
        settings = Settings.quick() if args.quick else Settings.full()
    names = args.only or list(SCENARIOS)
    output = args.output
    if output is None and not args.quick and not args.only:
        output = DEFAULT_OUTPUT
    wrk = None if args.no_wrk else wrk_path()
    if wrk is None:
        progress(
            "wrk not found: throughput is generated by the camera simulator's many-camera "
            "mode in a separate process (apt-get install wrk for wrk)"
        )
    workdir = Path(tempfile.mkdtemp(prefix="anpr-bench-"))
    started = datetime.now(timezone.utc)
    load = f"{load_average()}, CPU pressure {cpu_pressure()}"
    began = time.monotonic()
    ctx = Context(settings=settings, workdir=workdir, machine=describe_machine(), wrk=wrk)
    try:
        results, all_ran = run_scenarios(ctx, names)
    finally:
        if args.keep:
            progress(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    seconds = time.monotonic() - began
    rows: list[Row] = [row for result in results for row in result.rows]
    print(report.text_table(rows))
    print()
    for line in ctx.machine.lines():
        print(line)
    load += f"; at the end: {load_average()}, CPU pressure {cpu_pressure()}"
    print(f"{settings.mode} run, {seconds:.0f} s, load average at start {load}")
    if output is not None:
        output.write_text(document(ctx, results, started, seconds, load), encoding="utf-8")
        progress(f"wrote {output}")
    return 0 if all_ran else 1


if __name__ == "__main__":
    raise SystemExit(main())
