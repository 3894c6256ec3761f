"""Keeping the garbage collector off the plate path.

CPython's cyclic garbage collector now and then walks every object it tracks
(a full collection), holding the interpreter lock meanwhile: every thread,
the event loop included, waits. The gateway's heap is dominated by the plate
list (entries, the index's tables, what each camera holds), hundreds of
thousands of objects that live for hours, so on a site of 100 000 plates a
full collection stalls the event loop for hundreds of milliseconds, far past
a camera's patience. Those objects hold no reference cycles: reference
counting frees them when they are replaced.

So such structures are built as bulk work (:data:`bulk`: the list loaded, a
large change applied, cameras' lists recomputed), and what lives at its end
is moved into the collector's permanent generation (:func:`gc.freeze`),
which collections skip. Objects made afterwards are collected as usual. The
cost is that a reference cycle that was alive when frozen and becomes
garbage later is not reclaimed until the daily :class:`HeapSweep`; the
gateway builds no such cycles in what it keeps.
"""

from __future__ import annotations

import gc
import sys
import time
from datetime import datetime, timedelta, tzinfo
from datetime import time as dt_time

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

__all__ = ["SWITCH_INTERVAL", "HeapSweep", "bulk", "share_the_lock"]

#: When the daily full collection runs, in the site's local time.
SWEEP_AT = dt_time(3, 30)
#: Seconds a thread runs before the event loop may take the interpreter lock
#: back (Python's default: 0.005), and the same while bulk work runs.
SWITCH_INTERVAL = 0.001
BULK_SWITCH_INTERVAL = 0.0005


def share_the_lock() -> None:
    """The store's thread and the plate list's workers run Python code; the
    event loop gives the interpreter lock up at each system call of a reply
    and waits for the running thread's switch interval to take it back,
    several times a reply. A short interval bounds that wait."""
    sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))

log = Logger()


class _Bulk:
    """While bulk work builds many long-lived objects (a list imported, an
    index rebuilt, cameras' lists recomputed), every collection would walk
    the large new containers again and again, young collections included
    (a 100 000-entry dict is young until it has survived two). So automatic
    collection is off while bulk work runs, and what lives at its end is
    frozen at once, without a collection (which would walk all of it).

    The price: cyclic garbage made meanwhile (requests served during the
    work) is frozen too, until the daily :class:`HeapSweep`.

    Meanwhile threads run Python code for seconds, and the event loop gives
    the interpreter lock up at every system call (each read, write and poll
    of a reply); taking it back waits for the running thread's switch
    interval, 5 ms by default, several times a reply. The interval is
    :data:`BULK_SWITCH_INTERVAL` while bulk work runs. Entered and left on
    the reactor thread only."""

    def __init__(self) -> None:
        self._depth = 0
        self._was_enabled = True
        self._interval = sys.getswitchinterval()

    def __call__(self, what: str) -> _BulkWork:
        return _BulkWork(self, what)

    def enter(self) -> None:
        if self._depth == 0:
            self._was_enabled = gc.isenabled()
            gc.disable()
            self._interval = sys.getswitchinterval()
            sys.setswitchinterval(min(self._interval, BULK_SWITCH_INTERVAL))
        self._depth += 1

    def leave(self, what: str) -> None:
        self._depth -= 1
        if self._depth == 0:
            gc.freeze()
            if self._was_enabled:
                gc.enable()
            sys.setswitchinterval(self._interval)
            log.debug("Heap frozen after {what}", what=what)


class _BulkWork:
    def __init__(self, owner: _Bulk, what: str) -> None:
        self._owner = owner
        self._what = what

    def __enter__(self) -> None:
        self._owner.enter()

    def __exit__(self, *exc: object) -> None:
        self._owner.leave(self._what)


#: ``with bulk("what"):`` around bulk work, on the reactor thread.
bulk = _Bulk()


class HeapSweep(Service):
    """Once a day, at a quiet hour of the site, the frozen heap is thawed and
    collected in full (reclaiming cycles frozen by bulk work that have become
    garbage since), then frozen again. That one collection stalls the
    event loop for as long as a full collection takes (docs/benchmarks.md);
    at night it meets few cars, and it bounds what freezing can keep."""

    def __init__(self, clock: IReactorTime, tz: tzinfo, at: dt_time = SWEEP_AT) -> None:
        self.setName("heap-sweep")
        self._clock = clock
        self._tz = tz
        self._at = at
        self._call: IDelayedCall | None = None
        self.sweeps = 0

    def startService(self) -> None:
        super().startService()
        self._schedule()

    def stopService(self) -> None:
        super().stopService()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def delay(self) -> float:
        """Seconds from now to the next sweep."""
        now = datetime.fromtimestamp(self._clock.seconds(), tz=self._tz)
        due = datetime.combine(now.date(), self._at, tzinfo=self._tz)
        if due <= now:
            due = datetime.combine(now.date() + timedelta(days=1), self._at, tzinfo=self._tz)
        return max(1.0, due.timestamp() - now.timestamp())

    def _schedule(self) -> None:
        self._call = self._clock.callLater(self.delay(), self.sweep)

    def sweep(self) -> float:
        """Collect everything now; returns the seconds it took."""
        began = time.monotonic()
        gc.unfreeze()
        collected = gc.collect()
        gc.freeze()
        took = time.monotonic() - began
        self.sweeps += 1
        log.info(
            "Daily heap sweep: {collected} unreachable objects collected in {ms:.0f} ms",
            collected=collected,
            ms=took * 1000,
        )
        if self.running:
            self._schedule()
        return took
