"""The garbage collector kept off the plate path: structures frozen once
built, full collections held back during bulk work, and the daily sweep
that reclaims what freezing kept."""

from __future__ import annotations

import gc
import weakref
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from twisted.internet.task import Clock

from gateway.heap import HeapSweep, bulk

SITE = ZoneInfo("Asia/Shanghai")


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> Node:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return a


def test_a_frozen_cycle_survives_collections_until_the_sweep() -> None:
    kept = cycle()
    alive = weakref.ref(kept)
    try:
        with bulk("a test cycle"):
            pass  # alive at its end: frozen
        del kept
        gc.collect()
        # Garbage since, but frozen: full collections do not see it.
        assert alive() is not None
        clock = Clock()
        sweep = HeapSweep(clock, SITE)
        sweep.sweep()
        assert alive() is None
        assert gc.get_freeze_count() > 0  # what lives is frozen again
    finally:
        gc.unfreeze()


def test_collections_wait_during_bulk_work_and_what_it_built_is_frozen() -> None:
    assert gc.isenabled()
    try:
        with bulk("outer"):
            with bulk("inner"):
                assert not gc.isenabled()
            assert not gc.isenabled()  # still in the outer work
            built = [Node() for _ in range(1000)]
        assert gc.isenabled()
        frozen = gc.get_freeze_count()
        assert frozen >= len(built)
        # Nothing young is left to walk: the built objects are frozen.
        assert gc.get_count()[0] < 100
    finally:
        gc.unfreeze()


def test_the_sweep_runs_daily_at_half_past_three_site_time() -> None:
    clock = Clock()
    # 2026-03-02 01:00 in Shanghai.
    clock.advance(datetime(2026, 3, 1, 17, 0, tzinfo=timezone.utc).timestamp())
    sweep = HeapSweep(clock, SITE)
    assert sweep.delay() == 2.5 * 3600
    sweep.startService()
    try:
        clock.advance(2.5 * 3600 - 1)
        assert sweep.sweeps == 0
        clock.advance(1)
        assert sweep.sweeps == 1
        assert sweep.delay() == 24 * 3600
        clock.advance(24 * 3600)
        assert sweep.sweeps == 2
    finally:
        sweep.stopService()
        gc.unfreeze()
    assert not clock.getDelayedCalls()
