"""How one simulated camera is set up (the settings of a camera's web page)."""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import attrs

from gateway.simulator.bodies import BOUNDARY_STYLES, DETAIL_LEVELS, SERIAL_KEYS
from gateway.simulator.firmware import CameraFirmware, HeldPlate
from gateway.simulator.http import loopback_bind_address
from gateway.simulator.plates import NO_PLATE, NO_PLATE_TEXTS

__all__ = [
    "CameraConfig",
    "DEFAULT_PATHS",
    "MAX_ALTERNATES",
    "MAX_RESEND",
    "OFFLINE_CAPACITY",
    "PARKINGCAM_SERIAL_STYLES",
    "fleet_configs",
    "parkingcam_serial",
    "vzenith_serial",
]

MAX_ALTERNATES = 3
MAX_RESEND = 4
OFFLINE_CAPACITY = 9000
# ParkingCam cameras re-send an unconfirmed plate at most every 20 s.
PARKINGCAM_MAX_RETRANSFER = 20.0

DEFAULT_PATHS = {
    "plate": "/devicemanagement/php/plateresult.php",
    "heartbeat": "/devicemanagement/php/receivedeviceinfo.php",
    "gio": "/devicemanagement/php/gio.php",
    "serial": "/devicemanagement/php/serial.php",
}


def _one_of(*choices: str) -> Any:
    return attrs.validators.in_(choices)


def _check_servers(instance: Any, attribute: Any, value: tuple[str, ...]) -> None:
    if not value:
        raise ValueError("a camera needs a server URL")
    if len(value) > 1 + MAX_ALTERNATES:
        raise ValueError(f"at most {MAX_ALTERNATES} alternate servers")
    for url in value:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"server URL {url!r} is not http(s)://host[:port]")


def _strings(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


def _byte_strings(values: Iterable[bytes]) -> tuple[bytes, ...]:
    return tuple(values)


def _rows(values: Iterable[HeldPlate]) -> tuple[HeldPlate, ...]:
    return tuple(values)


def _no_plate_texts(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values) or (NO_PLATE,)


def _check_no_plate_texts(instance: Any, attribute: Any, value: tuple[str, ...]) -> None:
    unknown = [text for text in value if text not in NO_PLATE_TEXTS]
    if unknown:
        raise ValueError(
            f"no-plate text {unknown[0]!r} is none of {', '.join(NO_PLATE_TEXTS)}"
        )


def _check_charset(instance: Any, attribute: Any, value: str) -> None:
    if value not in ("utf-8", "gb2312"):
        raise ValueError("charset must be utf-8 or gb2312")
    if value != "utf-8" and instance.dialect != "parkingcam":
        # PROTOCOL.md sections 2 and 9: the encoding setting is ParkingCam's.
        raise ValueError("only ParkingCam cameras have a character encoding setting")


def _non_negative(instance: Any, attribute: Any, value: float) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must not be negative")


def _positive(instance: Any, attribute: Any, value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be positive")


def _fraction(instance: Any, attribute: Any, value: float) -> None:
    if not 0 <= value <= 1:
        raise ValueError(f"{attribute.name} must be between 0 and 1")


@attrs.frozen
class CameraConfig:
    """Everything one simulated camera needs.

    ``servers`` is the main server first, then up to 3 alternates, each
    ``http(s)://host[:port]`` (a path there is ignored: each push kind has its
    own configured path, as on the camera). ``heartbeat`` is ``off``,
    ``common`` or ``comet`` (ParkingCam: any value but ``off`` sends its JSON
    heartbeat every ``heartbeat_interval``). ``heartbeat_interval`` ``None``
    means the firmware default: 30 s, 5 s with ``offline_check``; ParkingCam 10 s.

    ``newer_firmware`` False is Vzenith's older (2016-17) firmware: no
    ``plateid``/``isoffline``/``gioouts`` in pushes, no offline records, and
    only ``info``, ``channelNum``, ``TriggerImage``, ``serialData`` and
    ``manualTrigger`` read in replies (:attr:`firmware`).

    ``link_delay``: seconds between an answer and the next poll or push (a
    slow 4G link, a new TLS connection each time). ``decodes_chunked`` False:
    the camera's HTTP client cannot decode a ``Transfer-Encoding: chunked``
    reply, and such an exchange fails.

    Plates: ``three_region_rate`` of generated reads are three-region plates;
    a no-plate read is spelt as one of ``no_plate_texts``;
    ``control_char_rate`` of plate reads carry a control character.
    ``serial_key`` ``"serialNo"`` spells the key of IO and serial pushes as
    the manual does. ``extra_fields`` puts the fields the firmware sends
    beside ``PlateResult`` (Vzenith ``rule_id``, ``user_data``; ParkingCam
    ``openflag``, ``entityName``, ``TaxID``, ``latitude``, ``longitude``).
    """

    serialno: str
    servers: tuple[str, ...] = attrs.field(converter=_strings, validator=_check_servers)
    index: int = 0
    dialect: str = attrs.field(default="vzenith", validator=_one_of("vzenith", "parkingcam"))
    ipaddr: str = "192.168.1.100"
    bind_address: str | None = None
    main_priority: bool = False
    plate_path: str = DEFAULT_PATHS["plate"]
    heartbeat_path: str = DEFAULT_PATHS["heartbeat"]
    gio_path: str = DEFAULT_PATHS["gio"]
    serial_path: str = DEFAULT_PATHS["serial"]
    heartbeat: str = attrs.field(default="off", validator=_one_of("off", "common", "comet"))
    heartbeat_interval: float | None = None
    offline_check: bool = False
    heartbeat_retry: float = attrs.field(default=1.0, validator=_positive)
    comet_timeout: float = attrs.field(default=30.0, validator=_positive)
    comet_retry: float = attrs.field(default=2.0, validator=_non_negative)
    timeout: float = attrs.field(default=5.0, validator=_positive)
    resend: int = attrs.field(default=0, validator=attrs.validators.in_(range(MAX_RESEND + 1)))
    offline_records: bool = False
    offline_capacity: int = attrs.field(default=OFFLINE_CAPACITY, validator=_positive)
    offline_retry: float = attrs.field(default=1.0, validator=_positive)
    plates: int = attrs.field(default=0, validator=_non_negative)
    rate: float = attrs.field(default=1.0, validator=_positive)
    plate_list: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    no_plate_rate: float = attrs.field(default=0.02, validator=_fraction)
    detail: str = attrs.field(default="all", validator=_one_of(*DETAIL_LEVELS))
    images: str = attrs.field(default="none", validator=_one_of("none", "full", "crop", "both"))
    image_bytes: int = attrs.field(default=0, validator=_non_negative)
    image_len: str = attrs.field(default="base64", validator=_one_of("base64", "raw"))
    duplicate_rate: float = attrs.field(default=0.0, validator=_fraction)
    io_events: int = attrs.field(default=0, validator=_non_negative)
    serial_in: tuple[bytes, ...] = attrs.field(default=(), converter=_byte_strings)
    serial_in_channel: int = attrs.field(default=0, validator=attrs.validators.in_((0, 1)))
    boundary_style: str = attrs.field(default="curl", validator=_one_of(*BOUNDARY_STYLES))
    newer_firmware: bool = True
    charset: str = attrs.field(default="utf-8", validator=_check_charset)
    seed: int = 1
    device_name: str | None = None
    web_port: int = 80
    web_user: str = "admin"
    web_password: str = attrs.field(default="admin", repr=False)
    channel_num: int = 1
    tls_ca: bytes | None = attrs.field(default=None, repr=False)
    clock_offset: float = 0.0
    first_plateid: int = 1
    start_delay: float = attrs.field(default=0.0, validator=_non_negative)
    parkingcam_queue: int = attrs.field(default=10, validator=_positive)
    whitelist: tuple[HeldPlate, ...] = attrs.field(default=(), converter=_rows)
    link_delay: float = attrs.field(default=0.0, validator=_non_negative)
    decodes_chunked: bool = True
    three_region_rate: float = attrs.field(default=0.0, validator=_fraction)
    no_plate_texts: tuple[str, ...] = attrs.field(
        default=(NO_PLATE,), converter=_no_plate_texts, validator=_check_no_plate_texts
    )
    control_char_rate: float = attrs.field(default=0.0, validator=_fraction)
    serial_key: str = attrs.field(default="serialno", validator=_one_of(*SERIAL_KEYS))
    extra_fields: bool = True

    @property
    def firmware(self) -> CameraFirmware:
        """What this camera's firmware reads in replies."""
        generation = "current" if self.newer_firmware or self.dialect != "vzenith" else "legacy"
        return CameraFirmware(self.dialect, generation, self.charset)

    @property
    def effective_device_name(self) -> str:
        return self.device_name or ("IVS" if self.dialect == "vzenith" else "default")

    @property
    def effective_heartbeat_interval(self) -> float:
        if self.heartbeat_interval is not None:
            return self.heartbeat_interval
        if self.dialect == "parkingcam":
            return 10.0
        return 5.0 if self.offline_check else 30.0

    @property
    def retransfer_interval(self) -> float:
        """How often a ParkingCam camera re-sends an unconfirmed plate."""
        return min(self.timeout, PARKINGCAM_MAX_RETRANSFER)


def vzenith_serial(rng: random.Random) -> str:
    """A Vzenith-style serial number, ``xxxxxxxx-xxxxxxxx`` in hex."""
    return f"{rng.getrandbits(32):08x}-{rng.getrandbits(32):08x}"


# ParkingCam serial numbers: "qfx" like QFX2182310150262; real bodies also
# showed 16 and 32 hex digits (PROTOCOL.md section 9).
PARKINGCAM_SERIAL_STYLES = ("qfx", "hex16", "hex32")


def parkingcam_serial(rng: random.Random, style: str = "qfx") -> str:
    """A ParkingCam-style serial number: ``QFX2182310150262`` (``qfx``), or
    16 / 32 hex digits like ``e10b2d6c8c07b422361457935b518642``."""
    if style == "hex16":
        return f"{rng.getrandbits(64):016x}"
    if style == "hex32":
        return f"{rng.getrandbits(128):032x}"
    if style != "qfx":
        raise ValueError(f"unknown ParkingCam serial style {style!r}")
    return "QFX" + "".join(rng.choice("0123456789") for _ in range(13))


def _address_plus(base: str, offset: int) -> str:
    return str(ipaddress.IPv4Address(int(ipaddress.IPv4Address(base)) + offset))


def fleet_configs(
    count: int,
    template: CameraConfig,
    bind_base: str | None = "127.0.0.11",
    ipaddr_base: str = "192.168.1.100",
    serial_style: str = "qfx",
) -> list[CameraConfig]:
    """``count`` cameras like ``template``, each with its own serial number,
    ``ipaddr``, random seed and (where possible) loopback source address.
    ``serial_style`` shapes ParkingCam serial numbers (:func:`parkingcam_serial`).

    The serial number and address come from ``template.seed`` and the
    camera's index, so the same command line simulates the same cameras.
    A camera bound to ``127.0.0.x`` reports that address as its ``ipaddr``.
    """
    configs = []
    for index in range(count):
        rng = random.Random(f"camera:{template.seed}:{index}")
        serialno = (
            vzenith_serial(rng)
            if template.dialect == "vzenith"
            else parkingcam_serial(rng, serial_style)
        )
        bind = None
        if bind_base is not None:
            bind = loopback_bind_address(_address_plus(bind_base, index), list(template.servers))
        ipaddr = bind or _address_plus(ipaddr_base, index)
        configs.append(
            attrs.evolve(
                template,
                serialno=serialno,
                index=index,
                ipaddr=ipaddr,
                bind_address=bind,
                seed=template.seed * 1000 + index,
            )
        )
    return configs
