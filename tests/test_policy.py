"""The local gate policy: plate normalisation, OCR-tolerant matching, the
whitelist index, weekly hours and every decision reason."""

from __future__ import annotations

import random
from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.policy.decision import (
    BLACKLIST,
    DISABLED,
    EXPIRED,
    LOCAL,
    NO_PLATE,
    NOT_YET_VALID,
    OFFLINE_RECORD,
    OUTSIDE_HOURS,
    UNKNOWN,
    WHITELIST,
    WRONG_LANE,
    PlateQuery,
)
from gateway.policy.plates import (
    bounded_distance,
    deletion_variants,
    fold_plate,
    is_no_plate,
    normalise_plate,
    plate_distance,
)
from gateway.policy.whitelist import (
    WeeklyWindow,
    WhitelistEntry,
    WhitelistIndex,
    WhitelistPolicy,
    format_hours,
    parse_hours,
)

SITE = ZoneInfo("Asia/Shanghai")  # UTC+8, no daylight saving time
# 2025-03-03 is a Monday.
MONDAY_NOON = datetime(2025, 3, 3, 12, 0, tzinfo=SITE)


def at(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    """Site local time on the given day of the week starting Monday
    2025-03-03 (0 = Monday .. 6 = Sunday, 7 = the Monday after)."""
    return datetime(2025, 3, 3, hour, minute, second, tzinfo=SITE) + timedelta(days=day)


def query(
    license: str,
    when: datetime = MONDAY_NOON,
    lane: str | None = "north-in",
    *,
    offline: bool = False,
) -> PlateQuery:
    return PlateQuery(license=license, has_plate=True, at=when, lane=lane, offline=offline)


PROVINCES = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
PLATE_CHARACTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"

plates = st.builds(
    lambda province, rest: province + rest,
    st.sampled_from(PROVINCES),
    st.text(alphabet=PLATE_CHARACTERS, min_size=5, max_size=7),
)
separators = st.sampled_from(["", " ", "·", "-", ".", "\u3000"])


def policy(*entries: WhitelistEntry, **options: object) -> WhitelistPolicy:
    index = WhitelistIndex.from_entries(entries)
    return WhitelistPolicy(index, tz=SITE, **options)  # type: ignore[arg-type]


# --------------------------------------------------------------------------
# Normalisation and folding


@pytest.mark.parametrize(
    "written",
    [
        "京A12345",
        "京a12345",
        "京A 12345",
        " 京A·12345 ",
        "京A-123.45",
        "京Ａ１２３４５",  # full-width letter and digits
        "京A\u300012345",  # ideographic space
        "京\tA_12345",
        "京A•12345",
        "京A・12345",  # katakana middle dot
    ],
)
def test_normalise_plate_forms(written: str) -> None:
    assert normalise_plate(written) == "京A12345"


def test_normalise_keeps_cjk_and_special_plates() -> None:
    assert normalise_plate("粤b·f1234学") == "粤BF1234学"
    assert normalise_plate("沪A·1234警") == "沪A1234警"
    assert normalise_plate("WJ 01·1234") == "WJ011234"


@pytest.mark.parametrize("read", ["_无_", "无", "", "   ", "＿无＿", " _无_ "])
def test_no_plate_reads(read: str) -> None:
    assert is_no_plate(read)


@pytest.mark.parametrize("read", ["京A12345", "无A12345", "A"])
def test_plates_are_not_no_plate_reads(read: str) -> None:
    assert not is_no_plate(read)


def test_fold_plate_uses_one_character_per_group() -> None:
    assert fold_plate("京AOB8S5") == "京A08855"
    assert fold_plate("京A0B8S5") == "京A08855"
    assert fold_plate("京AD88S5") == "京A08855"
    assert fold_plate("IZG") == "126"
    assert fold_plate("京AKX789") == "京AKX789"


@given(st.text())
def test_normalise_is_idempotent(text: str) -> None:
    once = normalise_plate(text)
    assert normalise_plate(once) == once


@given(
    st.text(alphabet="ab01", max_size=7), st.text(alphabet="ab01", max_size=7), st.integers(0, 4)
)
def test_bounded_distance_agrees_with_levenshtein(a: str, b: str, limit: int) -> None:
    assert bounded_distance(a, b, limit) == min(plate_distance(a, b), limit + 1)


def test_plate_distance_examples() -> None:
    assert plate_distance("京A12345", "京A12345") == 0
    assert plate_distance("京A12345", "京A12346") == 1
    assert plate_distance("京A12345", "京A1234") == 1
    assert plate_distance("京A12345", "京A123456") == 1
    assert plate_distance("京A12345", "京A21345") == 2  # a transposition is two edits
    assert plate_distance("京A12345", "京A12399") == 2


def test_deletion_variants() -> None:
    assert deletion_variants("abc", 1) == {"bc", "ac", "ab"}
    assert deletion_variants("abc", 2) == {"a", "b", "c"}
    assert deletion_variants("ab", 3) == frozenset()


# --------------------------------------------------------------------------
# Weekly hours


def test_parse_hours_examples() -> None:
    assert parse_hours("Mon-Fri 07:00-19:00; Sat 08:00-12:00") == (
        WeeklyWindow(days=frozenset({0, 1, 2, 3, 4}), start=time(7), end=time(19)),
        WeeklyWindow(days=frozenset({5}), start=time(8), end=time(12)),
    )
    assert parse_hours("daily 22:00-06:00") == (
        WeeklyWindow(days=frozenset(range(7)), start=time(22), end=time(6)),
    )
    assert parse_hours("") == ()
    assert parse_hours("  ") == ()


def test_parse_hours_variants() -> None:
    (wrapping,) = parse_hours("Fri-Mon 9:00-17:30:15")
    assert wrapping.days == {4, 5, 6, 0}
    assert (wrapping.start, wrapping.end) == (time(9), time(17, 30, 15))
    (listed,) = parse_hours("mon, Wed ,FRIDAY 07:00 - 24:00")
    assert listed.days == {0, 2, 4}
    assert listed.end == time(0)  # 24:00: until midnight
    (chinese,) = parse_hours("周一-周五 08:00-18:00")
    assert chinese.days == {0, 1, 2, 3, 4}


@pytest.mark.parametrize(
    "text",
    [
        "Mon",
        "Mon 07:00",
        "Funday 07:00-19:00",
        "Mon 25:00-26:00",
        "Mon 07:60-08:00",
        "07:00-19:00",
        "Mon 24:00-06:00",
    ],
)
def test_parse_hours_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_hours(text)


def test_format_hours() -> None:
    assert (
        format_hours(parse_hours("Mon-Fri 07:00-19:00; Sat 08:00-12:00"))
        == "Mon-Fri 07:00-19:00; Sat 08:00-12:00"
    )
    assert format_hours(parse_hours("Sun,Sat,Mon 22:00-06:00:30")) == "Sat-Mon 22:00-06:00:30"
    assert format_hours(parse_hours("Mon,Wed,Fri,Sat 07:00-24:00")) == "Mon,Wed,Fri-Sat 07:00-00:00"
    assert format_hours(parse_hours("Mon-Sun 00:00-00:00")) == "daily 00:00-00:00"


windows = st.builds(
    WeeklyWindow,
    days=st.frozensets(st.integers(0, 6), min_size=1),
    start=st.times().map(lambda value: value.replace(microsecond=0)),
    end=st.times().map(lambda value: value.replace(microsecond=0)),
)


@given(st.lists(windows, max_size=4))
def test_hours_round_trip(hours: list[WeeklyWindow]) -> None:
    assert parse_hours(format_hours(hours)) == tuple(hours)


def test_weekly_window_rejects_bad_values() -> None:
    with pytest.raises(ValueError):
        WeeklyWindow(days=frozenset(), start=time(7), end=time(8))
    with pytest.raises(ValueError):
        WeeklyWindow(days=frozenset({7}), start=time(7), end=time(8))
    with pytest.raises(ValueError):
        WeeklyWindow(days=frozenset({1}), start=time(7, 0, 0, 5), end=time(8))


# --------------------------------------------------------------------------
# Entries


def test_entry_normalises_its_plate_and_validates() -> None:
    assert WhitelistEntry("京a·12345").plate == "京A12345"
    with pytest.raises(ValueError):
        WhitelistEntry("_无_")
    with pytest.raises(ValueError):
        WhitelistEntry("京A12345", valid_from=datetime(2025, 1, 1))  # naive
    with pytest.raises(ValueError):
        WhitelistEntry(
            "京A12345", valid_from=MONDAY_NOON, valid_until=MONDAY_NOON - timedelta(seconds=1)
        )
    with pytest.raises(ValueError):
        WhitelistEntry("京A12345", lanes=frozenset({"a;b"}))
    with pytest.raises(ValueError):
        WhitelistEntry("京A12345", source="somewhere")


def test_entry_validity_is_compared_as_instants() -> None:
    paris = ZoneInfo("Europe/Paris")
    # 02:30 happens twice in Paris on 2025-10-26; the entry ends at the first.
    until = datetime(2025, 10, 26, 2, 30, tzinfo=paris, fold=0)
    entry = WhitelistEntry("京A12345", valid_until=until)
    assert (
        entry.restriction(datetime(2025, 10, 26, 2, 30, tzinfo=paris, fold=0), None, paris) is None
    )
    assert (
        entry.restriction(datetime(2025, 10, 26, 2, 30, tzinfo=paris, fold=1), None, paris)
        == EXPIRED
    )


# --------------------------------------------------------------------------
# Decisions, one per reason


def test_whitelisted_plate_opens() -> None:
    until = datetime(2025, 12, 31, 23, 59, 59, tzinfo=SITE)
    decision = policy(WhitelistEntry("京A12345", valid_until=until, note="tenant 12")).decide(
        query("京a 12345")
    )
    assert decision.open
    assert decision.reason == WHITELIST
    assert decision.source == LOCAL
    assert decision.plate == "京A12345"
    assert decision.valid_until == until
    assert decision.note == "tenant 12"


def test_blacklisted_plate_is_denied_even_where_unknown_plates_may_enter() -> None:
    gate = policy(WhitelistEntry("京A12345", blacklist=True, note="unpaid"), unknown_plate="allow")
    decision = gate.decide(query("京A12345"))
    assert (decision.open, decision.reason, decision.note) == (False, BLACKLIST, "unpaid")
    assert gate.decide(query("京A99999")).open


def test_blacklist_out_of_force_is_an_unknown_plate() -> None:
    banned_until = MONDAY_NOON - timedelta(days=1)
    entry = WhitelistEntry("京A12345", blacklist=True, valid_until=banned_until)
    assert policy(entry).decide(query("京A12345")).reason == UNKNOWN
    assert not policy(entry).decide(query("京A12345")).open
    assert policy(entry, unknown_plate="allow").decide(query("京A12345")).open
    in_force = WhitelistEntry("京A12345", blacklist=True, lanes=frozenset({"north-in"}))
    assert policy(in_force, unknown_plate="allow").decide(query("京A12345", lane="south-out")).open


def test_expired_entry_is_denied() -> None:
    until = MONDAY_NOON - timedelta(seconds=1)
    decision = policy(WhitelistEntry("京A12345", valid_until=until)).decide(query("京A12345"))
    assert (decision.open, decision.reason, decision.valid_until) == (False, EXPIRED, until)


def test_validity_bounds_are_inclusive() -> None:
    entry = WhitelistEntry("京A12345", valid_from=MONDAY_NOON, valid_until=MONDAY_NOON)
    assert policy(entry).decide(query("京A12345", MONDAY_NOON)).reason == WHITELIST
    later = MONDAY_NOON + timedelta(microseconds=1)
    assert policy(entry).decide(query("京A12345", later)).reason == EXPIRED
    earlier = MONDAY_NOON - timedelta(microseconds=1)
    assert policy(entry).decide(query("京A12345", earlier)).reason == NOT_YET_VALID


def test_not_yet_valid_entry_is_denied() -> None:
    decision = policy(
        WhitelistEntry("京A12345", valid_from=MONDAY_NOON + timedelta(hours=1))
    ).decide(query("京A12345"))
    assert (decision.open, decision.reason) == (False, NOT_YET_VALID)


def test_outside_hours_on_weekdays() -> None:
    gate = policy(WhitelistEntry("京A12345", hours=parse_hours("Mon-Fri 07:00-19:00")))

    def reason(when: datetime) -> str:
        return gate.decide(query("京A12345", when)).reason

    assert reason(at(0, 7)) == WHITELIST  # start inclusive
    assert reason(at(4, 18, 59, 59)) == WHITELIST
    assert reason(at(0, 6, 59, 59)) == OUTSIDE_HOURS
    assert reason(at(0, 19)) == OUTSIDE_HOURS  # end exclusive
    assert reason(at(5, 12)) == OUTSIDE_HOURS  # Saturday
    assert not gate.decide(query("京A12345", at(6, 12))).open


def test_window_crossing_midnight() -> None:
    gate = policy(WhitelistEntry("京A12345", hours=parse_hours("Fri 22:00-06:00")))

    def opens(when: datetime) -> bool:
        return gate.decide(query("京A12345", when)).open

    assert opens(at(4, 22))  # Friday evening
    assert opens(at(4, 23, 59, 59))
    assert opens(at(5, 0))  # Saturday morning, still Friday's window
    assert opens(at(5, 5, 59, 59))
    assert not opens(at(5, 6))
    assert not opens(at(4, 21, 59))
    assert not opens(at(3, 23))  # Thursday night
    assert not opens(at(4, 3))  # Friday early morning belongs to Thursday
    assert not opens(at(5, 23))  # Saturday night
    assert gate.decide(query("京A12345", at(5, 7))).reason == OUTSIDE_HOURS
    # A window ending when it starts lasts a whole day.
    day_long = policy(WhitelistEntry("京A12345", hours=parse_hours("Mon 08:00-08:00")))
    assert day_long.decide(query("京A12345", at(0, 8))).open
    assert day_long.decide(query("京A12345", at(1, 7, 59))).open
    assert not day_long.decide(query("京A12345", at(1, 8))).open
    assert not day_long.decide(query("京A12345", at(0, 7, 59))).open


def test_window_wrapping_from_sunday_to_monday() -> None:
    gate = policy(WhitelistEntry("京A12345", hours=parse_hours("Sun 22:00-06:00")))
    assert gate.decide(query("京A12345", at(6, 23))).open
    assert gate.decide(query("京A12345", at(7, 5))).open  # Monday morning
    assert gate.decide(query("京A12345", at(0, 5))).open  # the same, a week before
    assert not gate.decide(query("京A12345", at(1, 5))).open  # Tuesday morning
    assert not gate.decide(query("京A12345", at(5, 23))).open  # Saturday night


def test_hours_are_site_local_time() -> None:
    gate = policy(WhitelistEntry("京A12345", hours=parse_hours("Mon 07:00-08:00")))
    # Monday 07:30 in Beijing is Sunday 23:30 UTC.
    sunday_utc = datetime(2025, 3, 2, 23, 30, tzinfo=timezone.utc)
    assert gate.decide(query("京A12345", sunday_utc)).open
    # A naive time is taken to be site local time.
    assert gate.decide(query("京A12345", datetime(2025, 3, 3, 7, 30))).open
    assert not gate.decide(query("京A12345", datetime(2025, 3, 3, 8, 30))).open


def test_disabled_entry_is_as_if_absent() -> None:
    entry = WhitelistEntry("京A12345", enabled=False, note="card returned")
    denied = policy(entry).decide(query("京A12345"))
    assert (denied.open, denied.reason, denied.note) == (False, DISABLED, "card returned")
    allowed = policy(entry, unknown_plate="allow").decide(query("京A12345"))
    assert (allowed.open, allowed.reason) == (True, UNKNOWN)
    blacklisted = WhitelistEntry("京A12345", blacklist=True, enabled=False)
    assert policy(blacklisted, unknown_plate="allow").decide(query("京A12345")).open


def test_wrong_lane() -> None:
    entry = WhitelistEntry("京A12345", lanes=frozenset({"north-in", "north-out"}))
    gate = policy(entry, unknown_plate="deny", lane_overrides={"south-out": "allow"})
    assert gate.decide(query("京A12345", lane="north-out")).reason == WHITELIST
    wrong = gate.decide(query("京A12345", lane="south-in"))
    assert (wrong.open, wrong.reason) == (False, WRONG_LANE)
    assert gate.decide(query("京A12345", lane=None)).reason == WRONG_LANE
    # Where unknown plates may pass, a plate listed for other lanes passes too.
    exit_lane = gate.decide(query("京A12345", lane="south-out"))
    assert (exit_lane.open, exit_lane.reason) == (True, UNKNOWN)


def test_entry_for_every_lane_covers_a_camera_in_no_lane() -> None:
    assert policy(WhitelistEntry("京A12345")).decide(query("京A12345", lane=None)).open


def test_unknown_plate_deny_and_allow_with_lane_override() -> None:
    gate = policy(
        WhitelistEntry("京A12345"), unknown_plate="deny", lane_overrides={"north-out": "allow"}
    )
    denied = gate.decide(query("粤B77777", lane="north-in"))
    assert (denied.open, denied.reason, denied.plate) == (False, UNKNOWN, "粤B77777")
    allowed = gate.decide(query("粤B77777", lane="north-out"))
    assert (allowed.open, allowed.reason) == (True, UNKNOWN)
    assert not gate.decide(query("粤B77777", lane=None)).open

    open_site = policy(unknown_plate="allow", lane_overrides={"north-in": "deny"})
    assert open_site.decide(query("粤B77777", lane="south-in")).open
    assert not open_site.decide(query("粤B77777", lane="north-in")).open


def test_expired_entry_leaves_by_an_exit_that_lets_unknown_plates_out() -> None:
    entry = WhitelistEntry("京A12345", valid_until=MONDAY_NOON - timedelta(days=3))
    gate = policy(entry, lane_overrides={"north-out": "allow"})
    assert gate.decide(query("京A12345", lane="north-in")).reason == EXPIRED
    leaving = gate.decide(query("京A12345", lane="north-out"))
    assert (leaving.open, leaving.reason) == (True, UNKNOWN)


def test_no_plate() -> None:
    gate = policy(WhitelistEntry("京A12345"), unknown_plate="allow")
    no_read = PlateQuery(license="_无_", has_plate=False, at=MONDAY_NOON, lane="north-in")
    assert gate.decide(no_read).reason == NO_PLATE
    # A camera that flags a plate but sends the no-plate text is not looked up either.
    for license in ("_无_", "无", "", " - "):
        decision = gate.decide(query(license))
        assert (decision.open, decision.reason, decision.plate) == (False, NO_PLATE, "")


@given(
    st.text(max_size=12),
    st.lists(plates, max_size=5),
    st.datetimes(timezones=st.none() | st.timezones()),
    st.none() | st.sampled_from(["north-in", "south-out"]),
    st.integers(0, 2),
)
def test_decide_never_raises(
    license: str, listed: list[str], when: datetime, lane: str | None, distance: int
) -> None:
    entries = [WhitelistEntry(plate, lanes=frozenset({"north-in"})) for plate in listed]
    gate = policy(*entries, max_plate_distance=distance, lane_overrides={"south-out": "allow"})
    decision = gate.decide(query(license, when, lane))
    assert decision.reason in {WHITELIST, UNKNOWN, WRONG_LANE, NO_PLATE}
    unknown_may_pass = lane == "south-out" and decision.reason != NO_PLATE
    assert decision.open == (decision.reason == WHITELIST or unknown_may_pass)


def test_unexpected_error_denies() -> None:
    gate = policy(WhitelistEntry("京A12345"), unknown_plate="allow")
    broken = PlateQuery(license=None, has_plate=True, at=MONDAY_NOON)  # type: ignore[arg-type]
    decision = gate.decide(broken)
    assert (decision.open, decision.reason) == (False, UNKNOWN)
    assert decision.note.startswith("policy error: ")


def test_offline_record_never_opens() -> None:
    gate = policy(WhitelistEntry("京A12345"), unknown_plate="allow")
    decision = gate.decide(query("京A12345", offline=True))
    assert (decision.open, decision.reason) == (False, OFFLINE_RECORD)


def test_policy_rejects_bad_configuration() -> None:
    index = WhitelistIndex()
    with pytest.raises(ValueError):
        WhitelistPolicy(index, tz=SITE, unknown_plate="maybe")
    with pytest.raises(ValueError):
        WhitelistPolicy(index, tz=SITE, lane_overrides={"north-in": "open"})
    with pytest.raises(ValueError):
        WhitelistPolicy(index, tz=SITE, max_plate_distance=3)


def test_policy_sees_index_edits_at_once() -> None:
    gate = policy()
    assert not gate.decide(query("京A12345")).open
    gate.index.upsert(WhitelistEntry("京A12345"))
    assert gate.decide(query("京A12345")).open
    gate.index.upsert(WhitelistEntry("京A12345", enabled=False))
    assert gate.decide(query("京A12345")).reason == DISABLED
    assert gate.index.remove("京a12345") is not None
    assert gate.decide(query("京A12345")).reason == UNKNOWN


# --------------------------------------------------------------------------
# OCR-tolerant matching


@pytest.mark.parametrize("read", ["京A0B8S5", "京AOB8S5", "京ADB855", "京A08855", "京a·0b8s5"])
def test_confusable_reads_match_at_distance_zero(read: str) -> None:
    decision = policy(WhitelistEntry("京AOB8S5")).decide(query(read))
    assert (decision.open, decision.reason) == (True, WHITELIST)
    assert decision.plate == normalise_plate(read)


def test_confusable_groups() -> None:
    gate = policy(WhitelistEntry("苏E1ZG0I"))
    assert gate.decide(query("苏EI260I")).open
    assert gate.decide(query("苏E12601")).open
    assert not gate.decide(query("苏E12701")).open


def test_distance_zero_needs_a_match_after_folding() -> None:
    gate = policy(WhitelistEntry("京A12345"))
    for read in ("京A12346", "京A1234", "京A123456", "京A21345", "沪A12345"):
        assert gate.decide(query(read)).reason == UNKNOWN, read


def test_edit_distance_limits() -> None:
    one = policy(WhitelistEntry("京A12345"), max_plate_distance=1)
    assert one.decide(query("京A12346")).open  # substitution
    assert one.decide(query("京A1234")).open  # a character missed
    assert one.decide(query("京A123465")).open  # a character added
    assert one.decide(query("京A1Z3A5")).open  # Z folds to 2: one real difference
    assert not one.decide(query("京A12399")).open
    assert not one.decide(query("京A21345")).open  # transposition: two edits

    two = policy(WhitelistEntry("京A12345"), max_plate_distance=2)
    assert two.decide(query("京A12399")).open
    assert two.decide(query("京A21345")).open
    assert two.decide(query("京A123")).open
    assert not two.decide(query("京A12")).open
    assert not two.decide(query("京A19999")).open


def test_exact_match_beats_confusable_match() -> None:
    gate = policy(WhitelistEntry("京A0B8S5"), WhitelistEntry("京AOB8S5", blacklist=True))
    assert gate.decide(query("京A0B8S5")).reason == WHITELIST
    assert gate.decide(query("京AOB8S5")).reason == BLACKLIST
    # Equally close to both: the blacklist wins.
    assert gate.decide(query("京ADB8S5")).reason == BLACKLIST


def test_blacklist_never_matches_more_loosely_than_an_allowed_plate() -> None:
    gate = policy(
        WhitelistEntry("京A12345", blacklist=True),
        WhitelistEntry("京A12346"),
        WhitelistEntry("京A12348"),
        max_plate_distance=2,
    )

    def reason(read: str) -> str:
        return gate.decide(query(read)).reason

    # The allowed plate read exactly: a blacklisted plate one edit away does not matter.
    assert reason("京A12346") == WHITELIST
    # The blacklisted plate read exactly.
    assert reason("京A12345") == BLACKLIST
    # One edit from both: the blacklist matches at least as closely, and wins.
    assert reason("京A12347") == BLACKLIST
    assert reason("京A1234") == BLACKLIST
    # Confusable with the allowed plate, one edit from the blacklisted one.
    assert reason("京A1234B") == WHITELIST
    # One edit from an allowed plate beats two from a blacklisted one.
    blacklisted_far = policy(
        WhitelistEntry("京A12345", blacklist=True),
        WhitelistEntry("京A12388"),
        max_plate_distance=2,
    )
    assert blacklisted_far.decide(query("京A12380")).reason == WHITELIST
    # Two edits from both: the blacklist wins again.
    assert blacklisted_far.decide(query("京A12377")).reason == BLACKLIST


def test_closest_entry_identifies_the_car_even_when_it_does_not_apply() -> None:
    gate = policy(
        WhitelistEntry("京A12345", enabled=False),
        WhitelistEntry("京A12346"),
        max_plate_distance=1,
    )
    # The exact, disabled entry is the car: its neighbour does not let it in.
    assert gate.decide(query("京A12345")).reason == DISABLED
    assert gate.decide(query("京A12346")).reason == WHITELIST


def test_equally_close_matches_take_the_most_restrictive_decision() -> None:
    expired = WhitelistEntry("京AD1234", valid_until=MONDAY_NOON - timedelta(days=1))
    gate = policy(expired, WhitelistEntry("京A01234", note="staff"))
    # An O read is confusable with both D and 0.
    assert gate.decide(query("京AO1234")).reason == EXPIRED
    assert gate.decide(query("京A01234")).reason == WHITELIST  # exact
    both_valid = policy(
        WhitelistEntry("京AD1234", note="first"), WhitelistEntry("京A01234", note="second")
    )
    opened = both_valid.decide(query("京AO1234"))
    assert (opened.open, opened.reason) == (True, WHITELIST)


# --------------------------------------------------------------------------
# Properties


@given(plates, st.lists(plates, max_size=20), separators, st.booleans())
def test_an_entry_always_matches_its_own_plate(
    plate: str, others: list[str], separator: str, lower: bool
) -> None:
    written = plate[:2] + separator + plate[2:]
    read = written.lower() if lower else written
    gate = policy(
        *(WhitelistEntry(other) for other in others), WhitelistEntry(plate), max_plate_distance=1
    )
    decision = gate.decide(query(read))
    assert (decision.open, decision.reason, decision.plate) == (True, WHITELIST, plate)
    first_tier = next(gate.index.search(read, 1))
    assert first_tier[0].entry.plate == plate and first_tier[0].exact


@given(plates, st.data())
def test_distance_zero_never_matches_a_non_confusable_difference(
    plate: str, data: st.DataObject
) -> None:
    position = data.draw(st.integers(1, len(plate) - 1))
    replacement = data.draw(
        st.sampled_from(
            [c for c in PLATE_CHARACTERS if fold_plate(c) != fold_plate(plate[position])]
        )
    )
    read = plate[:position] + replacement + plate[position + 1 :]
    gate = policy(WhitelistEntry(plate))
    decision = gate.decide(query(read))
    assert (decision.open, decision.reason) == (False, UNKNOWN)
    assert list(gate.index.search(read, 0)) == []


def brute_force_tiers(
    entries: list[WhitelistEntry], read: str, max_distance: int
) -> list[list[tuple[str, int]]]:
    """The tiers search() must yield, by comparing with every entry."""
    ranks: dict[int, list[tuple[str, int]]] = {}
    read = normalise_plate(read)
    for entry in entries:
        if entry.plate == read:
            rank = 0
        else:
            distance = plate_distance(fold_plate(read), fold_plate(entry.plate))
            if distance > max_distance:
                continue
            rank = 1 + distance
        ranks.setdefault(rank, []).append((entry.plate, rank))
    return [sorted(ranks[rank]) for rank in sorted(ranks)]


small_plates = st.text(alphabet="AB0O8DX", min_size=1, max_size=6)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(small_plates, max_size=30, unique_by=normalise_plate),
    st.lists(small_plates, max_size=10),
    st.lists(small_plates, max_size=5),
    st.integers(0, 2),
)
def test_search_finds_what_a_full_comparison_finds(
    listed: list[str], removed: list[str], reads: list[str], max_distance: int
) -> None:
    index = WhitelistIndex.from_entries(
        (WhitelistEntry(plate) for plate in listed), max_distance=max_distance
    )
    for plate in removed:
        index.remove(plate)
    remaining = [
        entry
        for entry in (WhitelistEntry(p) for p in listed)
        if entry.plate not in {normalise_plate(r) for r in removed}
    ]
    assert len(index) == len(remaining)
    for read in reads + listed[:3]:
        found = [
            [(match.entry.plate, match.rank) for match in tier]
            for tier in index.search(read, max_distance)
        ]
        assert found == brute_force_tiers(remaining, read, max_distance)


def test_index_upsert_remove_and_entries() -> None:
    index = WhitelistIndex(max_distance=1)
    assert index.upsert(WhitelistEntry("京A12345")) is None
    replaced = index.upsert(WhitelistEntry("京A12345", note="new"))
    assert replaced == WhitelistEntry("京A12345")
    index.upsert(WhitelistEntry("京AOB8S5"))
    index.upsert(WhitelistEntry("京A0B8S5"))
    assert len(index) == 3
    assert "京a 12345" in index
    assert index.get("京A12345") == WhitelistEntry("京A12345", note="new")
    assert [entry.plate for entry in index.entries()] == ["京A0B8S5", "京A12345", "京AOB8S5"]
    # The two confusable plates share a folded form: removing one keeps the other findable.
    assert index.remove("京AOB8S5") is not None
    assert [m.entry.plate for m in next(index.search("京ADB8S5", 1))] == ["京A0B8S5"]
    assert [m.entry.plate for m in next(index.search("京A0B8S", 1))] == ["京A0B8S5"]
    assert index.remove("京AOB8S5") is None
    assert index.remove("京A0B8S5") is not None
    assert list(index.search("京A0B8S", 1)) == []
    assert len(index) == 1


def test_index_distance_is_extended_on_demand() -> None:
    index = WhitelistIndex.from_entries([WhitelistEntry("京A12345")])
    assert index.max_distance == 0
    with pytest.raises(ValueError):
        list(index.search("京A12346", 1))
    WhitelistPolicy(index, tz=SITE, max_plate_distance=2)
    assert index.max_distance == 2
    assert [m.distance for m in next(index.search("京A12399", 2))] == [2]
    index.upsert(WhitelistEntry("京B77777"))
    assert [m.entry.plate for m in next(index.search("京B7777", 2))] == ["京B77777"]


def test_large_index_finds_fuzzy_reads() -> None:
    """A sanity check of the index at the size it is designed for (not a
    timing test: bench/ measures speed)."""
    generator = random.Random(20250303)
    listed: set[str] = set()
    while len(listed) < 100_000:
        listed.add(
            ("京" if generator.random() < 0.7 else generator.choice(PROVINCES))
            + ("A" if generator.random() < 0.6 else generator.choice("BCEFHJK"))
            + "".join(generator.choice("0123456789ACEFHJKLMNPQRTUVWXY") for _ in range(5))
        )
    gate = WhitelistPolicy(
        WhitelistIndex.from_entries(WhitelistEntry(plate) for plate in listed),
        tz=SITE,
        max_plate_distance=1,
    )
    assert len(gate.index) == 100_000
    for plate in generator.sample(sorted(listed), 200):
        position = generator.randrange(2, len(plate))
        dropped = plate[:position] + plate[position + 1 :]  # the camera missed a character
        decision = gate.decide(query(dropped))
        assert (decision.open, decision.plate) == (True, dropped)
        closest = next(gate.index.search(dropped, 1))
        assert plate in [match.entry.plate for match in closest]
    # A read two edits from every listed plate (checked against the whole list) is unknown.
    folded = [fold_plate(plate) for plate in listed]
    for unknown in (
        "新Q" + "".join(generator.choice("0123456789") for _ in range(5)) for _ in range(20)
    ):
        if all(bounded_distance(fold_plate(unknown), key, 1) > 1 for key in folded):
            assert gate.decide(query(unknown)).reason == UNKNOWN
            break
    else:
        raise AssertionError("no unknown plate found")
