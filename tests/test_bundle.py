"""The offline bundle: ``install.sh --make-bundle`` for this machine's
platform and Python, then ``install.sh --bundle`` into a temporary root with
no package index reachable (pip pointed at a closed loopback port, and told
--no-index by the script), the installed gateway started with the unit's own
command line, answering a camera's plate."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[1]
INSTALL = REPO / "systemd" / "install.sh"
SAMPLE = REPO / "tests" / "samples" / "plate_parkingcam_alphadigi_manual_v1.2.json"
TARGET_PATHS = ("/opt/anpr-gateway", "/etc/anpr-gateway", "/var/lib/anpr-gateway")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _closed_port() -> int:
    """A loopback port nothing listens on (connections are refused)."""
    return _free_port()


def _env(**extra: str) -> dict[str, str]:
    drop = {"PYTHONPATH", "ANPR_ROOT", "PIP_FIND_LINKS", "NOTIFY_SOCKET", "VIRTUAL_ENV"}
    env = {key: value for key, value in os.environ.items() if key not in drop}
    env.update(extra)
    return env


def _script(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(INSTALL), *args], capture_output=True, text=True, timeout=600, env=env
    )


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle")
    made = _script("--make-bundle", str(out), "--python", sys.executable, env=_env())
    assert made.returncode == 0, made.stdout + made.stderr
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    (path,) = out.glob(f"anpr-gateway-*-linux-{os.uname().machine}-{tag}.tar.gz")
    assert f"wrote {path}" in made.stdout
    return path


def test_bundle_holds_wheels_docs_and_a_manifest(bundle: Path) -> None:
    with tarfile.open(bundle) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
        (top,) = {name.split("/", 1)[0] for name in archive.getnames()}
        manifest_file = archive.extractfile(f"{top}/MANIFEST.sha256")
        assert manifest_file is not None
        manifest = manifest_file.read().decode()
    listed = {line.split("  ", 1)[1] for line in manifest.splitlines()}
    files = {name for name in names if "." in name.rsplit("/", 1)[-1] or name == "BUNDLE"}
    assert listed == files - {"MANIFEST.sha256"}
    for expected in (
        "systemd/install.sh",
        "systemd/anpr-gateway.service",
        "etc/gateway.toml",
        "docs/operations.md",
        "docs/upstream-openapi.yaml",
        "docs/images/lanes.png",
    ):
        assert expected in listed, expected
    wheels = {name for name in listed if name.startswith("wheels/")}
    assert any(name.startswith("wheels/anpr_gateway-") for name in wheels)
    # Every dependency, binary ones included, is a wheel.
    for dependency in ("twisted", "klein", "treq", "cryptography", "cffi", "zope_interface", "paho_mqtt"):
        assert any(name.lower().startswith(f"wheels/{dependency}-") for name in wheels), dependency
    assert not any(name.endswith((".tar.gz", ".zip")) for name in wheels)


def test_damaged_bundle_is_refused_before_anything_is_installed(bundle: Path, tmp_path: Path) -> None:
    damaged = tmp_path / bundle.name
    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    (tmp_path / f"{bundle.name}.sha256").write_text(Path(f"{bundle}.sha256").read_text())
    result = _script("--root", str(tmp_path / "root"), "--bundle", str(damaged), env=_env())
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("anpr-gateway install: error: ")
    assert "does not match" in result.stderr
    assert not (tmp_path / "root" / "opt").exists()


def _unit_setting(unit: str, key: str) -> str:
    (value,) = re.findall(rf"^{key}=(.*)$", unit, flags=re.MULTILINE)
    return value


def test_offline_install_answers_a_plate(bundle: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    closed = _closed_port()
    offline = _env(
        PIP_INDEX_URL=f"http://127.0.0.1:{closed}/simple",
        PIP_EXTRA_INDEX_URL=f"http://127.0.0.1:{closed}/extra",
    )
    result = _script(
        "--root", str(root), "--bundle", str(bundle), "--python", sys.executable, env=offline
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"checked {bundle.name}: " in output
    # Nothing was looked up anywhere but in the bundle.
    assert "Looking in indexes" not in output and f":{closed}" not in output
    prefix = root / "opt/anpr-gateway"
    assert (prefix / "current/docs/images/lanes.png").is_file()
    assert (prefix / "current/docs/upstream-openapi.yaml").is_file()

    state = root / "var/lib/anpr-gateway"
    camera_port = _free_port()
    (root / "etc/anpr-gateway/gateway.toml").write_text(
        f'[gateway]\nstate_dir = "{state}"\n'
        f'[camera_server]\nlisten = ["tcp:{camera_port}:interface=127.0.0.1"]\n'
        f'[admin]\nlisten = ["tcp:{_free_port()}:interface=127.0.0.1"]\n'
        '[[lane]]\nname = "Exit"\ncamera = "e10b2d6c8c07b422361457935b518642"\n'
        'direction = "out"\nbarrier_channel = 1\nunknown_plate = "allow"\n',
        encoding="utf-8",
    )
    unit = (root / "etc/systemd/system/anpr-gateway.service").read_text()
    command_line = _unit_setting(unit, "ExecStart")
    for path in TARGET_PATHS:
        command_line = command_line.replace(path, f"{root}{path}")
    # Type=notify: systemd gives a notify socket and counts the service started
    # at READY=1; the first plate comes after that, as a camera's would.
    notify_dir = tempfile.mkdtemp(prefix="sdn")  # AF_UNIX names are short
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(os.path.join(notify_dir, "notify"))
    log = (tmp_path / "gateway.log").open("wb")
    process = subprocess.Popen(
        shlex.split(command_line),
        cwd=state,
        env=_env(NOTIFY_SOCKET=os.path.join(notify_dir, "notify")),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        notify.settimeout(0.5)
        while True:
            assert process.poll() is None, (tmp_path / "gateway.log").read_text()
            assert time.monotonic() < deadline, "the installed gateway said no READY=1"
            try:
                if b"READY=1" in notify.recv(4096):
                    break
            except TimeoutError:
                continue
        request = urllib.request.Request(
            f"http://127.0.0.1:{camera_port}/plate",
            data=SAMPLE.read_bytes(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                reply = json.loads(response.read())
        except OSError as exc:
            raise AssertionError((tmp_path / "gateway.log").read_text()) from exc
        answer = reply["Response_AlarmInfoPlate"]
        assert (answer["info"], answer.get("channelNum")) == ("ok", 1), reply
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
        log.close()
        notify.close()
        shutil.rmtree(notify_dir, ignore_errors=True)
    assert (state / "gateway.db").is_file()
    # The installed program ran, not this tree's.
    assert shlex.split(command_line)[0].startswith(str(prefix))
    probe = subprocess.run(
        [str(prefix / "current/bin/python"), "-c", "import gateway; print(gateway.__file__)"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, env=_env(),
    )
    assert Path(probe.stdout.strip()).resolve().is_relative_to((prefix / "releases").resolve()), probe
