"""ParkingCam whitelist commands in the camera's own character encoding (PROTOCOL.md
section 9): the encoding its pushes arrive in, for adds and deletions alike (the ALPHADIGI
manual's GB2312 deletions are a GB2312 camera's); UTF-8 until a push said. Pure."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from gateway.protocol import decode_body, parkingcam_add_whitelist, parkingcam_delete_whitelist

ROWS = [("粤B12345", None, None), ("京A00001", datetime(2026, 1, 1), datetime(2027, 1, 1))]


def test_parkingcam_adds_follow_the_camera_encoding() -> None:
    utf8 = parkingcam_add_whitelist(ROWS, charset="utf-8")
    assert "粤B12345".encode() in utf8
    gb = parkingcam_add_whitelist(ROWS, charset="gb18030")
    assert "粤B12345".encode("gb2312") in gb
    assert json.loads(gb.decode("gb2312")) == json.loads(utf8)
    # Not known yet: UTF-8, as the manual gives for adds.
    assert parkingcam_add_whitelist(ROWS) == utf8


def test_parkingcam_deletions_follow_the_camera_encoding() -> None:
    plates = ["粤B12345", "京A00001"]
    gb = parkingcam_delete_whitelist(plates, charset="gb18030")
    assert "粤B12345".encode("gb2312") in gb
    utf8 = parkingcam_delete_whitelist(plates, charset="utf-8")
    assert "粤B12345".encode() in utf8
    assert json.loads(decode_body(gb)) == json.loads(utf8)
    # Not known yet: UTF-8, the camera's factory setting.
    assert parkingcam_delete_whitelist(plates) == utf8


def test_ascii_commands_are_the_same_in_every_encoding() -> None:
    rows = [("AAA8888", None, None)]
    assert parkingcam_add_whitelist(rows, charset="gb18030") == parkingcam_add_whitelist(rows)
    assert parkingcam_delete_whitelist(["AAA8888"]) == parkingcam_delete_whitelist(
        ["AAA8888"], charset="utf-8"
    )


def test_an_encoding_no_parkingcam_reads_is_refused() -> None:
    with pytest.raises(ValueError):
        parkingcam_add_whitelist([("粤B12345", None, None)], charset="latin-1")
