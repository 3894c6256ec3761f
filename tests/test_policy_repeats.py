"""Repeat reads of one car within the duplicate window."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.policy.repeats import RepeatFilter


def test_second_read_within_window_is_repeat_and_does_not_act() -> None:
    repeats = RepeatFilter(window=10)
    assert repeats.check("Entrance", "京A12345", True, now=100.0).act
    verdict = repeats.check("Entrance", "京A12345", True, now=105.0)
    assert verdict.repeat and not verdict.act


def test_read_after_window_acts_again() -> None:
    repeats = RepeatFilter(window=10)
    repeats.check("Entrance", "京A12345", True, now=100.0)
    verdict = repeats.check("Entrance", "京A12345", True, now=110.0)
    assert not verdict.repeat and verdict.act


def test_other_lane_or_plate_is_not_a_repeat() -> None:
    repeats = RepeatFilter(window=10)
    repeats.check("Entrance", "京A12345", True, now=100.0)
    assert not repeats.check("Exit", "京A12345", True, now=101.0).repeat
    assert not repeats.check("Entrance", "京A12346", True, now=101.0).repeat


def test_denied_then_allowed_acts_once_more_then_not_again() -> None:
    repeats = RepeatFilter(window=10)
    assert repeats.check("Entrance", "京A12345", False, now=100.0).act
    allowed = repeats.check("Entrance", "京A12345", True, now=102.0)
    assert allowed.repeat and allowed.act
    again = repeats.check("Entrance", "京A12345", True, now=103.0)
    assert again.repeat and not again.act


def test_allowed_then_denied_does_not_act() -> None:
    repeats = RepeatFilter(window=10)
    repeats.check("Entrance", "京A12345", True, now=100.0)
    verdict = repeats.check("Entrance", "京A12345", False, now=101.0)
    assert verdict.repeat and not verdict.act


def test_zero_window_never_repeats() -> None:
    repeats = RepeatFilter(window=0)
    repeats.check("Entrance", "京A12345", True, now=100.0)
    assert not repeats.check("Entrance", "京A12345", True, now=100.0).repeat


@given(st.lists(st.tuples(st.sampled_from("ABC"), st.floats(0, 5)), max_size=200))
def test_memory_holds_only_reads_within_the_window(reads: list[tuple[str, float]]) -> None:
    repeats = RepeatFilter(window=10, max_entries=50)
    now = 0.0
    for plate, step in reads:
        now += step
        repeats.check("lane", plate, True, now)
        assert len(repeats) <= 3
