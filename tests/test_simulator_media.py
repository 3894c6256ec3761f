"""Generated JPEGs, plates and request bodies of the camera simulator."""

from __future__ import annotations

import base64
import json
import random
import re
import struct
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

import pytest

from gateway.simulator import jpeg
from gateway.simulator.bodies import (
    CameraIdentity,
    PlateEvent,
    PlateImages,
    encode_json,
    io_body,
    make_boundary,
    plate_body,
    registration_form,
    serial_body,
    snapshot_body,
)
from gateway.simulator.plates import (
    NO_PLATE,
    PROVINCES,
    PlateSource,
    generate_plate,
    image_path,
    load_plate_file,
    read_for_license,
)

# ------------------------------------------------------------------ JPEG


def _segments(data: bytes) -> tuple[dict[int, list[bytes]], bytes]:
    """Walk the marker segments up to SOS; returns them and the scan data."""
    assert data[:2] == b"\xff\xd8"
    segments: dict[int, list[bytes]] = {}
    position = 2
    while True:
        assert data[position] == 0xFF, f"no marker at {position}"
        marker = data[position + 1]
        (length,) = struct.unpack(">H", data[position + 2 : position + 4])
        payload = data[position + 4 : position + 2 + length]
        segments.setdefault(marker, []).append(payload)
        position += 2 + length
        if marker == 0xDA:
            return segments, data[position:]


def _decode_dc(data: bytes) -> tuple[int, int, list[list[int]]]:
    """A small baseline decoder from the file's own tables: (width, height, DC per block per component)."""
    segments, scan = _segments(data)
    precision, height, width, components = struct.unpack(">BHHB", segments[0xC0][0][:6])
    assert (precision, components) == (8, 3)
    tables: dict[tuple[int, int], dict[tuple[int, int], int]] = {}
    for payload in segments[0xC4]:
        while payload:
            klass, ident = payload[0] >> 4, payload[0] & 15
            counts = payload[1:17]
            symbols = payload[17 : 17 + sum(counts)]
            codes, code, k = {}, 0, 0
            for length in range(1, 17):
                for _ in range(counts[length - 1]):
                    codes[(code, length)] = symbols[k]
                    code, k = code + 1, k + 1
                code <<= 1
            tables[(klass, ident)] = codes
            payload = payload[17 + sum(counts) :]
    assert scan.endswith(b"\xff\xd9")
    stream = scan[:-2].replace(b"\xff\x00", b"\xff")
    bits = "".join(f"{byte:08b}" for byte in stream)
    position = 0

    def read(n: int) -> int:
        nonlocal position
        value = int(bits[position : position + n] or "0", 2)
        position += n
        return value

    def symbol(table: dict[tuple[int, int], int]) -> int:
        code = 0
        for length in range(1, 17):
            code = (code << 1) | read(1)
            if (code, length) in table:
                return table[(code, length)]
        raise AssertionError("bad Huffman code")

    def extend(value: int, size: int) -> int:
        return value if size == 0 or value >= 1 << (size - 1) else value - (1 << size) + 1

    blocks = (width // 8) * (height // 8)
    dc: list[list[int]] = [[], [], []]
    previous = [0, 0, 0]
    for _ in range(blocks):
        for component in range(3):
            table = 0 if component == 0 else 1
            size = symbol(tables[(0, table)])
            previous[component] += extend(read(size), size)
            dc[component].append(previous[component])
            k = 1
            while k < 64:
                run_size = symbol(tables[(1, table)])
                if run_size == 0:
                    break
                k += (run_size >> 4) + 1
                read(run_size & 15)
    # Only the 1-bit padding of the last byte may remain.
    assert len(bits) - position < 8 and set(bits[position:]) <= {"1"}
    return width, height, dc


def test_jpeg_is_a_baseline_jfif_with_the_expected_blocks() -> None:
    image = jpeg.scene_image(1, (10, 20), comment="京A12345".encode())
    assert image.startswith(b"\xff\xd8") and image.endswith(b"\xff\xd9")
    segments, _ = _segments(image)
    assert segments[0xE0][0].startswith(b"JFIF\x00")
    assert segments[0xFE][0] == "京A12345".encode()
    width, height, dc = _decode_dc(image)
    assert (width, height) == (320, 240)
    # The plate box (block 10, 20) is blue: its luma sits far below the sky's.
    plate_block, sky_block = 20 * 40 + 10, 0
    luma_q = 16
    assert dc[0][plate_block] * luma_q / 8 + 128 == pytest.approx(
        0.299 * 20 + 0.587 * 60 + 0.114 * 200, abs=2
    )
    assert dc[0][sky_block] > dc[0][plate_block]


def test_crop_image_decodes() -> None:
    width, height, dc = _decode_dc(jpeg.crop_image(5))
    assert (width, height) == (96, 32)
    assert len(dc[0]) == 12 * 4


@pytest.mark.parametrize("extra", [0, 1, 3, 4, 5, 1000, 65536, 65537, 65538, 65539, 200_000])
def test_padding_reaches_the_requested_size(extra: int) -> None:
    image = jpeg.crop_image(1)
    padded = jpeg.pad_jpeg(image, len(image) + extra)
    expected = len(image) + (4 if 0 < extra < 4 else extra)
    assert len(padded) == expected
    assert padded.startswith(b"\xff\xd8") and padded.endswith(b"\xff\xd9")
    # Still the same picture.
    assert _decode_dc(padded)[2] == _decode_dc(image)[2]


def test_padding_never_shrinks() -> None:
    image = jpeg.scene_image(2, (0, 0))
    assert jpeg.pad_jpeg(image, 10) == image


def test_benchmark_sized_image() -> None:
    image = jpeg.pad_jpeg(jpeg.scene_image(1, (14, 20)), 200_000)
    assert len(image) == 200_000
    assert image[:2] == b"\xff\xd8" and image[-2:] == b"\xff\xd9"


# ---------------------------------------------------------------- plates

_BLUE = re.compile(f"^[{PROVINCES}][A-HJ-NP-Z][A-HJ-NP-Z0-9]{{5}}$")
_NEW_ENERGY = re.compile(f"^[{PROVINCES}][A-HJ-NP-Z][DF][0-9]{{5}}$")


def test_generated_plates_look_real() -> None:
    rng = random.Random(7)
    reads = [generate_plate(rng) for _ in range(2000)]
    for read in reads:
        if read.license == NO_PLATE:
            assert not read.has_plate and read.color_type == 0
        elif len(read.license) == 8:
            assert _NEW_ENERGY.match(read.license), read.license
            assert (read.color_type, read.plate_type) == (5, 19)
        else:
            assert _BLUE.match(read.license), read.license
    licenses = [read.license for read in reads]
    assert 0 < licenses.count(NO_PLATE) < 150
    assert sum(len(text) == 8 for text in licenses) > 100


def test_plate_file(tmp_path: Path) -> None:
    path = tmp_path / "plates.txt"
    path.write_text("# site list\n京A12345\n\n粤BD12345\n_无_\n", encoding="utf-8")
    plates = load_plate_file(path)
    assert plates == ["京A12345", "粤BD12345", "_无_"]
    source = PlateSource(random.Random(1), plates, offset=1)
    assert [read.license for read in source.take(4)] == [
        "粤BD12345",
        "_无_",
        "京A12345",
        "粤BD12345",
    ]
    assert read_for_license("粤BD12345").color_type == 5
    (tmp_path / "empty.txt").write_text("\n", encoding="utf-8")
    with pytest.raises(ValueError):
        load_plate_file(tmp_path / "empty.txt")


def test_image_path_is_gbk_percent_encoded() -> None:
    from datetime import datetime

    path = image_path("粤B12345", datetime(2015, 9, 9, 17, 14, 22), 4504)
    assert path == "%2Fmmc%2FVzIPCCap%2F2015_09_09%2F1714224504_%D4%C1B12345.jpg"
    assert unquote_to_bytes(path).decode("gbk").endswith("_粤B12345.jpg")
    assert image_path(NO_PLATE, datetime(2015, 9, 9, 17, 14, 22), 4504).endswith(
        "1714224504__%CE%DE_.jpg"
    )


# ----------------------------------------------------------------- bodies

IDENTITY = CameraIdentity("d85b1269-8f942256", "192.168.1.100")
EVENT = PlateEvent(
    read_for_license("京A12345"), plateid=12, trigger_type=8, sec=1441815171, usec=672241
)


def result_of(body: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = body["AlarmInfoPlate"]["result"]["PlateResult"]
    return result


def test_detail_levels_shrink_the_plate_result() -> None:
    fields = {
        detail: set(result_of(plate_body(IDENTITY, EVENT, detail=detail, newer_firmware=False)))
        for detail in ("all", "detailed", "short", "brief")
    }
    assert fields["brief"] == {
        "colorType",
        "direction",
        "imagePath",
        "license",
        "triggerType",
        "type",
    }
    assert fields["short"] == fields["brief"] | {"timeStamp"}
    assert fields["detailed"] == fields["short"] | {
        "timeUsed",
        "colorValue",
        "confidence",
        "bright",
        "carBright",
        "carColor",
    }
    assert fields["all"] == fields["detailed"] | {
        "location",
        "plate_true_width",
        "plate_distance",
        "is_fake_plate",
        "car_location",
        "car_brand",
        "feature_Code",
    }
    newer = result_of(plate_body(IDENTITY, EVENT, detail="brief", offline=True))
    assert set(newer) == fields["brief"] | {"plateid", "isoffline", "gioouts"}
    assert (newer["plateid"], newer["isoffline"]) == (12, 1)
    assert newer["gioouts"][0] == {"ionum": "0", "ctrltype": 0}


def test_images_replace_the_image_path() -> None:
    full, crop = jpeg.scene_image(1, (1, 1)), jpeg.crop_image(1)
    result = result_of(plate_body(IDENTITY, EVENT, images=PlateImages(full, crop)))
    assert "imagePath" not in result
    assert base64.b64decode(result["imageFile"]) == full
    assert result["imageFileLen"] == len(result["imageFile"])
    assert base64.b64decode(result["imageFragmentFile"]) == crop
    raw = result_of(plate_body(IDENTITY, EVENT, images=PlateImages(None, crop), image_len="raw"))
    assert raw["imageFragmentFileLen"] == len(crop)
    assert "imagePath" in raw


def test_parkingcam_plate_has_no_plateid() -> None:
    identity = CameraIdentity(
        "QFX2182310150262", "192.168.1.101", dialect="parkingcam", device_name="default"
    )
    result = result_of(plate_body(identity, EVENT, parkingcam_extra={"vehicleId": 3}))
    assert "plateid" not in result and result["vehicleId"] == 3
    assert set(result["timeStamp"]["Timeval"]) == {"sec", "usec"}


def test_json_bodies_are_pretty_printed_and_sorted() -> None:
    body = encode_json(io_body(IDENTITY, 3, 1))
    assert body.decode("utf-8") == json.dumps(
        json.loads(body), indent=4, sort_keys=True, ensure_ascii=False
    )
    assert body.startswith(b'{\n    "AlarmGioIn": {\n        "deviceName"')
    assert "京".encode() in encode_json(plate_body(IDENTITY, EVENT))
    assert "京".encode("gb18030") in encode_json(plate_body(IDENTITY, EVENT), "gb2312")


def test_serial_body_reproduces_the_nul_truncation() -> None:
    body = serial_body(IDENTITY, 1, b"\x01\x02\x00\x03\x04")["SerialData"]
    assert base64.b64decode(body["data"]) == b"\x01\x02"
    assert body["dataLen"] == 5
    assert body["serialChannel"] == 1


def test_snapshot_body_length_is_raw() -> None:
    image = jpeg.crop_image(1)
    body = snapshot_body(IDENTITY, image)
    assert body["ipaddr"] == "192.168.1.100"
    assert body["TriggerImage"]["imageFileLen"] == len(image)


def test_registration_form_order_and_boundaries() -> None:
    rng = random.Random(3)
    curl, long = make_boundary(rng, "curl"), make_boundary(rng, "long")
    assert re.fullmatch(r"-{24}[0-9a-f]{16}", curl)
    assert re.fullmatch(r"-{28}[0-9a-f]{12}", long)
    fields = [("device_name", "IVS"), ("ipaddr", "192.168.1.100"), ("port", "80")]
    body, content_type = registration_form(fields, curl)
    assert content_type == f"multipart/form-data; boundary={curl}"
    assert body == (
        f'--{curl}\r\nContent-Disposition: form-data; name="device_name"\r\n\r\nIVS\r\n'
        f'--{curl}\r\nContent-Disposition: form-data; name="ipaddr"\r\n\r\n192.168.1.100\r\n'
        f'--{curl}\r\nContent-Disposition: form-data; name="port"\r\n\r\n80\r\n'
        f"--{curl}--\r\n"
    ).encode("ascii")
