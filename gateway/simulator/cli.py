"""``anpr-camera-sim``: run simulated ANPR cameras against a server.

Examples::

    anpr-camera-sim --server http://127.0.0.1:8080 --plates 20 --rate 2
    anpr-camera-sim --server http://127.0.0.1:8080 --cameras 50 --heartbeat comet \\
        --plates 100 --rate 5 --images full --image-bytes 200000 --json-report out.json
    anpr-camera-sim --server http://127.0.0.1:8080 --dialect parkingcam --duration 60
    anpr-camera-sim --server http://127.0.0.1:8080 --heartbeat comet --link-delay 1.5 \\
        --no-chunked --firmware legacy --field-mix --plates 50

Each camera reads only the replies, and the fields of them, that its dialect,
firmware generation and heartbeat mode read (PROTOCOL.md sections 3, 4, 7, 9);
the live log says once per field what it ignored, the JSON report counts it.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.task import react

from gateway.simulator.bodies import BOUNDARY_STYLES, DETAIL_LEVELS, SERIAL_KEYS
from gateway.simulator.config import (
    DEFAULT_PATHS,
    MAX_ALTERNATES,
    MAX_RESEND,
    PARKINGCAM_SERIAL_STYLES,
    CameraConfig,
    fleet_configs,
)
from gateway.simulator.firmware import HeldPlate
from gateway.simulator.fleet import CameraFleet
from gateway.simulator.plates import NO_PLATE, NO_PLATE_TEXTS, load_plate_file
from gateway.simulator.report import CameraEvent, format_event, write_report

__all__ = ["build_parser", "configs_from_args", "main", "parse_serial_input", "run"]


def parse_serial_input(value: str) -> bytes:
    """``--serial-in`` value: ``hex:00 64 ff`` (or ``0x0064ff``) as bytes, else UTF-8 text."""
    if value.lower().startswith("hex:"):
        return bytes.fromhex(value[4:])
    if value.lower().startswith("0x"):
        return bytes.fromhex(value[2:])
    return value.encode("utf-8")


def _on_off(value: str) -> bool:
    if value.lower() in ("on", "yes", "true", "1"):
        return True
    if value.lower() in ("off", "no", "false", "0"):
        return False
    raise argparse.ArgumentTypeError("expected on or off")


def _positive_float(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return number


def _non_negative_float(value: str) -> float:
    number = float(value)
    if number < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return number


def _fraction(value: str) -> float:
    number = float(value)
    if not 0 <= number <= 1:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return number


def _no_plate_text(value: str) -> str:
    if value != "all" and value not in NO_PLATE_TEXTS:
        raise argparse.ArgumentTypeError(f"one of {', '.join(NO_PLATE_TEXTS)} or all")
    return value


# What --field-mix sets, unless the option is given: the field's variety.
_FIELD_MIX = {"three_region_rate": 0.02, "control_char_rate": 0.005}


def _count(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return number


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except empty ones and where the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, [], argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action) or text


def build_parser() -> argparse.ArgumentParser:
    """The command line (also the reference for what a simulated camera can do)."""
    parser = argparse.ArgumentParser(
        prog="anpr-camera-sim",
        description="Simulated ANPR parking cameras (Vzenith or ParkingCam) pushing to a server.",
        formatter_class=_HelpFormatter,
    )
    where = parser.add_argument_group("servers")
    where.add_argument("--server", required=True, help="main server, http(s)://host:port")
    where.add_argument(
        "--alternate", action="append", default=[], metavar="URL", help="alternate server (up to 3)"
    )
    where.add_argument(
        "--main-priority",
        type=_on_off,
        default=False,
        metavar="on|off",
        help="on: main server only, alternates only while it fails; off: push to all at once",
    )
    where.add_argument("--plate-path", default=DEFAULT_PATHS["plate"], help="plate result URL path")
    where.add_argument(
        "--heartbeat-path",
        default=DEFAULT_PATHS["heartbeat"],
        help="registration / heartbeat URL path",
    )
    where.add_argument("--gio-path", default=DEFAULT_PATHS["gio"], help="IO input URL path")
    where.add_argument(
        "--serial-path", default=DEFAULT_PATHS["serial"], help="serial data URL path"
    )
    where.add_argument(
        "--tls-ca",
        metavar="FILE",
        help="verify HTTPS servers against this CA (default: anonymous TLS)",
    )

    cams = parser.add_argument_group("cameras")
    cams.add_argument(
        "--dialect", choices=("vzenith", "parkingcam"), default="vzenith", help="camera family"
    )
    cams.add_argument("--cameras", type=_count, default=1, help="cameras in this process")
    cams.add_argument("--seed", type=int, default=1, help="same seed, same cameras and plates")
    cams.add_argument(
        "--bind-base",
        default="127.0.0.11",
        help="first loopback source address (one per camera) when the servers are on loopback",
    )
    cams.add_argument(
        "--no-bind", action="store_true", help="do not bind cameras to their own addresses"
    )
    cams.add_argument("--ipaddr-base", default="192.168.1.100", help="ipaddr of unbound cameras")
    cams.add_argument(
        "--firmware",
        choices=("current", "legacy"),
        default="current",
        help="Vzenith firmware generation. legacy (2016-17): pushes without "
        "plateid/isoffline/gioouts, no offline records, and replies read only for info, "
        "channelNum, TriggerImage, serialData and manualTrigger",
    )
    cams.add_argument(
        "--charset",
        choices=("utf-8", "gb2312"),
        default="utf-8",
        help="ParkingCam character encoding setting: pushes are written and replies read in it",
    )
    cams.add_argument(
        "--serial-style",
        choices=PARKINGCAM_SERIAL_STYLES,
        default="qfx",
        help="ParkingCam serial numbers: qfx = QFX2182310150262, hex16 / hex32 = hex digits",
    )
    cams.add_argument(
        "--serial-key",
        choices=SERIAL_KEYS,
        default="serialno",
        help="key of the serial number in IO and serial pushes: serialno as firmware sends "
        "it, serialNo as the manual writes it",
    )
    cams.add_argument(
        "--extra-fields",
        type=_on_off,
        default=True,
        metavar="on|off",
        help="fields the firmware sends beside PlateResult (Vzenith rule_id, user_data; "
        "ParkingCam openflag, entityName, TaxID, latitude, longitude) (default: on)",
    )
    cams.add_argument("--device-name", help="deviceName (default IVS / default)")
    cams.add_argument(
        "--web-port", type=int, default=80, help="the camera's own web port (registration)"
    )
    cams.add_argument("--web-user", default="admin", help="web login sent in registration")
    cams.add_argument("--web-password", default="admin", help="web password sent in registration")
    cams.add_argument("--channel-num", type=int, default=1, help="channel_num in registration")
    cams.add_argument("--clock-offset", type=float, default=0.0, help="camera clock error, seconds")
    cams.add_argument(
        "--whitelist",
        action="append",
        default=[],
        metavar="PLATE",
        help="a plate in the camera's own whitelist at start (opens by itself while offline)",
    )

    beat = parser.add_argument_group("registration / heartbeat")
    beat.add_argument(
        "--heartbeat",
        choices=("off", "common", "comet"),
        default="common",
        help="registration mode. common: its reply is never read (a command there is lost); "
        "comet: each reply is read like a plate reply and the next poll follows at once "
        "(ParkingCam: off or its JSON heartbeat, whose reply it reads)",
    )
    beat.add_argument(
        "--heartbeat-interval",
        type=_positive_float,
        help="seconds (default 30, 5 with --offline-check; ParkingCam 10)",
    )
    beat.add_argument(
        "--offline-check", action="store_true", help="HTTP offline check (5 s heartbeat)"
    )
    beat.add_argument(
        "--comet-timeout", type=_positive_float, default=30.0, help="comet poll timeout, seconds"
    )
    beat.add_argument(
        "--boundary",
        choices=tuple(BOUNDARY_STYLES),
        default="curl",
        help="multipart boundary: curl = 24 dashes + 16 hex, long = 28 dashes + 12 hex",
    )

    plates = parser.add_argument_group("plates")
    plates.add_argument("--plates", type=_count, default=0, help="plate results per camera")
    plates.add_argument(
        "--rate", type=_positive_float, default=1.0, help="plates per second per camera"
    )
    plates.add_argument("--plate-file", help="plates to read, one per line (default: generated)")
    plates.add_argument(
        "--no-plate-rate", type=_fraction, default=0.02, help="share of no-plate reads"
    )
    plates.add_argument(
        "--no-plate-text",
        type=_no_plate_text,
        action="append",
        default=[],
        metavar="TEXT",
        help=f"how a no-plate read is spelt, repeatable: {', '.join(NO_PLATE_TEXTS)}, "
        f"or all (default {NO_PLATE}; all with --field-mix)",
    )
    plates.add_argument(
        "--three-region-rate",
        type=_fraction,
        help="share of three-region plates like 粤ZJ068澳|MX7742|ZM127 "
        f"(default 0; {_FIELD_MIX['three_region_rate']} with --field-mix)",
    )
    plates.add_argument(
        "--control-char-rate",
        type=_fraction,
        help="share of plate reads with a control character (mostly NUL) inside the license "
        f"(default 0; {_FIELD_MIX['control_char_rate']} with --field-mix)",
    )
    plates.add_argument(
        "--field-mix",
        action="store_true",
        help="plates as varied as the field's: some three-region plates, every no-plate "
        "spelling (also mis-decoded ones), now and then a control character",
    )
    plates.add_argument(
        "--detail", choices=DETAIL_LEVELS, default="all", help="content detail level"
    )
    plates.add_argument(
        "--duplicate-rate",
        type=float,
        default=0.0,
        help="share of cars reported twice with another trigger type",
    )
    plates.add_argument(
        "--images",
        choices=("none", "full", "crop", "both"),
        default="none",
        help="pictures sent in plate pushes (JPEGs made at run time)",
    )
    plates.add_argument(
        "--image-bytes", type=_count, default=0, help="pad the picture to this size"
    )
    plates.add_argument(
        "--image-len", choices=("base64", "raw"), default="base64", help="what imageFileLen holds"
    )
    plates.add_argument("--first-plateid", type=int, help="first plateid (default: from the clock)")

    push = parser.add_argument_group("delivery")
    push.add_argument(
        "--timeout", type=_positive_float, default=5.0, help="request timeout, seconds"
    )
    push.add_argument(
        "--resend",
        type=int,
        choices=range(MAX_RESEND + 1),
        default=0,
        help="re-sends of a failed push",
    )
    push.add_argument(
        "--offline-records",
        action="store_true",
        help="disconnect retransmission: keep undelivered results, upload later",
    )
    push.add_argument(
        "--link-delay",
        type=_non_negative_float,
        default=0.0,
        metavar="SECONDS",
        help="a slow link: seconds between an answer and the next comet poll or push "
        "(over 1 s, comet polls look like common heartbeats to a server)",
    )
    push.add_argument(
        "--no-chunked",
        action="store_true",
        help="the camera's HTTP client cannot decode Transfer-Encoding: chunked: such a "
        "reply is a failed exchange (re-sent, kept offline, as any failure)",
    )
    push.add_argument(
        "--offline-retry",
        type=_positive_float,
        default=1.0,
        help="seconds between offline upload attempts while unreachable",
    )

    other = parser.add_argument_group("other pushes")
    other.add_argument("--io-events", type=_count, default=0, help="AlarmGioIn pushes per camera")
    other.add_argument(
        "--serial-in",
        action="append",
        default=[],
        metavar="HEX_OR_TEXT",
        help="bytes received on the serial port: hex:0064ff or text",
    )
    other.add_argument(
        "--serial-channel", type=int, choices=(0, 1), default=0, help="port of --serial-in"
    )

    out = parser.add_argument_group("output")
    out.add_argument("--json-report", metavar="FILE", help="write what happened per camera")
    out.add_argument("--quiet", action="store_true", help="no live event log")
    out.add_argument("--duration", type=_positive_float, help="stop after this many seconds")
    out.add_argument(
        "--drain-timeout",
        type=_positive_float,
        default=30.0,
        help="after the last plate, wait at most this long for deliveries",
    )
    return parser


def configs_from_args(args: argparse.Namespace, now: float) -> list[CameraConfig]:
    """Camera configurations for parsed options (``now`` seeds the default plateid)."""
    if len(args.alternate) > MAX_ALTERNATES:
        raise ValueError(f"at most {MAX_ALTERNATES} --alternate servers")
    plate_list = tuple(load_plate_file(args.plate_file)) if args.plate_file else ()
    tls_ca = Path(args.tls_ca).read_bytes() if args.tls_ca else None
    no_plate_texts: tuple[str, ...] = tuple(args.no_plate_text)
    if "all" in no_plate_texts or (args.field_mix and not no_plate_texts):
        no_plate_texts = NO_PLATE_TEXTS
    mix = _FIELD_MIX if args.field_mix else {}
    three_region_rate = args.three_region_rate
    if three_region_rate is None:
        three_region_rate = mix.get("three_region_rate", 0.0)
    control_char_rate = args.control_char_rate
    if control_char_rate is None:
        control_char_rate = mix.get("control_char_rate", 0.0)
    first_plateid = args.first_plateid
    if first_plateid is None:
        # Distinct runs against one gateway must not reuse (serialno, plateid).
        first_plateid = (int(now) % 10_000_000) * 10 + 1
    template = CameraConfig(
        serialno="template",
        servers=(args.server, *args.alternate),
        dialect=args.dialect,
        main_priority=args.main_priority,
        plate_path=args.plate_path,
        heartbeat_path=args.heartbeat_path,
        gio_path=args.gio_path,
        serial_path=args.serial_path,
        heartbeat=args.heartbeat,
        heartbeat_interval=args.heartbeat_interval,
        offline_check=args.offline_check,
        comet_timeout=args.comet_timeout,
        timeout=args.timeout,
        resend=args.resend,
        offline_records=args.offline_records,
        offline_retry=args.offline_retry,
        plates=args.plates,
        rate=args.rate,
        plate_list=plate_list,
        no_plate_rate=args.no_plate_rate,
        detail=args.detail,
        images=args.images,
        image_bytes=args.image_bytes,
        image_len=args.image_len,
        duplicate_rate=args.duplicate_rate,
        io_events=args.io_events,
        serial_in=tuple(parse_serial_input(value) for value in args.serial_in),
        serial_in_channel=args.serial_channel,
        boundary_style=args.boundary,
        newer_firmware=args.firmware == "current",
        charset=args.charset,
        seed=args.seed,
        device_name=args.device_name,
        web_port=args.web_port,
        web_user=args.web_user,
        web_password=args.web_password,
        channel_num=args.channel_num,
        tls_ca=tls_ca,
        clock_offset=args.clock_offset,
        first_plateid=first_plateid,
        whitelist=tuple(HeldPlate(plate) for plate in args.whitelist),
        link_delay=args.link_delay,
        decodes_chunked=not args.no_chunked,
        three_region_rate=three_region_rate,
        no_plate_texts=no_plate_texts or (NO_PLATE,),
        control_char_rate=control_char_rate,
        serial_key=args.serial_key,
        extra_fields=args.extra_fields,
    )
    configs = fleet_configs(
        args.cameras,
        template,
        bind_base=None if args.no_bind else args.bind_base,
        ipaddr_base=args.ipaddr_base,
        serial_style=args.serial_style,
    )
    # Spread the cameras' plates evenly over one plate interval.
    spread = 1.0 / (args.rate * max(1, args.cameras))
    return [_with_delay(config, config.index * spread) for config in configs]


def _with_delay(config: CameraConfig, delay: float) -> CameraConfig:
    return attrs.evolve(config, start_delay=delay)


def _summary(report: dict[str, Any]) -> str:
    totals = report["totals"]
    pushes = sum(totals["pushes"].values())
    latencies = [
        camera["latency_ms"]["p50"]
        for camera in report["cameras"]
        if camera["latency_ms"]["p50"] is not None
    ]
    worst = [
        camera["latency_ms"]["p99"]
        for camera in report["cameras"]
        if camera["latency_ms"]["p99"] is not None
    ]
    latency = ""
    if latencies:
        latency = (
            f", latency p50 {sorted(latencies)[len(latencies) // 2]:.1f} ms p99 {max(worst):.1f} ms"
        )
    return (
        f"{len(report['cameras'])} cameras: {pushes} requests, {totals['replies']} replies, "
        f"{totals['failures']} failures, {totals['relay_pulses']} relay pulses, "
        f"{totals['offline_pending']} offline records pending{latency}"
    )


async def run(reactor: Any, argv: Sequence[str], stdout: TextIO | None = None) -> int:
    """Run the simulator with command-line ``argv``; returns the exit status.

    0 when everything was delivered (or the run was time-boxed by
    ``--duration``), 1 when deliveries were still outstanding, 2 for bad options.
    """
    out = stdout or sys.stdout
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv))
        configs = configs_from_args(args, time.time())
    except SystemExit as exit:
        return int(exit.code or 0)
    except (ValueError, OSError) as error:
        print(f"anpr-camera-sim: {error}", file=sys.stderr)
        return 2

    def show(event: CameraEvent) -> None:
        print(format_event(event), file=out, flush=True)

    fleet = CameraFleet(reactor, configs, None if args.quiet else show)
    written = False

    def write() -> None:
        nonlocal written
        if written:
            return
        written = True
        report = fleet.report()
        if args.json_report:
            write_report(report, args.json_report)
        print(_summary(report), file=out, flush=True)

    async def on_shutdown() -> None:
        # Ctrl-C (or any reactor stop): stop cleanly, still write the report.
        await fleet.stop()
        write()

    trigger = reactor.addSystemEventTrigger(
        "before", "shutdown", lambda: Deferred.fromCoroutine(on_shutdown())
    )
    drained = await fleet.run(duration=args.duration, drain_timeout=args.drain_timeout)
    reactor.removeSystemEventTrigger(trigger)
    write()
    if fleet.has_work and not drained and args.duration is None:
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: ``anpr-camera-sim``."""
    arguments = list(sys.argv[1:] if argv is None else argv)

    async def entry(reactor: Any) -> None:
        status = await run(reactor, arguments)
        if status:
            raise SystemExit(status)

    react(lambda reactor: Deferred.fromCoroutine(entry(reactor)))


if __name__ == "__main__":
    main()
