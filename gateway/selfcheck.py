"""``anpr-gateway-self-check``: is the gateway that just started working?

Run by ``install.sh`` after an upgrade, once the new version said READY: the
configuration still checks, every TCP listener of the configuration accepts a
connection, and a plate pushed to the first camera listener on loopback, the
way a camera pushes it, is answered. Any failure is one line naming what
failed; the installer then goes back to the previous version.

The plate is an event like any other: camera ``anpr-gateway-self-check``,
plate ``SELFCHECK``, in no lane (the barrier decision is no barrier at all).
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import ssl
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["SELF_CHECK_CAMERA", "SelfCheckError", "main", "self_check"]

SELF_CHECK_CAMERA = "anpr-gateway-self-check"
SELF_CHECK_PLATE = "SELFCHECK"
DEFAULT_CONFIG = "/etc/anpr-gateway/gateway.toml"
TIMEOUT_SECONDS = 10.0


class SelfCheckError(Exception):
    """What failed, in one line."""


def _listener(description: str) -> tuple[str, str, int] | None:
    """(kind, host to dial, port) of a ``tcp:`` or ``ssl:`` endpoint string;
    ``None`` for another kind (a unix socket, ...)."""
    kind, _, rest = description.partition(":")
    if kind not in ("tcp", "ssl"):
        return None
    parts = rest.split(":")
    port = next((p.removeprefix("port=") for p in parts if p.startswith("port=")), None)
    if port is None:
        port = next((p for p in parts if p and "=" not in p), "0")
    interface = next(
        (p.removeprefix("interface=").replace("\\", "") for p in parts if p.startswith("interface=")),
        "",
    )
    if interface in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif interface in ("::", "[::]"):
        host = "::1"
    else:
        host = interface
    return kind, host, int(port)


def _plate_body() -> bytes:
    result = {"license": SELF_CHECK_PLATE, "plateid": 1, "triggerType": 8}
    body = {"AlarmInfoPlate": {"serialno": SELF_CHECK_CAMERA, "result": {"PlateResult": result}}}
    return json.dumps(body).encode()


def _answer(kind: str, host: str, port: int) -> dict[str, Any]:
    connection: http.client.HTTPConnection
    if kind == "ssl":
        # The gateway's own certificate, on loopback: the check is that it
        # answers, not who it is.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        connection = http.client.HTTPSConnection(host, port, timeout=TIMEOUT_SECONDS, context=context)
    else:
        connection = http.client.HTTPConnection(host, port, timeout=TIMEOUT_SECONDS)
    try:
        connection.request(
            "POST",
            "/devicemanagement/php/plateresult.php",
            _plate_body(),
            {"Content-Type": "application/json"},
        )
        response = connection.getresponse()
        data = response.read(65536)
    except (OSError, http.client.HTTPException) as exc:
        raise SelfCheckError(f"the plate pushed to {host}:{port} was not answered: {exc}") from None
    finally:
        connection.close()
    if response.status != 200:
        raise SelfCheckError(f"the plate pushed to {host}:{port} was answered HTTP {response.status}")
    try:
        reply = json.loads(data)
        answer = reply["Response_AlarmInfoPlate"]
    except (ValueError, KeyError, TypeError):
        raise SelfCheckError(
            f"the plate pushed to {host}:{port} got no camera reply: {data[:80]!r}"
        ) from None
    if not isinstance(answer, dict):
        raise SelfCheckError(f"the plate pushed to {host}:{port} got a malformed reply")
    return answer


def self_check(config_path: str | None) -> str:
    """Check the gateway running with ``config_path``; a summary, or raise
    :class:`SelfCheckError`."""
    from gateway.config import ConfigError, check_machine, load_config

    try:
        config = load_config(config_path)
        check_machine(config)
    except ConfigError as error:
        raise SelfCheckError(f"configuration: {error.full_message()}") from None
    listening = 0
    camera: tuple[str, str, int] | None = None
    for key, endpoints in (
        ("camera_server.listen", config.camera_server.listen),
        ("admin.listen", config.admin.listen),
    ):
        for index, description in enumerate(endpoints, start=1):
            listener = _listener(description)
            if listener is None or listener[2] == 0:
                continue
            _kind, host, port = listener
            try:
                with socket.create_connection((host, port), timeout=TIMEOUT_SECONDS):
                    pass
            except OSError as exc:
                raise SelfCheckError(
                    f"{key}[{index}] {description}: nothing answers on {host}:{port} ({exc.strerror or exc})"
                ) from None
            listening += 1
            if key == "camera_server.listen" and camera is None:
                camera = listener
    if camera is None:
        raise SelfCheckError("camera_server.listen: no tcp: or ssl: listener to push a plate to")
    answer = _answer(*camera)
    return (
        f"{listening} listeners up; plate {SELF_CHECK_PLATE} on {camera[1]}:{camera[2]} "
        f"answered {answer.get('info', '?')!r}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``anpr-gateway-self-check [--config FILE]``: exit 0 and ``ok: ...``, or
    1 and ``error: ...``."""
    parser = argparse.ArgumentParser(
        prog="anpr-gateway-self-check",
        description="Check that the running gateway listens and answers a plate on loopback.",
    )
    parser.add_argument(
        "--config", default=DEFAULT_CONFIG, help=f"the configuration file (default: {DEFAULT_CONFIG})"
    )
    arguments = parser.parse_args(argv)
    try:
        summary = self_check(arguments.config)
    except SelfCheckError as error:
        print(f"anpr-gateway-self-check: error: {error}", file=sys.stderr)
        return 1
    print(f"anpr-gateway-self-check: ok: {summary}")
    return 0
