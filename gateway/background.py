"""Bulk work off the event loop, and out of its way.

Reading a CSV file of 500 000 rows, rebuilding the plate index, recomputing
twenty cameras' lists: seconds of Python each. Run in the reactor's thread
pool, such work competes for the processor with the event loop on equal
terms, and on a busy core a camera's reply waits its turn behind it. This
pool has one thread, scheduled at a lower priority (a higher nice value,
Linux's per-thread priority), so the operating system runs the event loop
first whenever both want the core; the bulk work takes what is left.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Protocol, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorFromThreads, IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

__all__ = ["BULK_NICE", "BackgroundStopped", "BackgroundWork", "InThread", "reactor_threads"]

log = Logger()
T = TypeVar("T")


class InThread(Protocol):
    """Runs ``work()`` off the reactor and gives its result as a Deferred."""

    def __call__(self, work: Callable[[], T]) -> Deferred[T]: ...


def reactor_threads(reactor: IReactorThreads) -> InThread:
    """The reactor's own thread pool as an :class:`InThread` (for parts used
    without the bulk thread, as in tests of one part)."""
    pool = reactor.getThreadPool()

    def in_thread(work: Callable[[], T]) -> Deferred[T]:
        return deferToThreadPool(reactor, pool, work)

    return in_thread

#: How much lower the bulk thread runs than the event loop (nice 0 to 19).
BULK_NICE = 10


class BackgroundStopped(Exception):
    """Work was handed to the bulk thread after the gateway began to stop."""


class BackgroundWork(Service):
    """``background(work)`` runs ``work()`` in the bulk thread and gives its
    result as a Deferred. Work runs one piece at a time, in order."""

    def __init__(self, reactor: IReactorFromThreads, name: str = "anpr-gateway bulk work") -> None:
        self.setName("background-work")
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=0, maxthreads=1, name=name)
        self._local = threading.local()

    def startService(self) -> None:
        super().startService()
        self._pool.start()

    def stopService(self) -> None:
        super().stopService()
        # Waits for the piece of work under way (a few seconds at most).
        self._pool.stop()

    def __call__(self, work: Callable[[], T]) -> Deferred[T]:
        if self._pool.joined:
            # A stopped pool drops what it is given without a word: say so,
            # so that whoever waits (a start-up cut short) is not left waiting.
            return fail(BackgroundStopped("the gateway is stopping: bulk work no longer runs"))
        return deferToThreadPool(self._reactor, self._pool, self._lowered, work)

    def _lowered(self, work: Callable[[], T]) -> T:
        if not getattr(self._local, "lowered", False):
            self._local.lowered = True
            try:
                # On Linux a thread's id names that thread alone here.
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BULK_NICE)
            except (OSError, AttributeError) as error:
                log.info("Bulk work runs at normal priority: {reason}", reason=str(error))
        return work()
