"""sd_notify without a library: READY=1 once every listener is up, WATCHDOG=1
from the reactor, STOPPING=1 on the way down, received on a real AF_UNIX
datagram socket the way systemd receives them."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from typing import Any

import pytest
from twisted.application.internet import StreamServerEndpointService
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from gateway.systemd import (
    NotifySocket,
    SystemdNotifier,
    listening_status,
    watchdog_interval,
)
from support import CapturedLog, FakeSystemd


class NotifierTests(TestCase):
    def systemd(self, abstract: bool = False) -> FakeSystemd:
        fake = FakeSystemd(abstract)
        self.addCleanup(fake.close)
        return fake

    def notifier(self, environ: dict[str, str], ready: Any, clock: Clock | None = None) -> SystemdNotifier:
        notifier = SystemdNotifier(clock or Clock(), ready=lambda: ready, environ=environ, pid=4242)
        self.addCleanup(self._stop, notifier)
        return notifier

    @staticmethod
    def _stop(notifier: SystemdNotifier) -> None:
        if notifier.running:
            notifier.stopService()

    def test_ready_only_once_the_gateway_serves(self) -> None:
        systemd = self.systemd()
        listening: Deferred[str] = Deferred()
        notifier = self.notifier({"NOTIFY_SOCKET": systemd.env_value}, listening)
        notifier.startService()
        # Started, but the listeners are not up yet: systemd must keep waiting.
        self.assertEqual(systemd.messages(), [])
        listening.callback("camera-listener-1 on 0.0.0.0:8080")
        self.assertEqual(
            systemd.messages(),
            [{"READY": "1", "STATUS": "camera-listener-1 on 0.0.0.0:8080"}],
        )
        self.assertEqual(notifier.ready_status, "camera-listener-1 on 0.0.0.0:8080")
        notifier.stopService()
        self.assertEqual(systemd.messages(), [{"STOPPING": "1", "STATUS": "Stopping"}])

    def test_a_notice_leads_the_status_before_and_after_ready(self) -> None:
        systemd = self.systemd()
        listening: Deferred[str] = Deferred()
        notice: list[str | None] = ["NOT KEEPING EVENTS: the event store cannot open (x)"]
        notifier = SystemdNotifier(
            Clock(),
            ready=lambda: listening,
            environ={"NOTIFY_SOCKET": systemd.env_value},
            pid=4242,
            notice=lambda: notice[0],
        )
        self.addCleanup(self._stop, notifier)
        notifier.startService()
        # Said at once, without READY=1: the gateway does not serve.
        self.assertEqual(
            systemd.messages(),
            [{"STATUS": "NOT KEEPING EVENTS: the event store cannot open (x) | not serving"}],
        )
        notifier.refresh()  # nothing changed: nothing sent
        self.assertEqual(systemd.messages(), [])
        notice[0] = "DATABASE REPLACED at 2025-03-01T12:00:00+00:00 (damaged)"
        listening.callback("camera-listener-1 on 0.0.0.0:8080")
        self.assertEqual(
            systemd.messages(),
            [
                {
                    "READY": "1",
                    "STATUS": "DATABASE REPLACED at 2025-03-01T12:00:00+00:00 (damaged) | "
                    "serving: camera-listener-1 on 0.0.0.0:8080",
                }
            ],
        )
        notice[0] = None  # acknowledged
        notifier.refresh()
        self.assertEqual(systemd.messages(), [{"STATUS": "camera-listener-1 on 0.0.0.0:8080"}])

    def test_abstract_namespace_socket(self) -> None:
        systemd = self.systemd(abstract=True)
        notifier = self.notifier({"NOTIFY_SOCKET": systemd.env_value}, _ready("serving"))
        notifier.startService()
        self.assertEqual(systemd.messages(), [{"READY": "1", "STATUS": "serving"}])

    def test_watchdog_pings_at_half_the_period_until_stopped(self) -> None:
        systemd = self.systemd()
        clock = Clock()
        notifier = self.notifier(
            {"NOTIFY_SOCKET": systemd.env_value, "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"},
            Deferred(),  # never ready: the watchdog runs regardless
            clock,
        )
        notifier.startService()
        self.assertEqual(systemd.messages(), [{"WATCHDOG": "1"}])
        clock.advance(14.9)
        self.assertEqual(systemd.messages(), [])
        clock.advance(0.1)
        self.assertEqual(systemd.messages(), [{"WATCHDOG": "1"}])
        clock.advance(15)
        self.assertEqual(systemd.messages(), [{"WATCHDOG": "1"}])
        notifier.stopService()
        self.assertEqual(systemd.messages(), [{"STOPPING": "1", "STATUS": "Stopping"}])
        clock.advance(60)
        self.assertEqual(systemd.messages(), [])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_no_watchdog_for_another_process(self) -> None:
        systemd = self.systemd()
        clock = Clock()
        notifier = self.notifier(
            {"NOTIFY_SOCKET": systemd.env_value, "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"},
            _ready("serving"),
            clock,
        )
        notifier.startService()
        clock.advance(60)
        self.assertEqual(systemd.messages(), [{"READY": "1", "STATUS": "serving"}])

    def test_watchdog_interval_from_the_environment(self) -> None:
        self.assertEqual(watchdog_interval({"WATCHDOG_USEC": "30000000"}, 7), 15.0)
        self.assertEqual(watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"}, 7), 15.0)
        self.assertIsNone(watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "8"}, 7))
        self.assertIsNone(watchdog_interval({}, 7))
        self.assertIsNone(watchdog_interval({"WATCHDOG_USEC": "0"}, 7))
        with CapturedLog() as log:
            self.assertIsNone(watchdog_interval({"WATCHDOG_USEC": "soon"}, 7))
        self.assertIn("WATCHDOG_USEC=soon", " ".join(log.texts()))

    def test_silent_without_notify_socket(self) -> None:
        clock = Clock()
        notifier = self.notifier({"WATCHDOG_USEC": "30000000"}, _ready("serving"), clock)
        with CapturedLog() as log:
            notifier.startService()
            notifier.stopService()
        self.assertEqual(clock.getDelayedCalls(), [])
        # The readiness is still logged for whoever reads the log.
        self.assertIn("Serving: serving", list(log.texts()))

    def test_not_ready_when_a_listener_fails(self) -> None:
        systemd = self.systemd()
        failed: Deferred[str] = Deferred()
        notifier = self.notifier({"NOTIFY_SOCKET": systemd.env_value}, failed)
        notifier.startService()
        failed.errback(RuntimeError("listener admin-listener-1 is not listening"))
        self.assertEqual(
            systemd.messages(),
            [{"STATUS": "Not serving: listener admin-listener-1 is not listening"}],
        )
        self.assertIsNone(notifier.ready_status)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_stopped_before_ready(self) -> None:
        systemd = self.systemd()
        listening: Deferred[str] = Deferred()
        notifier = self.notifier({"NOTIFY_SOCKET": systemd.env_value}, listening)
        notifier.startService()
        notifier.stopService()
        self.assertEqual(systemd.messages(), [{"STOPPING": "1", "STATUS": "Stopping"}])
        self.assertTrue(listening.called)  # the wait was cancelled, quietly
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_status_kept_to_one_line(self) -> None:
        systemd = self.systemd()
        notifier = self.notifier({"NOTIFY_SOCKET": systemd.env_value}, _ready("a\nb " + "x" * 500))
        notifier.startService()
        (message,) = systemd.messages()
        self.assertEqual(message["READY"], "1")
        self.assertTrue(message["STATUS"].startswith("a b xxx"))
        self.assertLessEqual(len(message["STATUS"]), 200)

    def test_unreachable_socket_is_logged_once_and_never_raises(self) -> None:
        directory = tempfile.mkdtemp(prefix="sdn")
        self.addCleanup(shutil.rmtree, directory, True)
        notify = NotifySocket(os.path.join(directory, "gone"))
        with CapturedLog() as log:
            self.assertFalse(notify.send("WATCHDOG=1"))
            self.assertFalse(notify.send("WATCHDOG=1"))
        notify.close()
        warnings = [t for t in log.texts() if t.startswith("Cannot notify systemd")]
        self.assertEqual(len(warnings), 1)

    def test_not_a_unix_socket(self) -> None:
        with CapturedLog() as log:
            notify = NotifySocket("vsock:2:1234")
        self.assertFalse(notify.enabled)
        self.assertFalse(notify.send("READY=1"))
        self.assertIn("is not a Unix socket", " ".join(log.texts()))


def _ready(status: str) -> Deferred[str]:
    ready: Deferred[str] = Deferred()
    ready.callback(status)
    return ready


@pytest.mark.e2e
class ListeningStatusTests(TestCase):
    """``listening_status`` on real listeners on the loopback interface."""

    def listener(self, name: str, port: int = 0) -> StreamServerEndpointService:
        service = StreamServerEndpointService(
            TCP4ServerEndpoint(reactor, port, interface="127.0.0.1"), Factory.forProtocol(Protocol)
        )
        service.setName(name)
        return service

    async def _started(self, *services: StreamServerEndpointService) -> str:
        for service in services:
            service.startService()
        return await listening_status(services)

    def test_names_every_listener_and_leaves_them_stoppable(self) -> Deferred[None]:
        camera, admin = self.listener("camera-listener-1"), self.listener("admin-listener-1")

        async def check() -> None:
            status = await self._started(camera, admin)
            ports = [
                int(part.rsplit(":", 1)[1]) for part in status.split(", ")
            ]
            self.assertEqual(
                status,
                f"camera-listener-1 on 127.0.0.1:{ports[0]}, admin-listener-1 on 127.0.0.1:{ports[1]}",
            )
            # Observing the listen result must not take it from the service:
            # stopping still closes the ports.
            await camera.stopService()
            await admin.stopService()
            for port in ports:
                with socket.socket() as probe:
                    self.assertNotEqual(probe.connect_ex(("127.0.0.1", port)), 0)

        return Deferred.fromCoroutine(check())

    def test_a_listener_that_cannot_listen_is_named(self) -> Deferred[None]:
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        self.addCleanup(taken.close)
        camera = self.listener("camera-listener-1", taken.getsockname()[1])

        async def check() -> None:
            with self.assertRaises(RuntimeError) as raised:
                await self._started(camera)
            self.assertIn("camera-listener-1", str(raised.exception))
            self.assertEqual(len(self.flushLoggedErrors(CannotListenError)), 1)

        return Deferred.fromCoroutine(check())

    def test_listener_not_started(self) -> Deferred[None]:
        async def check() -> None:
            with self.assertRaises(RuntimeError):
                await listening_status([self.listener("camera-listener-1")])

        return Deferred.fromCoroutine(check())
