"""The admin API commands the README and docs/operations.md give work as
written: the token is made with the documented shell lines, given to the
gateway as the documented ``[[admin.tokens]]`` table (or made on the page, as
the page makes it), and every documented ``curl`` to the admin API, run by
bash with the real curl against the gateway's real listener, succeeds with
JSON. Only the port is changed (the test's gateway listens on a free one)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest

from support import REPO, loopback_config
from support.gateway import GatewayTestCase

pytestmark = pytest.mark.system

DOCS = [REPO / "README.md", REPO / "docs" / "operations.md"]
DOCUMENTED = "127.0.0.1:8081"
_BLOCK = re.compile(r"^( *)```(\w+)\n(.*?)^\1```", re.MULTILINE | re.DOTALL)


def blocks(path: Path, language: str) -> list[str]:
    """The code blocks of ``language`` in ``path``, unindented."""
    found = []
    for indent, lang, body in _BLOCK.findall(path.read_text(encoding="utf-8")):
        if lang == language:
            found.append("\n".join(line[len(indent) :] for line in body.splitlines()))
    return found


def shell_lines(path: Path) -> list[str]:
    return [line.strip() for block in blocks(path, "sh") for line in block.splitlines() if line.strip()]


def documented_curls(path: Path) -> list[str]:
    return [line for line in shell_lines(path) if line.startswith("curl ") and DOCUMENTED in line]


def bash(script: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=30, env=env
    )


class DocumentedCurlTests(GatewayTestCase):
    def setUp(self) -> None:
        for tool in ("curl", "bash", "sha256sum"):
            if shutil.which(tool) is None:
                raise SkipTest(f"{tool} is not installed")

    def test_every_documented_admin_curl_sends_a_token(self) -> None:
        for path in DOCS:
            curls = documented_curls(path)
            self.assertTrue(curls, f"{path.name} shows no curl to the admin API")
            for line in curls:
                # Without credentials the admin API answers 401.
                self.assertIn('-H "Authorization: Bearer $TOKEN"', line, f"{path.name}: {line}")
                self.assertIn("-sf", line, f"{path.name}: {line} (a failure must show)")

    async def make_token(self, path: Path) -> tuple[str, dict[str, Any]]:
        """The token and the ``[[admin.tokens]]`` table, made as ``path`` says."""
        lines = shell_lines(path)
        made = [line for line in lines if line.startswith("TOKEN=$(")]
        digested = [line for line in lines if line.startswith('printf %s "$TOKEN" | sha256sum')]
        self.assertEqual((len(made), len(digested)), (1, 1), path.name)
        result = await deferToThread(bash, f'{made[0]}\necho "$TOKEN"\n{digested[0]}')
        self.assertEqual(result.returncode, 0, result.stderr)
        token, digest = result.stdout.split()
        self.assertRegex(digest, r"^[0-9a-f]{64}$")
        (table_text,) = [b for b in blocks(path, "toml") if "[[admin.tokens]]" in b]
        (table,) = tomllib.loads(table_text)["admin"]["tokens"]
        self.assertIn("<the 64 hex digits", table["sha256"])
        return token, {**table, "sha256": digest}

    async def run_curls(self, path: Path, token: str) -> None:
        port = self.gateway.admin_port
        folder = Path(self.mktemp())
        folder.mkdir(parents=True)
        for line in documented_curls(path):
            command = line.split("  #", 1)[0].replace(DOCUMENTED, f"127.0.0.1:{port}")
            saved = re.search(r" -o (\S+)", command)
            command = f"cd {folder} && {command}"
            result = await deferToThread(bash, command, {"TOKEN": token, "PATH": "/usr/bin:/bin"})
            self.assertEqual(result.returncode, 0, f"{line}: {result.stderr}")
            if saved is not None:
                # A file for a spreadsheet: events or parking sessions as
                # CSV, with their header.
                written = (folder / saved.group(1)).read_text(encoding="utf-8-sig")
                header = "entered,left," if "sessions" in saved.group(1) else "time,type,lane,"
                self.assertTrue(written.startswith(header), line)
            else:
                self.assertIsInstance(json.loads(result.stdout), dict, line)

    async def test_a_token_from_the_configuration_as_documented(self) -> None:
        for path in DOCS:
            token, table = await self.make_token(path)
            gateway = await self.start(loopback_config(admin={"tokens": [table]}))
            await self.run_curls(path, token)
            # The same lines without the token get the 401 the docs warn of.
            port = gateway.admin_port
            result = await deferToThread(
                bash, f"curl -sf http://127.0.0.1:{port}/api/cameras", {"PATH": "/usr/bin:/bin"}
            )
            self.assertEqual(result.returncode, 22, result)  # curl -f: HTTP 4xx

    async def test_a_token_made_on_the_page(self) -> None:
        gateway = await self.start()
        port = gateway.admin_port
        password_file = Path(gateway.service.config.gateway.state_dir) / "initial-admin-password"
        for _ in range(200):  # bounded: 10 s
            if password_file.exists():
                break
            await deferLater(reactor, 0.05, lambda: None)
        password = password_file.read_text(encoding="ascii").strip()
        # What the page does: sign in, then Users, Create token.
        script = (
            f"jar=$(mktemp); base=http://127.0.0.1:{port}\n"
            'csrf=$(curl -sf -c "$jar" -H "Content-Type: application/json" '
            f"-d '{{\"username\": \"admin\", \"password\": \"{password}\"}}' \"$base/api/login\" "
            "| python3 -c 'import json,sys; print(json.load(sys.stdin)[\"csrf_token\"])')\n"
            'curl -sf -b "$jar" -H "Content-Type: application/json" -H "X-CSRF-Token: $csrf" '
            "-d '{\"name\": \"scripts\", \"role\": \"viewer\"}' \"$base/api/tokens\"\n"
            'rm -f "$jar"'
        )
        result = await deferToThread(bash, script, {"PATH": "/usr/bin:/bin"})
        self.assertEqual(result.returncode, 0, result.stderr)
        token = json.loads(result.stdout)["token"]
        for path in DOCS:
            await self.run_curls(path, token)
