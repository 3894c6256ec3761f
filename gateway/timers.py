"""Periodic work as a service of the tree.

:class:`Every` is Twisted's ``TimerService`` on a given clock, with two things
the gateway's periodic work needs: the first run may wait one period (the owner
did that work while starting), and a run that fails is logged and the next
one still comes (``TimerService`` stops for good after a failure). A run that
returns a Deferred is waited for, so runs never overlap, and stopping waits
for the run in progress.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import cast

from twisted.application.internet import TimerService
from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = ["Every"]

log = Logger()

#: The periodic work: a function, or one returning a Deferred or a coroutine.
Work = Callable[[], object]


class Every(TimerService):
    """Run ``work`` every ``step`` seconds on ``clock`` while the service runs;
    the first run at start when ``now``, else one step after."""

    def __init__(
        self, clock: IReactorTime, step: float, work: Work, *, name: str, now: bool = False
    ) -> None:
        super().__init__(step, self._run)
        self.clock = clock
        self.setName(name)
        self._work = work
        self._now = now

    def startService(self) -> None:
        # TimerService.startService always runs at once; this one may wait.
        Service.startService(self)
        self._loop = LoopingCall(self._run)
        self._loop.clock = cast(IReactorTime, self.clock)
        self._loopFinished = self._loop.start(self.step, now=self._now)
        self._loopFinished.addErrback(self._failed)

    def _run(self) -> Deferred[None]:
        def failed(failure: Failure) -> None:
            log.failure("{name} failed; it runs again in {step} s", failure, name=self.name, step=self.step)

        running: Deferred[object] = maybeDeferred(self._call)
        return running.addCallbacks(lambda _: None, failed)

    def _call(self) -> object:
        result = self._work()
        if inspect.iscoroutine(result):
            return Deferred.fromCoroutine(result)
        return result
