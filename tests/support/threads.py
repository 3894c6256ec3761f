"""Work the gateway sends off the reactor, run at once in the unit tests.

The plate list, the camera sync and the sync feed take an ``in_thread``:
:func:`inline_threads` runs the work at once. The admin API and accounts
take a reactor for its thread pool (CSV files, password hashes):
:class:`HeldThreads` holds the work until the test runs it. Either way it is
the same code on the calling thread: no thread, nothing to wait for.

Where a test does want the real thing (the store's own thread, password
hashes in the pool, the service tree on loopback), it hands over
:data:`global_reactor`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure

from gateway.reactor import as_gateway_reactor

__all__ = [
    "HeldThreads",
    "forget_held_pools",
    "global_reactor",
    "inline_threads",
    "run_held_work",
]

T = TypeVar("T")

#: ``twisted.internet.reactor`` as the gateway types its reactor
#: (``gateway.reactor.IGatewayReactor``: its thread pool included, which
#: Twisted's own type for the global reactor leaves out).
global_reactor = as_gateway_reactor(_reactor)


def inline_threads(work: Callable[[], T]) -> Deferred[T]:
    """An ``in_thread`` that runs ``work()`` at once."""
    try:
        return succeed(work())
    except BaseException:
        return fail(Failure())


class HeldThreads:
    """A stand-in for the reactor where a part only wants its thread pool
    (``IReactorThreads``: the admin API's password checks and CSV work).

    Work given to the pool waits, in order, until the test runs it
    (:meth:`run`, or :func:`run_held_work` for every such pool), as work in
    a real pool waits for a thread: requests in flight overlap as they do in
    the gateway. It then runs on the calling thread and its result is handed
    back at once. With ``at_once`` (for requests over a real socket, where
    no test step runs it), work runs as soon as it is given."""

    def __init__(self) -> None:
        self.held: list[tuple[Callable[[bool, Any], object], Callable[[], Any]]] = []
        self.at_once = False
        _HELD.append(self)

    # -- IReactorThreads, as deferToThreadPool uses it ------------------------

    def getThreadPool(self) -> HeldThreads:
        return self

    def callInThreadWithCallback(
        self,
        onResult: Callable[[bool, Any], object],
        func: Callable[..., Any],
        *args: Any,
        **kw: Any,
    ) -> None:
        self.held.append((onResult, lambda: func(*args, **kw)))
        if self.at_once:
            self.run()

    def callFromThread(self, func: Callable[..., Any], *args: Any, **kw: Any) -> None:
        func(*args, **kw)

    # -- for the tests ----------------------------------------------------------

    def run(self) -> int:
        """Run the work held (and any it leads to); how many pieces ran."""
        ran = 0
        while self.held:
            onResult, work = self.held.pop(0)
            ran += 1
            try:
                result = work()
            except BaseException:
                onResult(False, Failure())
            else:
                onResult(True, result)
        return ran


_HELD: list[HeldThreads] = []


def run_held_work() -> int:
    """Run what every :class:`HeldThreads` holds; how many pieces ran."""
    return sum(pool.run() for pool in list(_HELD))


def forget_held_pools() -> None:
    """Drop the pools made so far (a test's parts end with the test)."""
    _HELD.clear()
