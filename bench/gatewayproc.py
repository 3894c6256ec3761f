"""The gateway under test: a generated configuration and a real process.

The gateway runs exactly as on a site, through twistd (``python -c "from
twisted.scripts.twistd import run; run()" -n --pidfile= --logger
gateway.journal.observer anpr-gateway --config <file>``, the unit's command)
with the repository on ``PYTHONPATH``, on loopback ports, with its state in a
scratch directory, pinned to one core when ``taskset`` is there.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from bench.system import SERVER_CPU, BenchError, Child, free_port, port_open, python, wait_until

TWISTD = "from twisted.scripts.twistd import run; run()"
JOURNAL = "gateway.journal.observer"


@attrs.frozen
class Lane:
    """One ``[[lane]]`` of the generated configuration."""

    name: str
    camera: str
    heartbeat: str = "auto"


@attrs.frozen
class GatewaySetup:
    """What the generated configuration holds, beyond loopback ports and state."""

    lanes: tuple[Lane, ...] = ()
    whitelist_csv: Path | None = None
    comet_hold_seconds: float = 20.0
    max_body_bytes: int = 8_388_608
    unknown_plate: str = "deny"
    #: ``[store]`` settings, as TOML values (e.g. ``{"max_db_bytes": 1 << 30}``).
    store: tuple[tuple[str, int], ...] = ()
    #: More ``[camera_server]`` settings, as TOML values.
    camera_server: tuple[tuple[str, int], ...] = ()
    #: The admin API bearer token the harness uses (an operator: it may open barriers).
    admin_token: str = attrs.field(factory=lambda: secrets.token_urlsafe(24))


def _toml(value: Any) -> str:
    # JSON strings, numbers and lists of them are valid TOML values.
    return json.dumps(value)


def write_config(
    directory: Path, camera_port: int, admin_port: int, setup: GatewaySetup
) -> Path:
    """The gateway's TOML file for ``setup``, its state inside ``directory``."""
    lines = [
        "[gateway]",
        f"state_dir = {_toml(str(directory / 'state'))}",
        'timezone = "UTC"',
        "",
        "[camera_server]",
        f"listen = {_toml([f'tcp:{camera_port}:interface=127.0.0.1'])}",
        f"comet_hold_seconds = {setup.comet_hold_seconds}",
        f"max_body_bytes = {setup.max_body_bytes}",
        *(f"{key} = {value}" for key, value in setup.camera_server),
        "",
        "[admin]",
        f"listen = {_toml([f'tcp:{admin_port}:interface=127.0.0.1'])}",
        "",
        "[policy]",
        f"unknown_plate = {_toml(setup.unknown_plate)}",
    ]
    if setup.whitelist_csv is not None:
        lines.append(f"whitelist_csv = {_toml(str(setup.whitelist_csv))}")
    if setup.store:
        lines += ["", "[store]"] + [f"{key} = {value}" for key, value in setup.store]
    lines += [
        "",
        "[[admin.tokens]]",
        'name = "bench"',
        f"sha256 = {_toml(hashlib.sha256(setup.admin_token.encode()).hexdigest())}",
        'role = "operator"',
    ]
    for lane in setup.lanes:
        lines += [
            "",
            "[[lane]]",
            f"name = {_toml(lane.name)}",
            f"camera = {_toml(lane.camera)}",
            f"heartbeat = {_toml(lane.heartbeat)}",
            # The benchmark measures the pushes themselves, not the rows of
            # a camera whitelist sync riding along in the replies.
            "sync_whitelist = false",
        ]
    path = directory / "gateway.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class GatewayProcess:
    """A running gateway; :meth:`start` returns once its camera port listens."""

    def __init__(
        self,
        child: Child,
        camera_port: int,
        admin_port: int,
        listening_after: float,
        admin_token: str,
    ):
        self.child = child
        self.admin_token = admin_token
        self.camera_port = camera_port
        self.admin_port = admin_port
        #: Seconds from the process start to its camera port accepting connections.
        self.listening_after = listening_after

    @property
    def pid(self) -> int:
        return self.child.pid

    @classmethod
    def start(
        cls,
        directory: Path,
        setup: GatewaySetup,
        *,
        name: str = "gateway",
        cpu: int | None = SERVER_CPU,
        argv: Sequence[str] | None = None,
        timeout: float = 30.0,
        camera_port: int | None = None,
    ) -> GatewayProcess:
        """Start the gateway (twistd, or ``argv`` + ``--config FILE`` when given),
        on ``camera_port`` or a free one."""
        directory.mkdir(parents=True, exist_ok=True)
        camera_port = camera_port or free_port()
        admin_port = free_port()
        while admin_port == camera_port:
            admin_port = free_port()
        config = write_config(directory, camera_port, admin_port, setup)
        # As the systemd unit runs it: journal lines on standard output, no
        # timestamps (journald adds them), the same cost per log line.
        command = list(argv) if argv is not None else [
            python(), "-c", TWISTD, "-n", "--pidfile=", "--logger", JOURNAL, "anpr-gateway"
        ]
        child = Child(
            name,
            [*command, "--config", str(config)],
            log=directory / f"{name}.log",
            cpu=cpu,
            cwd=directory,
        )

        def listening() -> bool:
            if not child.alive():
                raise BenchError(
                    f"{name} exited with status {child.process.returncode}:\n{child.output_tail()}"
                )
            return port_open(camera_port)

        try:
            wait_until(listening, timeout, f"{name} to listen", interval=0.002)
        except BaseException:
            child.stop()
            raise
        # Measured from the fork, not from the first poll.
        return cls(
            child, camera_port, admin_port, time.monotonic() - child.started, setup.admin_token
        )

    def wait_ready(self, body: bytes, timeout: float = 30.0) -> float:
        """Push ``body`` until a plate is answered (the store is open and the
        plate list loaded); returns the seconds since the process start."""

        def answered() -> bool:
            connection = http.client.HTTPConnection("127.0.0.1", self.camera_port, timeout=5)
            try:
                connection.request(
                    "POST",
                    "/devicemanagement/php/plateresult.php",
                    body=body,
                    headers={"Content-Type": "application/Json"},
                )
                return connection.getresponse().status == 200
            except (OSError, http.client.HTTPException):
                return False
            finally:
                connection.close()

        wait_until(answered, timeout, "the gateway to keep plate events", interval=0.01)
        return time.monotonic() - self.child.started

    def admin(self, method: str, path: str) -> tuple[int, Any]:
        """One admin API request with the harness's bearer token: (status, JSON)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=10)
        try:
            headers = {"Authorization": f"Bearer {self.admin_token}"}
            if method != "GET":
                headers["Content-Type"] = "application/json"
            connection.request(method, path, body=b"{}" if method != "GET" else None, headers=headers)
            response = connection.getresponse()
            body = response.read()
            return response.status, json.loads(body) if body else None
        finally:
            connection.close()

    def status(self) -> Any:
        """The admin ``/api/status`` document."""
        status, document = self.admin("GET", "/api/status")
        if status != 200:
            raise BenchError(f"GET /api/status: HTTP {status} {document}")
        return document

    def stop(self) -> None:
        self.child.stop(timeout=15.0)
