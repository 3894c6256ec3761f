"""The capability table: what each camera can do and in which replies, as the
camera control refuses and the registry delivers by it. In memory."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from gateway.camera.commands import CommandState
from gateway.camera.control import CameraControl, NotSupported
from gateway.camera.registry import Camera, CameraRegistry
from gateway.protocol.capabilities import (
    CameraMode,
    Capability,
    Generation,
    HeartbeatMode,
    ReplyKind,
    capability_rows,
    generation_of,
)
from gateway.protocol.messages import Dialect, PlateResult
from gateway.protocol.parse import parse_push
from gateway.protocol.replies import HeartbeatReply, PlateReply
from gateway.site import Lanes, LaneSettings

DOCS = Path(__file__).resolve().parent.parent / "docs" / "cameras.md"
SAMPLES = Path(__file__).resolve().parent / "samples"

CURRENT_COMET = CameraMode(Dialect.VZENITH, Generation.CURRENT, HeartbeatMode.COMET)
CURRENT_COMMON = CameraMode(Dialect.VZENITH, Generation.CURRENT, HeartbeatMode.COMMON)
LEGACY_COMET = CameraMode(Dialect.VZENITH, Generation.LEGACY, HeartbeatMode.COMET)
PARKINGCAM = CameraMode(Dialect.PARKINGCAM, Generation.UNKNOWN, HeartbeatMode.COMMON)


def test_the_documented_table_is_the_one_in_code() -> None:
    text = DOCS.read_text()
    documented = {
        tuple(cell.strip() for cell in line.strip("|").split("|"))
        for line in text.splitlines()
        if line.startswith("| Vzenith") or line.startswith("| ParkingCam")
    }
    in_code = {
        (name, heartbeat, *(where[capability] for capability in Capability))
        for name, heartbeat, where in capability_rows()
    }
    assert documented == in_code


def test_a_common_heartbeat_reply_carries_nothing() -> None:
    for capability in Capability:
        assert not CURRENT_COMMON.carries(capability, ReplyKind.POLL)
        assert CURRENT_COMET.carries(capability, ReplyKind.POLL)
    assert CURRENT_COMMON.waits_for_plate(Capability.OPEN)
    assert not CURRENT_COMET.waits_for_plate(Capability.OPEN)
    # A mode not yet learnt: a poll's reply is not counted on.
    unknown = CameraMode(Dialect.VZENITH)
    assert not unknown.reads(ReplyKind.POLL) and unknown.reads(ReplyKind.PLATE)


def test_parkingcam_replies_carry_only_its_fields() -> None:
    assert PARKINGCAM.replies_for(Capability.OPEN) == {ReplyKind.PLATE, ReplyKind.HEARTBEAT}
    assert PARKINGCAM.replies_for(Capability.CLOSE) == {ReplyKind.HEARTBEAT}
    for capability in (Capability.TRIGGER, Capability.SNAPSHOT, Capability.HOLD_OPEN, Capability.SPEAK):
        assert PARKINGCAM.replies_for(capability) == frozenset()
        assert PARKINGCAM.refusal(capability)
    assert not PARKINGCAM.reads(ReplyKind.POLL)


def test_older_firmware_reads_only_its_five_fields() -> None:
    for capability in (Capability.OPEN, Capability.TRIGGER, Capability.SNAPSHOT, Capability.SERIAL):
        assert LEGACY_COMET.refusal(capability) is None
    for capability in (Capability.CLOSE, Capability.HOLD_OPEN, Capability.SPEAK, Capability.WHITELIST):
        reason = LEGACY_COMET.refusal(capability)
        assert reason is not None and "older firmware" in reason


def sample(name: str) -> PlateResult:
    body = re.sub(r"//[^\n]*", "", (SAMPLES / name).read_text()).encode()
    message = parse_push(body, "application/json")
    assert isinstance(message, PlateResult)
    return message


def plate_body(**result: object) -> PlateResult:
    body = {
        "AlarmInfoPlate": {
            "serialno": "d85b1269-8f942256",
            "result": {"PlateResult": {"license": "京A12345", "colorType": 1, **result}},
        }
    }
    message = parse_push(json.dumps(body).encode(), "application/json")
    assert isinstance(message, PlateResult)
    return message


def test_firmware_generation_is_told_by_the_plate_push() -> None:
    assert generation_of(plate_body()) is Generation.LEGACY
    assert generation_of(plate_body(plateid=7)) is Generation.CURRENT
    assert generation_of(plate_body(isoffline=0)) is Generation.CURRENT
    assert generation_of(plate_body(gioouts=[])) is Generation.CURRENT
    # The manual's offline record is the current firmware's; the 2015
    # document's no-plate read the older one's.
    assert generation_of(sample("plate_vzenith_manual_offline_record.jsonc")) is Generation.CURRENT
    assert generation_of(sample("plate_vzenith_nolicense_doc_2015.json")) is Generation.LEGACY
    assert generation_of(sample("plate_parkingcam_alphadigi_manual_v1.2.json")) is Generation.UNKNOWN


class Site:
    def __init__(self) -> None:
        self.clock = Clock()
        self.registry = CameraRegistry(self.clock)
        lanes = Lanes([LaneSettings(name="Entrance", camera="cam", barrier_channel=1)])
        self.control = CameraControl(clock=self.clock, registry=self.registry, lanes=lanes)

    def camera(self, dialect: Dialect, heartbeat: HeartbeatMode, generation: Generation) -> Camera:
        camera = self.registry.seen("cam", address="127.0.0.1", dialect=dialect)
        camera.heartbeat = heartbeat
        camera.generation = generation
        camera.gateway_address = ("127.0.0.1", 8080, False)
        return camera


def test_what_a_camera_cannot_do_is_refused_at_once_naming_its_mode() -> None:
    site = Site()
    site.camera(Dialect.PARKINGCAM, HeartbeatMode.COMMON, Generation.UNKNOWN)
    with pytest.raises(NotSupported, match=r"camera cam \(ParkingCam\): ParkingCam cameras have no software trigger"):
        site.control.trigger("cam")
    with pytest.raises(NotSupported, match="upload no image"):
        site.control.snapshot("cam").send(None)  # refused before any wait
    with pytest.raises(NotSupported, match="cannot hold the barrier open"):
        site.control.hold_open("cam")
    site.camera(Dialect.VZENITH, HeartbeatMode.COMET, Generation.LEGACY)
    with pytest.raises(NotSupported, match=r"\(Vzenith, older firmware, comet polling\)"):
        site.control.close("cam")
    assert site.registry.get("cam") is not None and not site.registry.get("cam").commands  # type: ignore[union-attr]


def test_a_common_heartbeat_camera_gets_an_open_with_its_next_plate_and_says_so() -> None:
    site = Site()
    camera = site.camera(Dialect.VZENITH, HeartbeatMode.COMMON, Generation.CURRENT)
    command = site.control.open("cam")
    assert command.describe()["waits_for"] == "plate"
    assert site.registry.fill_reply(camera, PlateReply(), ReplyKind.POLL) == []
    reply = PlateReply()
    assert site.registry.fill_reply(camera, reply, ReplyKind.PLATE) == [command]
    assert reply.open_channel == 1 and command.state is CommandState.DELIVERED
    assert "waits_for" not in command.describe()


def test_a_parkingcam_close_goes_in_a_heartbeat_never_in_a_plate_reply() -> None:
    site = Site()
    camera = site.camera(Dialect.PARKINGCAM, HeartbeatMode.COMMON, Generation.UNKNOWN)
    command = site.control.close("cam")
    plate = PlateReply()
    assert site.registry.fill_reply(camera, plate, ReplyKind.PLATE) == []
    assert plate.io_control is None and plate.to_dict()["Response_AlarmInfoPlate"].get("ivs_ioctrl") is None
    heartbeat = HeartbeatReply()
    assert site.registry.fill_reply(camera, heartbeat, ReplyKind.HEARTBEAT) == [command]
    assert heartbeat.shutoff
