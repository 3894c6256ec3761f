"""Upgrades that can be undone: install.sh puts each version in its own
virtualenv (releases/<version>, ``current`` the one the unit runs), copies the
database before the new version first opens it, starts the new version, waits
for READY and runs its self-check, and on failure goes back: the old
virtualenv, the database copy, the old version running again.

The releases are wheels built here from this tree: a previous release (an
older version number, one migration step fewer: upgrading applies it), this
one, and a broken next one (starts and says READY, but a pushed plate gets no
answer). systemd is not there: install.sh runs the unit's command itself
(``--service-mode direct``), as systemd would."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import sysconfig
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from gateway.store.schema import SCHEMA_VERSION

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[1]
#: The old release is this tree without its last schema step.
OLD_SCHEMA = SCHEMA_VERSION - 1
INSTALL = REPO / "systemd" / "install.sh"
CAMERA = "d85b1269-8f942256"
OLD, BROKEN = "0.0.1", "9.9.9"


def _version() -> str:
    text = (REPO / "gateway" / "__init__.py").read_text()
    match = re.search(r'__version__ = "([^"]+)"', text)
    assert match is not None
    return match.group(1)


NEW = _version()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _patch(tree: Path, relative: str, old: str, new: str) -> None:
    path = tree / relative
    text = path.read_text()
    assert old in text, (relative, old)
    path.write_text(text.replace(old, new, 1))


def _wheel(work: Path, name: str, patches: list[tuple[str, str, str]]) -> Path:
    tree = work / f"tree-{name}"
    shutil.copytree(
        REPO,
        tree,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "tests", "bench", "build", "*.egg-info", "__pycache__"
        ),
    )
    for patch in patches:
        _patch(tree, *patch)
    out = work / f"wheel-{name}"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(tree)],
        check=True,
        timeout=300,
    )
    (wheel,) = out.glob("anpr_gateway-*.whl")
    return wheel


@attrs.frozen
class Wheels:
    old: Path
    new: Path
    broken: Path


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Wheels:
    work = tmp_path_factory.mktemp("releases")
    version = ("gateway/__init__.py", f'__version__ = "{NEW}"')
    schema = "gateway/store/schema.py"
    old = _wheel(
        work,
        "old",
        [
            (*version, f'__version__ = "{OLD}"'),
            # The previous release knew one step fewer: the upgrade migrates.
            (schema, "SCHEMA_VERSION = len(MIGRATIONS)", "MIGRATIONS = MIGRATIONS[:-1]\nSCHEMA_VERSION = len(MIGRATIONS)"),
        ],
    )
    new = _wheel(work, "new", [])
    broken = _wheel(
        work,
        "broken",
        [
            (*version, f'__version__ = "{BROKEN}"'),
            (
                "gateway/camera/server.py",
                "    async def _plate(self, plate: PlateResult, peer: Origin) -> bytes:\n",
                "    async def _plate(self, plate: PlateResult, peer: Origin) -> bytes:\n"
                "        raise RuntimeError('a release that answers no plate')\n",
            ),
        ],
    )
    return Wheels(old=old, new=new, broken=broken)


@attrs.frozen
class Site:
    root: Path
    camera_port: int

    @property
    def prefix(self) -> Path:
        return self.root / "opt/anpr-gateway"

    @property
    def state(self) -> Path:
        return self.root / "var/lib/anpr-gateway"

    @property
    def copies(self) -> Path:
        return self.root / "var/backups/anpr-gateway"

    def install(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k not in ("ANPR_ROOT", "PYTHONPATH")}
        return subprocess.run(
            [
                "bash", str(INSTALL), "--root", str(self.root), "--python", sys.executable,
                "--service-mode", "direct", *args,
            ],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
        )

    def install_wheel(self, wheel: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return self.install(
            "--wheel", str(wheel), "--reuse-site-packages", sysconfig.get_paths()["purelib"], *args
        )

    def current(self) -> str:
        return os.readlink(self.prefix / "current")

    def running(self) -> bool:
        status = subprocess.run(
            [sys.executable, str(self.prefix / "libexec/service-direct.py"), "status",
             str(self.root / "run/anpr-gateway.pid")],
            timeout=30,
        )
        return status.returncode == 0

    def stop(self) -> None:
        helper = self.prefix / "libexec/service-direct.py"
        if helper.exists():
            subprocess.run(
                [sys.executable, str(helper), "stop", str(self.root / "run/anpr-gateway.pid"), "30"],
                timeout=120,
            )

    def plate(self, plateid: int) -> dict[str, object]:
        body = json.dumps(
            {
                "AlarmInfoPlate": {
                    "serialno": CAMERA,
                    "result": {"PlateResult": {"license": f"京B{plateid:05d}", "plateid": plateid}},
                }
            }
        ).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.camera_port}/plate",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            reply: dict[str, object] = json.loads(response.read())["Response_AlarmInfoPlate"]
        return reply

    def log(self) -> str:
        path = self.root / "var/log/anpr-gateway.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _database(path: Path) -> tuple[int, set[str]]:
    """(schema version, licenses of the plate events) of a database file."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        licenses = {row[0] for row in connection.execute("SELECT license FROM events WHERE license != ''")}
    finally:
        connection.close()
    return int(version), licenses


@pytest.fixture
def site(tmp_path: Path, wheels: Wheels) -> Iterator[Site]:
    root = tmp_path / "root"
    camera_port = _free_port()
    config = root / "etc/anpr-gateway/gateway.toml"
    config.parent.mkdir(parents=True)
    # The site's configuration is there before the first install, which keeps it.
    config.write_text(
        f'[gateway]\nstate_dir = "{root}/var/lib/anpr-gateway"\n'
        f'[camera_server]\nlisten = ["tcp:{camera_port}:interface=127.0.0.1"]\n'
        f'[admin]\nlisten = ["tcp:{_free_port()}:interface=127.0.0.1"]\n'
        f'[[lane]]\nname = "Exit"\ncamera = "{CAMERA}"\ndirection = "out"\n'
        'barrier_channel = 1\nunknown_plate = "allow"\n',
        encoding="utf-8",
    )
    site = Site(root=root, camera_port=camera_port)
    try:
        first = site.install_wheel(wheels.old, "--start")
        assert first.returncode == 0, first.stdout + first.stderr + site.log()
        assert f"installed {OLD} as {site.prefix / 'current'}" in first.stdout
        assert site.current() == f"releases/{OLD}" and site.running()
        yield site
    finally:
        site.stop()


def test_upgrade_migrates_then_rollback_restores_the_copy(site: Site, wheels: Wheels) -> None:
    before = {f"京B{plateid:05d}" for plateid in range(1, 21)}
    for plateid in range(1, 21):
        assert site.plate(plateid)["info"] == "ok"
    assert _database(site.state / "gateway.db")[0] == OLD_SCHEMA

    upgrade = site.install_wheel(wheels.new)
    output = upgrade.stdout + upgrade.stderr
    assert upgrade.returncode == 0, output + site.log()
    assert f"{NEW} is ready: 2 listeners up; plate SELFCHECK" in output
    assert f"upgraded {OLD} to {NEW}" in output
    assert site.current() == f"releases/{NEW}" and site.running()
    assert os.readlink(site.prefix / "previous") == f"releases/{OLD}"
    # The old virtualenv is kept, whole, for a rollback.
    assert (site.prefix / "releases" / OLD / "bin/twistd").exists()
    # The new version migrated the database, and every event is there.
    version, licenses = _database(site.state / "gateway.db")
    assert version == SCHEMA_VERSION and before <= licenses
    # The copy was taken before it opened the database.
    (copy,) = site.copies.glob(f"gateway-*-from-{OLD}-to-{NEW}.db")
    assert _database(copy) == (OLD_SCHEMA, before)
    assert site.plate(21)["info"] == "ok"

    rollback = site.install("--rollback")
    output = rollback.stdout + rollback.stderr
    assert rollback.returncode == 0, output + site.log()
    assert f"rolled back from {NEW} to {OLD}: {OLD} runs again, with the database as it was" in output
    assert site.current() == f"releases/{OLD}" and site.running()
    assert not (site.prefix / "previous").exists()
    assert _database(site.state / "gateway.db") == (OLD_SCHEMA, before)
    # What the new version wrote is kept aside, not deleted.
    (aside,) = site.copies.glob(f"rolled-back-*-from-{NEW}")
    assert "京B00021" in _database(aside / "gateway.db")[1]
    assert site.plate(22)["info"] == "ok"


def test_a_failed_self_check_rolls_back_to_the_old_release_and_database(
    site: Site, wheels: Wheels
) -> None:
    before = {f"京B{plateid:05d}" for plateid in range(1, 11)}
    for plateid in range(1, 11):
        assert site.plate(plateid)["info"] == "ok"
    old_twistd = (site.prefix / "releases" / OLD / "bin/twistd").read_bytes()

    upgrade = site.install_wheel(wheels.broken)
    output = upgrade.stdout + upgrade.stderr
    assert upgrade.returncode == 1, output
    # One paragraph says what happened and why.
    (paragraph,) = [line for line in upgrade.stdout.splitlines() if "was undone" in line]
    assert paragraph.startswith(
        f"anpr-gateway install: the upgrade from {OLD} to {BROKEN} was undone: its self-check failed ("
    ), paragraph
    assert "the plate pushed to 127.0.0.1" in paragraph
    assert f"{OLD} runs again, with the database as it was before the upgrade" in paragraph
    assert f"{BROKEN} stays installed in {site.prefix / 'releases' / BROKEN}" in paragraph

    # The old virtualenv, untouched, runs again.
    assert site.current() == f"releases/{OLD}" and site.running()
    assert (site.prefix / "releases" / OLD / "bin/twistd").read_bytes() == old_twistd
    # The database is the copy: the old schema, with every event written before.
    version, licenses = _database(site.state / "gateway.db")
    assert version == OLD_SCHEMA and licenses == before
    # The broken version had migrated its database: that one is kept aside.
    (aside,) = site.copies.glob(f"rolled-back-*-from-{BROKEN}")
    assert _database(aside / "gateway.db")[0] == SCHEMA_VERSION
    # And the old version answers plates again.
    assert site.plate(11)["info"] == "ok"
