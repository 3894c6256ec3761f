"""Event ids: stable for the camera's own event, safe as file names and in URLs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.store.ids import is_valid_event_id, new_event_id, plate_event_id

SERIAL = "d85b1269-8f942256"


def test_same_camera_event_gets_same_id() -> None:
    first = plate_event_id(SERIAL, 1234, "京A12345", 1700000000, 250)
    again = plate_event_id(SERIAL, 1234, "京A12345", 1700000000, 250)
    assert first == again
    assert first.startswith("p-")
    assert len(first) == 28
    assert is_valid_event_id(first)


def test_serial_number_is_case_folded_and_trimmed() -> None:
    assert plate_event_id("QFX2182310150262", 7, "粤FQK883", 5, 0) == plate_event_id(
        " qfx2182310150262 ", 7, "粤FQK883", 5, 0
    )


def test_plateid_identifies_the_record_whatever_the_license_text() -> None:
    # A re-sent offline record carries the same plateid; the text is not part of it.
    assert plate_event_id(SERIAL, 42, "京A12345", 100, 1) == plate_event_id(
        SERIAL, 42, "京A1234S", 100, 1
    )
    assert plate_event_id(SERIAL, 42, "x", None, None) == plate_event_id(
        SERIAL, 42, "y", None, None
    )


def test_different_events_get_different_ids() -> None:
    base = plate_event_id(SERIAL, 42, "京A12345", 100, 1)
    assert plate_event_id(SERIAL, 43, "京A12345", 100, 1) != base
    assert plate_event_id("other-camera", 42, "京A12345", 100, 1) != base
    # A plate counter restarted after a camera reset: same plateid, other time.
    assert plate_event_id(SERIAL, 42, "京A12345", 999, 1) != base


def test_without_plateid_license_and_camera_time_identify_the_event() -> None:
    first = plate_event_id(SERIAL, None, "京A12345", 1700000000, 250)
    assert first == plate_event_id(SERIAL, None, " 京A12345 ", 1700000000, 250)
    assert first != plate_event_id(SERIAL, None, "京A12345", 1700000000, 251)
    assert first != plate_event_id(SERIAL, None, "京A12346", 1700000000, 250)
    assert first != plate_event_id(SERIAL, 1, "京A12345", 1700000000, 250)


def test_event_without_any_identity_gets_a_random_id() -> None:
    # No plateid and no timeStamp: two pushes cannot be told apart from two cars.
    first = plate_event_id(SERIAL, None, "京A12345", None, None)
    second = plate_event_id(SERIAL, None, "京A12345", None, None)
    assert first != second
    assert first.startswith("p-") and is_valid_event_id(first)


def test_serial_number_is_required() -> None:
    with pytest.raises(ValueError):
        plate_event_id("  ", 1, "京A12345", 1, 1)


def test_new_event_ids_are_random_and_named_by_kind() -> None:
    ids = {new_event_id("io") for _ in range(200)}
    assert len(ids) == 200
    for event_id in ids:
        assert event_id.startswith("io-")
        assert is_valid_event_id(event_id)
    assert new_event_id("camera_online").startswith("camera_online-")


@pytest.mark.parametrize("kind", ["", "IO", "a/b", "x" * 17, "1io", "io-"])
def test_new_event_id_refuses_odd_kinds(kind: str) -> None:
    with pytest.raises(ValueError):
        new_event_id(kind)


@pytest.mark.parametrize(
    "candidate",
    ["../etc/passwd", "p-", "p-abc", "P-ABCDEFGHIJKLMNOPQRSTUVWXYZ", "p-abcd efgh ijkl mnop", ""],
)
def test_foreign_strings_are_not_event_ids(candidate: str) -> None:
    assert not is_valid_event_id(candidate)


@given(
    serial=st.text(st.characters(exclude_categories=()), min_size=1).filter(
        lambda s: s.strip() != ""
    ),
    plateid=st.none() | st.integers(min_value=0, max_value=2**63),
    license=st.text(),
    sec=st.none() | st.integers(min_value=0, max_value=2**40),
    usec=st.none() | st.integers(min_value=0, max_value=999_999),
)
def test_any_camera_input_makes_a_safe_id(
    serial: str, plateid: int | None, license: str, sec: int | None, usec: int | None
) -> None:
    event_id = plate_event_id(serial, plateid, license, sec, usec)
    assert is_valid_event_id(event_id)
    assert "/" not in event_id and "." not in event_id
