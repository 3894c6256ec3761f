"""The bulk thread: work runs off the event loop, lowered in priority; work
handed to it after it stopped fails at once instead of never finishing."""

from __future__ import annotations

import os
import threading

from twisted.trial.unittest import TestCase

from gateway.background import BULK_NICE, BackgroundStopped, BackgroundWork
from support.threads import global_reactor


class BackgroundWorkTests(TestCase):
    async def test_work_runs_in_a_lowered_thread_of_its_own(self) -> None:
        work = BackgroundWork(global_reactor)
        work.startService()
        self.addCleanup(work.stopService)

        def where() -> tuple[int, int]:
            return threading.get_ident(), os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

        ident, nice = await work(where)
        self.assertNotEqual(ident, threading.get_ident())
        self.assertGreaterEqual(nice, BULK_NICE)

    async def test_work_after_stop_fails_at_once(self) -> None:
        # A start-up cut short by a stop must not wait for work that never runs.
        work = BackgroundWork(global_reactor)
        work.startService()
        work.stopService()
        failed = work(lambda: 1)
        self.failureResultOf(failed, BackgroundStopped)
