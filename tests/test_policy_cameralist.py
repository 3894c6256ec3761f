"""What a camera's own list should hold, the order plates go in when it cannot
hold them all, and the pending work kept in step with list changes."""

from __future__ import annotations

from datetime import datetime, timezone
from unittest import mock

from hypothesis import given
from hypothesis import strategies as st

from gateway.policy import cameralist
from gateway.policy.cameralist import (
    HOURS_SKIP,
    CameraListRules,
    CameraListWork,
    CameraRow,
    DesiredList,
    RowChange,
    camera_can_hold,
    camera_row,
    desired_rows,
    row_change,
)
from gateway.policy.whitelist import WhitelistEntry, parse_hours

UTC = timezone.utc
NOW = datetime(2026, 6, 1, tzinfo=UTC)
RULES = CameraListRules(lane="Entrance")


def test_plates_a_camera_cannot_hold() -> None:
    assert camera_can_hold("京A12345") is None
    assert camera_can_hold("京A1234567890123456") is not None
    assert camera_can_hold("京A😀123") is not None


def test_which_entries_a_camera_holds() -> None:
    assert camera_row(WhitelistEntry("京A12345"), RULES, NOW) == (CameraRow("京A12345"), None)
    assert camera_row(WhitelistEntry("京A12345", enabled=False), RULES, NOW) == (None, None)
    assert camera_row(WhitelistEntry("京A12345", lanes=frozenset({"Exit"})), RULES, NOW) == (None, None)
    expired = WhitelistEntry("京A12345", valid_until=datetime(2026, 1, 1, tzinfo=UTC))
    assert camera_row(expired, RULES, NOW) == (None, None)
    hours = WhitelistEntry("京A12345", hours=parse_hours("Mon-Fri 07:00-19:00"))
    assert camera_row(hours, RULES, NOW) == (None, HOURS_SKIP)
    banned = WhitelistEntry("京A12345", blacklist=True)
    assert camera_row(banned, RULES, NOW)[0] == CameraRow("京A12345", blacklist=True)
    assert camera_row(banned, CameraListRules(lane="Entrance", holds_blacklist=False), NOW) == (None, None)


def test_the_order_plates_go_in_when_the_list_is_cut() -> None:
    entries = [
        WhitelistEntry("京X00001", blacklist=True),
        WhitelistEntry("京A00001", valid_until=datetime(2027, 1, 1, tzinfo=UTC)),
        WhitelistEntry("京A00002", valid_until=datetime(2029, 1, 1, tzinfo=UTC)),
        WhitelistEntry("京A00003"),
        WhitelistEntry("京L00001", lanes=frozenset({"Entrance"}), valid_until=datetime(2026, 7, 1, tzinfo=UTC)),
        WhitelistEntry("京A00000"),
    ]
    order: list[str] = []
    for capacity in range(1, 7):
        desired = desired_rows(entries, CameraListRules(lane="Entrance", capacity=capacity), NOW)
        (new,) = set(desired.rows) - set(order)
        order.append(new)
        assert desired.wanted == 6
        assert desired.capped == (capacity < 6)
    assert order == ["京L00001", "京A00000", "京A00003", "京A00002", "京A00001", "京X00001"]


def moved_to(row: CameraRow | None, was: bool = True) -> RowChange:
    return RowChange(None if row is None else ((False, True, True, 0.0, row.plate), row), was)


def test_a_changed_row_is_deleted_first_where_adds_do_not_replace() -> None:
    held = {"京A00001": CameraRow("京A00001")}
    changed = CameraRow("京A00001", valid_until=datetime(2030, 1, 1, tzinfo=UTC))
    for replace_on_change, deletes in ((False, []), (True, ["京A00001"])):
        work = CameraListWork(has=dict(held), known=True, replace_on_change=replace_on_change)
        assert work.apply({"京A00001": moved_to(changed)})
        assert (list(work.to_delete), list(work.to_add.values())) == (deletes, [changed])
        work.deleted(list(work.to_delete))
        work.added([changed])
        assert work.done and work.has == {"京A00001": changed}


@given(
    listed=st.dictionaries(
        st.integers(0, 40).map(lambda n: f"京A{n:05d}"),
        st.tuples(st.booleans(), st.integers(0, 5)),
        max_size=30,
    ),
    edits=st.lists(
        st.tuples(
            st.integers(0, 40).map(lambda n: f"京A{n:05d}"),
            st.one_of(st.none(), st.tuples(st.booleans(), st.integers(0, 5))),
        ),
        max_size=25,
    ),
    capacity=st.integers(1, 12),
    reserve=st.integers(1, 4),
)
def test_a_cut_kept_by_edits_equals_the_cut_recomputed(
    listed: dict[str, tuple[bool, int]],
    edits: list[tuple[str, tuple[bool, int] | None]],
    capacity: int,
    reserve: int,
) -> None:
    """Edits moving plates across a camera's capacity choose what a full
    recompute chooses, or ask for one (a small reserve runs dry often)."""
    with mock.patch.object(cameralist, "RESERVE", reserve):
        _edit_a_cut(listed, edits, capacity)


def _edit_a_cut(
    listed: dict[str, tuple[bool, int]],
    edits: list[tuple[str, tuple[bool, int] | None]],
    capacity: int,
) -> None:

    def entry(plate: str, lane_only: bool, years: int) -> WhitelistEntry:
        return WhitelistEntry(
            plate,
            lanes=frozenset({"Entrance"}) if lane_only else frozenset(),
            valid_until=datetime(2027 + years, 1, 1, tzinfo=UTC) if years else None,
        )

    rules = CameraListRules(lane="Entrance", capacity=capacity)
    entries = {plate: entry(plate, *spec) for plate, spec in listed.items()}
    work = CameraListWork(known=True)
    work.replace(desired_rows(entries.values(), rules, NOW))
    work.added(list(work.to_add.values()))
    for plate, spec in edits:
        previous = entries.pop(plate, None)
        new = entry(plate, *spec) if spec is not None else None
        if new is not None:
            entries[plate] = new
        step, _ = row_change(new, previous, rules, NOW)
        if not work.apply({plate: step}):
            work.replace(desired_rows(entries.values(), rules, NOW))
        work.deleted(list(work.to_delete))
        work.added(list(work.to_add.values()))
        expected = desired_rows(entries.values(), rules, NOW)
        assert work.has == expected.rows
        assert (work.size, work.wanted) == (len(expected.rows), expected.wanted)


plates = st.sampled_from([f"京A{n:05d}" for n in range(8)])
rows = st.one_of(
    st.none(),
    st.builds(CameraRow, plate=st.just(""), blacklist=st.booleans()),
)


@given(
    held=st.dictionaries(plates, st.booleans()),
    changes=st.lists(st.dictionaries(plates, rows), max_size=5),
    replace_on_change=st.booleans(),
)
def test_changes_applied_one_by_one_equal_a_recompute(
    held: dict[str, bool], changes: list[dict[str, CameraRow | None]], replace_on_change: bool
) -> None:
    """Incremental work takes the camera where a full recompute would."""
    has = {plate: CameraRow(plate, blacklist) for plate, blacklist in held.items()}
    work = CameraListWork(has=dict(has), known=True, replace_on_change=replace_on_change)
    work.replace(DesiredList(rows=dict(has), wanted=len(has)))  # in step to begin with
    assert work.done
    wanted: dict[str, CameraRow] = dict(has)
    for change in changes:
        fixed = {
            plate: None if row is None else CameraRow(plate, row.blacklist)
            for plate, row in change.items()
        }
        assert work.apply({plate: moved_to(row) for plate, row in fixed.items()})
        for plate, row in fixed.items():
            if row is None:
                wanted.pop(plate, None)
            else:
                wanted[plate] = row
    # Send the work as a camera applies it: deletions, then adds.
    work.deleted(list(work.to_delete))
    work.added(list(work.to_add.values()))
    assert work.done
    assert work.has == wanted
    assert work.size == len(wanted)
