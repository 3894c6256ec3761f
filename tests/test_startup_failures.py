"""Every start-up failure is one line with its key, and the exit status says
whether restarting can help: listeners checked without listening, TLS files
read and matched, a busy port at start."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import trustme
from twisted.internet.testing import MemoryReactor

from gateway.config import main as check_config
from gateway.listeners import (
    LISTEN_ERROR_EXIT,
    check_endpoint,
    endpoint_warnings,
    parse_endpoint,
)
from gateway.schema import ConfigError


def error_of(description: str) -> ConfigError:
    with pytest.raises(ConfigError) as raised:
        check_endpoint(description, "camera_server.listen[1]")
    assert raised.value.path == "camera_server.listen[1]"
    return raised.value


def test_endpoints_are_parsed_as_twisted_will_listen_on_them() -> None:
    assert "Unknown endpoint type: 'tpc'" in error_of("tpc:8080").reason
    assert error_of("tcp:80800").reason == "tcp:80800: port 80800 is not between 0 and 65535"
    assert "invalid literal" in error_of("tcp:http").reason
    check_endpoint("tcp:8080:interface=127.0.0.1", "camera_server.listen[1]")
    check_endpoint("unix:/run/anpr-gateway/cameras.sock", "camera_server.listen[1]")
    # Sockets systemd passes at start cannot be checked before it does.
    check_endpoint("systemd:domain=INET:index=0", "camera_server.listen[1]")


def tls_files(tmp_path: Path, *, expires: datetime | None = None) -> tuple[Path, Path]:
    ca = trustme.CA()
    issued = ca.issue_cert("gateway.site", not_after=expires) if expires else ca.issue_cert("gateway.site")
    key, cert = tmp_path / "site.key", tmp_path / "site.crt"
    issued.private_key_pem.write_to_path(str(key))
    issued.cert_chain_pems[0].write_to_path(str(cert))
    return key, cert


def test_tls_files_are_read_and_matched(tmp_path: Path) -> None:
    key, cert = tls_files(tmp_path)
    good = f"ssl:8443:privateKey={key}:certKey={cert}"
    parse_endpoint(MemoryReactor(), good, "camera_server.listen[2]")
    assert f"no such file: {tmp_path / 'nope.crt'}" in error_of(
        f"ssl:8443:privateKey={key}:certKey={tmp_path / 'nope.crt'}"
    ).reason
    (tmp_path / "other").mkdir()
    other_key, _ = tls_files(tmp_path / "other")
    mismatch = error_of(f"ssl:8443:privateKey={other_key}:certKey={cert}")
    assert "the key does not match the certificate" in mismatch.reason
    assert list(endpoint_warnings(good, "camera_server.listen[2]")) == []


def test_warnings_for_what_this_machine_lacks_now(tmp_path: Path) -> None:
    # 192.0.2.0/24 is documentation space: no machine has it.
    (warning,) = endpoint_warnings("tcp:8080:interface=192.0.2.7", "camera_server.listen[1]")
    assert warning == (
        "camera_server.listen[1]: tcp:8080:interface=192.0.2.7: "
        "this machine has no interface 192.0.2.7 (yet)"
    )
    assert list(endpoint_warnings("tcp:8080:interface=127.0.0.1", "camera_server.listen[1]")) == []
    soon = datetime.now(timezone.utc) + timedelta(days=10)
    key, cert = tls_files(tmp_path, expires=soon)
    (warning,) = endpoint_warnings(f"ssl:8443:privateKey={key}:certKey={cert}", "admin.listen[1]")
    assert warning.startswith("admin.listen[1]: ") and "the certificate expires on" in warning


def test_the_config_checker_fails_bad_listeners_and_warns_for_missing_devices(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[camera_server]\nlisten = ["tcp:8080", "tpc:8081"]\n')
    assert check_config([str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}: camera_server.listen[2]: not a usable endpoint tpc:8081")
    assert err.count("\n") == 1
    warned = tmp_path / "site.toml"
    warned.write_text(
        f'[gateway]\nstate_dir = "{tmp_path / "state"}"\n'
        '[camera_server]\nlisten = ["tcp:8080:interface=192.0.2.7"]\n'
        '[serial.led1]\ndevice = "/dev/ttyUSB-not-plugged-in"\n'
    )
    assert check_config([str(warned)]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"ok: {warned}: ")
    assert captured.err.splitlines() == [
        f"warning: {warned}: camera_server.listen[1]: tcp:8080:interface=192.0.2.7: "
        "this machine has no interface 192.0.2.7 (yet)",
        f"warning: {warned}: serial.led1.device: /dev/ttyUSB-not-plugged-in is not there (yet); "
        "the gateway retries it while it runs",
    ]


@pytest.mark.system
def test_a_busy_port_stops_twistd_in_one_line_with_a_restartable_status(tmp_path: Path) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    config = tmp_path / "site.toml"
    config.write_text(
        f'[gateway]\nstate_dir = "{tmp_path / "state"}"\n'
        f'[camera_server]\nlisten = ["tcp:{port}:interface=127.0.0.1"]\n'
        "[admin]\nlisten = []\n"
    )
    try:
        result = subprocess.run(
            [
                sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                "--nodaemon", "--pidfile=", "anpr-gateway", "--config", str(config),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
    finally:
        holder.close()
    assert result.returncode == LISTEN_ERROR_EXIT, result.stdout + result.stderr
    output = result.stdout + result.stderr
    expected = (
        f"anpr-gateway: cannot listen: camera_server.listen[1]: "
        f"tcp:{port}:interface=127.0.0.1: address already in use"
    )
    assert expected in output
    assert "Traceback" not in output
    # Nothing was started: no state directory content beyond what the build made.
    assert not (tmp_path / "state" / "gateway.db").exists()
