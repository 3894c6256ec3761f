"""What a simulated camera observed: live event lines and the JSON report."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import attrs

__all__ = [
    "CameraEvent",
    "RelayPulse",
    "fleet_report",
    "format_event",
    "percentile",
    "write_report",
]


@attrs.frozen
class CameraEvent:
    """One thing that happened at a camera, for the live log.

    ``kind`` is a short word (``push``, ``reply``, ``fail``, ``relay``,
    ``serial``, ``voice``, ``whitelist``, ``offline``, ``snapshot``,
    ``heartbeat``, ``comet``, ``ignored``); ``text`` is the rest of the line.
    """

    at: float
    camera: int
    serialno: str
    kind: str
    text: str


@attrs.frozen
class RelayPulse:
    """The barrier relay pulsed on IO output ``channel``.

    ``source`` says why: ``plate`` / ``offline`` / ``comet`` / ``heartbeat`` /
    ``whitelist_response`` / ``serial`` (a reply to that kind of request),
    ``ivs_ioctrl``, or ``local`` (the camera's own whitelist while the server
    was unreachable).
    """

    channel: int
    at: float
    source: str
    plate: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"channel": self.channel, "at": self.at, "source": self.source, "plate": self.plate}


def format_event(event: CameraEvent) -> str:
    """``12:00:01.234 cam00 d85b1269-8f942256 push plate 京A12345 ...``"""
    clock = time.strftime("%H:%M:%S", time.localtime(event.at))
    millis = int((event.at % 1) * 1000)
    return f"{clock}.{millis:03d} cam{event.camera:02d} {event.serialno} {event.kind} {event.text}"


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile (``fraction`` 0-1) of ``values``; ``None`` if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def fleet_report(
    cameras: Iterable[Mapping[str, Any]], started: float, ended: float
) -> dict[str, Any]:
    """The JSON report: per-camera reports plus fleet totals."""
    cameras = list(cameras)
    totals: dict[str, int] = {}
    for camera in cameras:
        for kind, count in camera["pushes"].items():
            totals[kind] = totals.get(kind, 0) + count
    return {
        "started": started,
        "ended": ended,
        "cameras": cameras,
        "totals": {
            "pushes": totals,
            "replies": sum(camera["replies"]["total"] for camera in cameras),
            "failures": sum(camera["failures"]["total"] for camera in cameras),
            "relay_pulses": sum(len(camera["relay_pulses"]) for camera in cameras),
            "offline_pending": sum(camera["offline"]["pending"] for camera in cameras),
        },
    }


def write_report(report: Mapping[str, Any], target: str | Path | TextIO) -> None:
    """Write the report as UTF-8 JSON (to a path, or an open text stream)."""
    text = json.dumps(report, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
    if isinstance(target, (str, Path)):
        path = Path(target)
        partial = path.with_name(path.name + ".partial")
        partial.write_text(text, encoding="utf-8")
        partial.replace(path)
    else:
        target.write(text)
