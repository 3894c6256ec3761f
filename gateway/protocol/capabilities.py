"""What each camera can do, and in which of its replies (PROTOCOL.md sections 3, 4, 7, 9).

HTTP gives the gateway no way to call a camera: a command rides in the reply to
a request the camera made, and only in a reply that camera reads, in a field
it knows. This table says, for a camera's dialect, firmware generation and
heartbeat mode, which commands it can carry out and in which replies; the
camera registry delivers by it, the camera control refuses by it, and
docs/cameras.md prints it. Pure: no Twisted, no I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

import attrs

from gateway.protocol.messages import Dialect, PlateResult

__all__ = [
    "Capability",
    "CameraMode",
    "Generation",
    "HeartbeatMode",
    "ReplyKind",
    "ADVICE",
    "TABLE",
    "advice_for",
    "capability_rows",
    "describe_mode",
    "generation_of",
]


class Capability(str, enum.Enum):
    """Something a command asks a camera to do."""

    OPEN = "open"  # pulse the barrier relay
    CLOSE = "close"  # switch the barrier output off
    HOLD_OPEN = "hold_open"  # switch the barrier output on until closed
    TRIGGER = "trigger"  # a software-triggered recognition (a new plate push)
    SNAPSHOT = "snapshot"  # grab a frame and upload it to the gateway
    SERIAL = "serial"  # write bytes to one of the camera's serial ports
    SPEAK = "speak"  # speak text through the camera
    WHITELIST = "whitelist"  # edit the camera's own plate list


class ReplyKind(str, enum.Enum):
    """The replies a camera may read a command in."""

    PLATE = "plate"  # the reply to a plate push
    POLL = "poll"  # the reply to a Vzenith registration: a comet poll or a common heartbeat
    HEARTBEAT = "heartbeat"  # a ParkingCam heartbeat's Response_Heartbeat
    SERIAL = "serial"  # the reply to a serial push (Response_SerialData)


class Generation(str, enum.Enum):
    """Vzenith firmware generation, told from its plate pushes (PROTOCOL.md section 9)."""

    UNKNOWN = "unknown"  # no plate push seen yet: taken as current
    LEGACY = "legacy"  # 2016-17 firmware: pushes without plateid, isoffline, gioouts
    CURRENT = "current"


class HeartbeatMode(str, enum.Enum):
    """How a Vzenith camera registers (PROTOCOL.md section 3), as learnt or configured."""

    UNKNOWN = "unknown"  # no registration or heartbeat seen yet
    OFF = "off"  # fixed by configuration: the camera only pushes events
    COMMON = "common"  # periodic heartbeat, reply ignored; never hold it
    COMET = "comet"  # long poll, reply read; hold it until a command or the deadline


#: Plate push fields only the current Vzenith firmware sends.
_CURRENT_FIELDS = ("plateid", "isoffline", "gioouts")


def generation_of(plate: PlateResult) -> Generation:
    """The firmware generation a plate push shows (PROTOCOL.md section 9)."""
    if plate.dialect is not Dialect.VZENITH:
        return Generation.UNKNOWN
    if plate.plateid is not None or any(name in plate.raw for name in _CURRENT_FIELDS):
        return Generation.CURRENT
    return Generation.LEGACY


_VZENITH = frozenset({ReplyKind.PLATE, ReplyKind.POLL})
_SERIAL_EVERYWHERE = frozenset({ReplyKind.PLATE, ReplyKind.POLL, ReplyKind.SERIAL})

#: The replies each command rides in, per dialect and generation; a command
#: missing from a row cannot be carried out by that camera at all.
TABLE: Mapping[tuple[Dialect, Generation], Mapping[Capability, frozenset[ReplyKind]]] = {
    (Dialect.VZENITH, Generation.CURRENT): {
        Capability.OPEN: _VZENITH,  # info "ok" + channelNum
        Capability.CLOSE: _VZENITH,  # ivs_ioctrl value 0
        Capability.HOLD_OPEN: _VZENITH,  # ivs_ioctrl value 1
        Capability.TRIGGER: _VZENITH,  # manualTrigger
        Capability.SNAPSHOT: _VZENITH,  # TriggerImage
        Capability.SERIAL: _SERIAL_EVERYWHERE,  # serialData
        Capability.SPEAK: _VZENITH,  # playserver_json_request
        Capability.WHITELIST: _VZENITH,  # white_list_operate, 5 rows a reply
    },
    # The older firmware reads only info, channelNum, TriggerImage,
    # serialData and manualTrigger.
    (Dialect.VZENITH, Generation.LEGACY): {
        Capability.OPEN: _VZENITH,
        Capability.TRIGGER: _VZENITH,
        Capability.SNAPSHOT: _VZENITH,
        Capability.SERIAL: _SERIAL_EVERYWHERE,
    },
    # A ParkingCam plate reply defines only info, content, is_pay and
    # serialData; shutoff exists only in Response_Heartbeat; there is no
    # trigger, and no document describes an upload after snapnow.
    (Dialect.PARKINGCAM, Generation.UNKNOWN): {
        Capability.OPEN: frozenset({ReplyKind.PLATE, ReplyKind.HEARTBEAT}),
        Capability.CLOSE: frozenset({ReplyKind.HEARTBEAT}),
        Capability.SERIAL: frozenset({ReplyKind.PLATE, ReplyKind.HEARTBEAT, ReplyKind.SERIAL}),
        Capability.WHITELIST: frozenset({ReplyKind.HEARTBEAT}),  # the whole reply
    },
}

_WHY_NOT: Mapping[Dialect, Mapping[Capability, str]] = {
    Dialect.VZENITH: {
        Capability.CLOSE: "its older firmware has no IO output control (ivs_ioctrl)",
        Capability.HOLD_OPEN: "its older firmware has no IO output control (ivs_ioctrl)",
        Capability.SPEAK: "its older firmware has no voice output",
        Capability.WHITELIST: "its older firmware has no whitelist commands",
    },
    Dialect.PARKINGCAM: {
        Capability.HOLD_OPEN: "ParkingCam cameras cannot hold the barrier open",
        Capability.TRIGGER: "ParkingCam cameras have no software trigger",
        Capability.SNAPSHOT: "ParkingCam cameras upload no image on request",
        Capability.SPEAK: "ParkingCam cameras have no voice output",
    },
}


@attrs.frozen
class CameraMode:
    """What decides which of a camera's replies carry what: its dialect (None
    until it was heard), firmware generation and heartbeat mode."""

    dialect: Dialect | None
    generation: Generation = Generation.UNKNOWN
    heartbeat: HeartbeatMode = HeartbeatMode.UNKNOWN

    @property
    def _row(self) -> Mapping[Capability, frozenset[ReplyKind]]:
        if self.dialect is Dialect.PARKINGCAM:
            return TABLE[(Dialect.PARKINGCAM, Generation.UNKNOWN)]
        generation = Generation.LEGACY if self.generation is Generation.LEGACY else Generation.CURRENT
        return TABLE[(Dialect.VZENITH, generation)]

    def reads(self, kind: ReplyKind) -> bool:
        """Whether the camera reads replies of ``kind`` at all."""
        if self.dialect is Dialect.PARKINGCAM:
            return kind is not ReplyKind.POLL
        if kind is ReplyKind.POLL:
            # A common heartbeat's reply is ignored; until the registry knows
            # the mode, a poll's reply is not counted on either.
            return self.heartbeat is HeartbeatMode.COMET
        return kind is not ReplyKind.HEARTBEAT

    def replies_for(self, capability: Capability) -> frozenset[ReplyKind]:
        """The replies this camera reads ``capability`` in (empty: it cannot)."""
        return frozenset(kind for kind in self._row.get(capability, ()) if self.reads(kind))

    def carries(self, capability: Capability, kind: ReplyKind) -> bool:
        return kind in self.replies_for(capability)

    def refusal(self, capability: Capability) -> str | None:
        """Why this camera cannot carry out ``capability``, or None when it can."""
        if capability in self._row:
            return None
        dialect = self.dialect or Dialect.VZENITH
        return _WHY_NOT[dialect].get(capability, f"the camera cannot {capability.value}")

    def waits_for_plate(self, capability: Capability) -> bool:
        """Whether ``capability`` reaches this camera only in a plate reply (a
        Vzenith camera on common heartbeat reads no other)."""
        return self.replies_for(capability) == {ReplyKind.PLATE}


#: Advice for the installer, by code (the admin page words it in its language).
ADVICE = {
    "switch_to_comet": (
        "Switch this camera to comet polling in its web page: on common heartbeat it reads "
        "commands and plate-list rows only in the replies to its plate reads"
    ),
    "older_firmware": (
        "This camera runs older firmware: it cannot close or hold the barrier, speak or keep "
        "a plate list of its own; upgrade it for those"
    ),
}


def advice_for(mode: CameraMode) -> str | None:
    """The code of what the installer should change about this camera, if anything."""
    if mode.dialect is Dialect.PARKINGCAM:
        return None
    if mode.generation is Generation.LEGACY:
        return "older_firmware"
    if mode.heartbeat is HeartbeatMode.COMMON:
        return "switch_to_comet"
    return None


def describe_mode(mode: CameraMode) -> str:
    """The camera's mode in a message: ``Vzenith, older firmware, common heartbeat``."""
    if mode.dialect is Dialect.PARKINGCAM:
        return "ParkingCam"
    parts = ["Vzenith"]
    if mode.generation is Generation.LEGACY:
        parts.append("older firmware")
    if mode.heartbeat is HeartbeatMode.COMMON:
        parts.append("common heartbeat")
    elif mode.heartbeat is HeartbeatMode.COMET:
        parts.append("comet polling")
    return ", ".join(parts)


def capability_rows() -> list[tuple[str, str, dict[Capability, str]]]:
    """The table as docs/cameras.md prints it: (camera, heartbeat mode,
    where each command rides or "-")."""
    rows = []
    cases = [
        ("Vzenith, current firmware", Dialect.VZENITH, Generation.CURRENT, HeartbeatMode.COMET),
        ("Vzenith, current firmware", Dialect.VZENITH, Generation.CURRENT, HeartbeatMode.COMMON),
        ("Vzenith, older firmware", Dialect.VZENITH, Generation.LEGACY, HeartbeatMode.COMET),
        ("Vzenith, older firmware", Dialect.VZENITH, Generation.LEGACY, HeartbeatMode.COMMON),
        ("ParkingCam", Dialect.PARKINGCAM, Generation.UNKNOWN, HeartbeatMode.COMMON),
    ]
    for name, dialect, generation, heartbeat in cases:
        mode = CameraMode(dialect, generation, heartbeat)
        where = {
            capability: ", ".join(kind.value for kind in ReplyKind if mode.carries(capability, kind))
            or "-"
            for capability in Capability
        }
        label = "heartbeat" if dialect is Dialect.PARKINGCAM else heartbeat.value
        rows.append((name, label, where))
    return rows
