"""Who gets into the admin API: password hashes, settings, the initial
admin account, sessions and their CSRF tokens, roles, bearer tokens, the
login throttle, and secrets kept out of the logs."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from gateway.admin.auth import INITIAL_PASSWORD_FILE, USERS_KEY, AdminAccounts, LoginThrottle
from gateway.admin.root import build_admin
from gateway.admin.settings import (
    ADMIN_SECTION,
    AdminSettings,
    AdminToken,
    AdminUser,
    hash_password,
    password_hash_problem,
    role_allows,
    token_digest,
    verify_password,
)
from gateway.schema import ConfigError
from gateway.store import StoreService
from support import CapturedLog
from support.admin import (
    BASE,
    ENTRANCE,
    HASHES,
    MACHINE_TOKEN,
    PASSWORDS,
    SCRAPER_TOKEN,
    AdminTestCase,
    Client,
    default_settings,
    settle,
)
from support.threads import global_reactor

REPO = Path(__file__).resolve().parents[1]


# -- hashes and settings ---------------------------------------------------------


def test_password_hash_round_trip_and_form() -> None:
    encoded = HASHES["olga"]
    assert encoded.startswith("scrypt$n=16384,r=8,p=1$")
    assert verify_password(PASSWORDS["olga"], encoded)
    assert not verify_password(PASSWORDS["olga"] + " ", encoded)
    assert not verify_password("", encoded)
    # A fresh salt every time.
    assert hash_password("same") != hash_password("same")
    assert password_hash_problem(encoded) is None


@pytest.mark.parametrize(
    "encoded",
    [
        "hunter2",
        "scrypt$n=16384,r=8,p=1$c2FsdA==",
        "scrypt$n=1000,r=8,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA==",
        "scrypt$n=16384,r=8,p=1$!!!$aGFzaGhhc2hoYXNoaGFzaA==",
        "scrypt$n=4194304,r=8,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA==",
        "pbkdf2$n=16384,r=8,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA==",
    ],
)
def test_malformed_hashes_match_nothing_and_say_why(encoded: str) -> None:
    assert password_hash_problem(encoded)
    assert not verify_password("hunter2", encoded)


def test_roles_are_ordered() -> None:
    assert role_allows("admin", "operator") and role_allows("operator", "operator")
    assert role_allows("viewer", "viewer")
    assert not role_allows("viewer", "operator") and not role_allows("operator", "admin")
    assert not role_allows("root", "viewer")


def test_settings_from_toml_and_their_errors() -> None:
    users = ADMIN_SECTION.parse(
        {
            "users": [
                {"name": "booth", "password_hash": HASHES["vera"], "role": "viewer"},
                {"name": "olga", "password_hash": HASHES["olga"], "role": "operator"},
            ]
        },
        "admin",
    ).users
    assert [(u.name, u.role) for u in users] == [("booth", "viewer"), ("olga", "operator")]
    digest = token_digest("secret-token")
    (token,) = ADMIN_SECTION.parse(
        {"tokens": [{"name": "scraper", "sha256": digest.upper(), "role": "viewer"}]}, "admin"
    ).tokens
    assert token.sha256 == digest

    def where(value: Any, key: str = "users") -> tuple[str, str]:
        with pytest.raises(ConfigError) as caught:
            ADMIN_SECTION.parse({key: value}, "admin")
        return caught.value.path.removeprefix(f"admin.{key}"), caught.value.reason

    assert where({"name": "x"})[0] == ""
    assert where([{"name": "a", "password_hash": HASHES["olga"], "role": "root"}])[0] == "[1].role"
    assert where([{"name": "a", "password_hash": "plain-password", "role": "admin"}])[0] == (
        "[1].password_hash"
    )
    assert (
        "anpr-gateway-password"
        in where([{"name": "a", "password_hash": "plain-password", "role": "admin"}])[1]
    )
    assert (
        where([{"name": "a b", "password_hash": HASHES["olga"], "role": "admin"}])[0] == "[1].name"
    )
    assert where([{"name": "a", "role": "admin"}]) == ("[1].password_hash", "missing required key")
    assert where([{"name": "a", "password_hash": HASHES["olga"], "role": "admin", "pw": "x"}])[
        0
    ] == ("[1].pw")
    same = {"name": "Olga", "password_hash": HASHES["olga"], "role": "admin"}
    assert where([same, {**same, "name": "olga"}])[0] == "[2].name"
    assert (
        where([{"name": "t", "sha256": "abc", "role": "viewer"}], "tokens")[0]
        == "[1].sha256"
    )
    twice = {"name": "t", "sha256": digest, "role": "viewer"}
    assert where([twice, {**twice, "name": "u"}], "tokens")[0] == "[2].sha256"
    with pytest.raises(ValueError):
        AdminSettings(session_hours=0)
    with pytest.raises(ValueError):
        AdminSettings(session_hours=1000)
    assert AdminSettings().session_hours == 12 and not AdminSettings().metrics_public


def _password_tool(stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from gateway.admin.auth import hash_password_main; "
            "sys.exit(hash_password_main([]))",
        ],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


@pytest.mark.system
def test_password_tool_reads_stdin_and_prints_a_hash() -> None:
    result = _password_tool("correct horse battery staple\nignored second line\n")
    assert result.returncode == 0, result.stderr
    encoded = result.stdout.strip()
    assert verify_password("correct horse battery staple", encoded)
    assert "correct horse" not in result.stdout + result.stderr
    empty = _password_tool("")
    assert empty.returncode == 1
    assert "no password" in empty.stderr


# -- accounts --------------------------------------------------------------------


class InitialAdminTests(AdminTestCase):
    settings = AdminSettings()

    async def test_first_start_creates_admin_once_and_shows_password_only_on_the_terminal(
        self,
    ) -> None:
        with CapturedLog() as captured:
            await self.build()
        shown = self.terminal.getvalue()
        password_file = self.state_dir / INITIAL_PASSWORD_FILE
        password = password_file.read_text().strip()
        self.assertGreaterEqual(len(password), 16)
        self.assertEqual(stat.S_IMODE(password_file.stat().st_mode), 0o600)
        self.assertIn(password, shown)
        self.assertIn(str(password_file), shown)
        texts = "\n".join(captured.texts())
        self.assertNotIn(password, texts)
        self.assertNotIn(password, repr([e for e in captured.events]))
        self.assertIn(str(password_file), texts)
        stored = json.loads(await self.store.kv_get(USERS_KEY))
        self.assertEqual([(u["name"], u["role"]) for u in stored], [("admin", "admin")])
        self.assertTrue(verify_password(password, stored[0]["password_hash"]))

        client = Client(self.api)
        login = await client.login("admin", password)
        self.assertEqual(login.status, 200)
        self.assertEqual(login.json()["role"], "admin")

        # The next start finds the stored user: nothing created, nothing shown.
        terminal = io.StringIO()
        again = AdminAccounts(
            AdminSettings(),
            reactor=global_reactor,
            state_dir=str(self.state_dir),
            open_store=self.store_service.when_open,
            terminal=terminal,
        )
        await again.load()
        self.assertEqual([u.name for u in again.users], ["admin"])
        self.assertEqual(terminal.getvalue(), "")
        self.assertEqual(password_file.read_text().strip(), password)

    async def test_configured_users_mean_no_initial_admin(self) -> None:
        await self.build(settings=default_settings())
        self.assertEqual(self.terminal.getvalue(), "")
        self.assertFalse((self.state_dir / INITIAL_PASSWORD_FILE).exists())
        self.assertIsNone(await self.store.kv_get(USERS_KEY))

    async def test_tokens_alone_still_create_a_user_for_the_page(self) -> None:
        await self.build(settings=AdminSettings(tokens=default_settings().tokens))
        self.assertTrue((self.state_dir / INITIAL_PASSWORD_FILE).exists())

    async def test_a_damaged_stored_list_is_skipped_not_fatal(self) -> None:
        state_dir = Path(self.mktemp())
        state_dir.mkdir(parents=True)
        store_service = StoreService(global_reactor, str(state_dir))
        store_service.startService()
        self.addCleanup(store_service.stopService)
        store = await store_service.when_open()
        good = AdminUser("kept", HASHES["ada"], "admin").to_json()
        await store.kv_set(USERS_KEY, json.dumps([{"name": "broken"}, good]))
        accounts = AdminAccounts(
            AdminSettings(users=(AdminUser("kept", HASHES["olga"], "operator"),)),
            reactor=global_reactor,
            state_dir=str(state_dir),
            open_store=store_service.when_open,
            terminal=io.StringIO(),
        )
        with CapturedLog() as captured:
            await accounts.load()
        self.assertTrue(any("damaged" in text for text in captured.texts()))
        # The configured user of the same name wins.
        self.assertEqual([(u.name, u.role) for u in accounts.users], [("kept", "operator")])
        self.assertIsNotNone(await accounts.check_password("kept", PASSWORDS["olga"]))
        self.assertIsNone(await accounts.check_password("kept", PASSWORDS["ada"]))


# -- the API's rules ------------------------------------------------------------------

READS = [
    "/api/session",
    "/api/cameras",
    "/api/events",
    "/api/events/p-event00000000001",
    "/api/events/p-event00000000001/image/full",
    "/api/whitelist",
    "/api/whitelist/export",
    "/api/status",
    "/api/stream",
    "/metrics",
]
ACTIONS: list[tuple[str, str, Any]] = [
    ("POST", f"/api/cameras/{ENTRANCE}/open", {}),
    ("POST", f"/api/cameras/{ENTRANCE}/close", {}),
    ("POST", f"/api/cameras/{ENTRANCE}/hold-open", {}),
    ("POST", f"/api/cameras/{ENTRANCE}/trigger", None),
    ("POST", f"/api/cameras/{ENTRANCE}/serial", {"channel": 0, "hex": "00"}),
    ("POST", f"/api/cameras/{ENTRANCE}/display", {"text": "hi"}),
    ("POST", f"/api/cameras/{ENTRANCE}/resync-whitelist", None),
    ("POST", f"/api/cameras/{ENTRANCE}/snapshot", None),
    ("POST", "/api/whitelist", {"plate": "京A12345"}),
    ("PUT", "/api/whitelist/%E4%BA%ACA12345", {"note": "x"}),
    ("DELETE", "/api/whitelist/%E4%BA%ACA12345", None),
    ("POST", "/api/whitelist/import", None),
    ("POST", "/api/dead-letters/p-event00000000001/replay", None),
]


class RuleTests(AdminTestCase):
    async def test_nothing_without_credentials(self) -> None:
        await self.build()
        anonymous = Client(self.api)
        for path in READS:
            reply = await anonymous.get(path)
            self.assertEqual(reply.status, 401, path)
            self.assertEqual(reply.json(), {"error": "log in first"}, path)
        for method, path, body in ACTIONS:
            reply = await anonymous.request(method, path, json_body=body)
            self.assertEqual(reply.status, 401, path)
        self.assertEqual(await self.store.whitelist_entries(), [])

    async def test_login_session_cookie_and_logout(self) -> None:
        await self.build()
        client = Client(self.api)
        wrong = await client.login("olga", "not-her-password")
        self.assertEqual(
            (wrong.status, wrong.json()), (401, {"error": "wrong user name or password"})
        )
        self.assertIsNone(wrong.header("set-cookie"))
        nobody = await client.login("mallory", "whatever")
        self.assertEqual(
            (nobody.status, nobody.json()), (401, {"error": "wrong user name or password"})
        )
        login = await client.login("olga")
        self.assertEqual(login.status, 200)
        body = login.json()
        self.assertEqual((body["user"], body["role"]), ("olga", "operator"))
        cookie = login.header("set-cookie") or ""
        attributes = [part.strip().lower() for part in cookie.split(";")]
        name, _, value = cookie.split(";")[0].partition("=")
        self.assertEqual(name, "anpr_session")
        self.assertGreaterEqual(len(value), 43)  # 32 random bytes
        self.assertIn("httponly", attributes)
        self.assertIn("samesite=strict", attributes)
        self.assertIn("path=/", attributes)
        self.assertNotIn("secure", attributes)
        session = (await client.get("/api/session")).json()
        self.assertEqual(
            session,
            {
                "user": "olga",
                "role": "operator",
                "csrf_token": body["csrf_token"],
                "wall": False,
                "timezone": "Asia/Shanghai",
            },
        )
        self.assertEqual((await client.post("/api/logout", csrf=False)).status, 403)
        logout = await client.post("/api/logout")
        self.assertEqual(logout.status, 204)
        self.assertIn("max-age=0", (logout.header("set-cookie") or "").lower())
        self.assertEqual((await client.get("/api/session")).status, 401)
        # A second logout is harmless.
        self.assertEqual((await Client(self.api).post("/api/logout")).status, 204)

    async def test_secure_cookie_over_https(self) -> None:
        await self.build()
        client = Client(self.api, base=BASE.replace("http:", "https:"))
        login = await client.login("vera")
        self.assertIn(
            "secure", [p.strip().lower() for p in (login.header("set-cookie") or "").split(";")]
        )
        self.assertEqual((await client.get("/api/session")).status, 200)

    async def test_login_needs_json_with_both_fields(self) -> None:
        await self.build()
        client = Client(self.api)
        form = await client.post(
            "/api/login",
            data=b"username=olga&password=x",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        self.assertEqual(form.status, 415)
        self.assertEqual((await client.post("/api/login", {"username": "olga"})).status, 400)
        self.assertEqual((await client.post("/api/login", ["olga", "x"])).status, 400)

    async def test_csrf_token_required_for_every_change(self) -> None:
        await self.build()
        await self.camera_online()
        client = await self.operator()
        token = client.csrf
        for method, path, body in ACTIONS[:-1]:
            missing = await client.request(method, path, json_body=body, csrf=False)
            self.assertEqual(missing.status, 403, path)
            self.assertIn("CSRF", missing.json()["error"])
            wrong = await client.request(
                method, path, json_body=body, headers={"X-CSRF-Token": (token or "") + "x"}
            )
            self.assertEqual(wrong.status, 403, path)
        # Another session's token is no good either.
        other = await self.operator()
        stolen = await client.post(
            f"/api/cameras/{ENTRANCE}/open", headers={"X-CSRF-Token": other.csrf or ""}
        )
        self.assertEqual(stolen.status, 403)
        camera = self.registry.get(ENTRANCE)
        assert camera is not None
        self.assertEqual(len(camera.commands), 0)
        self.assertEqual(await self.store.whitelist_entries(), [])
        done = await client.post(f"/api/cameras/{ENTRANCE}/open")
        self.assertEqual(done.status, 202)

    async def test_viewer_reads_but_cannot_act(self) -> None:
        await self.build()
        await self.camera_online()
        viewer = Client(self.api)
        await viewer.login("vera")
        for path in READS:
            if path in ("/api/stream",) or "/image/" in path or path.startswith("/api/events/p-"):
                continue
            self.assertEqual((await viewer.get(path)).status, 200, path)
        for method, path, body in ACTIONS:
            reply = await viewer.request(method, path, json_body=body)
            self.assertEqual(reply.status, 403, path)
            self.assertIn("viewer", reply.json()["error"])
        camera = self.registry.get(ENTRANCE)
        assert camera is not None
        self.assertEqual(len(camera.commands), 0)
        self.assertEqual(await self.store.whitelist_entries(), [])

    async def test_bearer_tokens(self) -> None:
        await self.build()
        await self.camera_online()
        robot = Client(self.api, token=MACHINE_TOKEN)
        # No session, so no CSRF token: the bearer token is the credential.
        opened = await robot.post(f"/api/cameras/{ENTRANCE}/open")
        self.assertEqual(opened.status, 202)
        session = (await robot.get("/api/session")).json()
        self.assertEqual(
            session,
            {
                "user": "door-robot",
                "role": "operator",
                "csrf_token": None,
                "wall": False,
                "timezone": "Asia/Shanghai",
            },
        )
        scraper = Client(self.api, token=SCRAPER_TOKEN)
        self.assertEqual((await scraper.get("/api/status")).status, 200)
        self.assertEqual((await scraper.post(f"/api/cameras/{ENTRANCE}/open")).status, 403)
        unknown = await Client(self.api, token="guess").get("/api/status")
        self.assertEqual(unknown.status, 401)
        self.assertIn("Bearer", unknown.header("www-authenticate") or "")
        basic = await Client(self.api).get(
            "/api/status", headers={"Authorization": "Basic b2xnYTp4"}
        )
        self.assertEqual(basic.status, 401)
        # A bad token is refused even with a good session cookie.
        client = await self.operator()
        mixed = await client.get("/api/status", headers={"Authorization": "Bearer guess"})
        self.assertEqual(mixed.status, 401)

    async def test_failed_logins_lock_the_address_with_growing_backoff(self) -> None:
        await self.build()
        client = Client(self.api)
        for attempt in range(5):
            self.assertEqual((await client.login("olga", f"wrong-{attempt}")).status, 401)
        locked = await client.login("olga")
        self.assertEqual(locked.status, 429)
        self.assertEqual(locked.header("retry-after"), "30")
        self.assertIsNone(client.csrf)
        self.clock.advance(29)
        self.assertEqual((await client.login("olga")).status, 429)
        self.clock.advance(1)
        # Once the lock ends, one more failure locks again, for twice as long.
        self.assertEqual((await client.login("olga", "wrong-again")).status, 401)
        again = await client.login("olga")
        self.assertEqual((again.status, again.header("retry-after")), (429, "60"))
        self.clock.advance(60)
        self.assertEqual((await client.login("olga")).status, 200)
        # A success clears the count.
        self.assertEqual((await client.login("olga", "wrong")).status, 401)
        self.assertEqual((await client.login("olga")).status, 200)

    async def test_sessions_expire(self) -> None:
        await self.build(settings=default_settings(session_hours=1))
        client = await self.operator()
        self.clock.advance(3599)
        self.assertEqual((await client.get("/api/session")).status, 200)
        self.clock.advance(1)
        self.assertEqual((await client.get("/api/session")).status, 401)

    async def test_secrets_never_logged(self) -> None:
        with CapturedLog() as captured:
            await self.build()
            client = Client(self.api)
            login = await client.login("olga")
            session_id = (login.header("set-cookie") or "").split(";")[0].split("=", 1)[1]
            await client.login("ada", "a-wrong-password-77")
            # A password typed into the user name field.
            await client.login(PASSWORDS["vera"], "x")
            await Client(self.api, token=MACHINE_TOKEN).post(f"/api/cameras/{ENTRANCE}/open")
            await Client(self.api, token="a-guessed-token-55").get("/api/status")
            await client.post("/api/whitelist", {"plate": "京A12345"})
            await client.post("/api/logout")
        texts = "\n".join(captured.texts())
        everything = texts + repr(captured.events)
        secrets = [
            *PASSWORDS.values(),
            "a-wrong-password-77",
            MACHINE_TOKEN,
            "a-guessed-token-55",
            session_id,
            client.csrf or "",
            *HASHES.values(),
        ]
        for secret in secrets:
            self.assertTrue(secret)
            self.assertNotIn(secret, everything)
        # What is logged: who logged in, failed, acted.
        self.assertIn("Admin login: olga (operator)", texts)
        self.assertIn("Failed admin login as ada", texts)
        self.assertIn("Failed admin login as (an unknown name)", texts)
        self.assertIn("olga (operator) added 1 plate", texts)
        self.assertIn("Admin logout: olga", texts)

    async def test_attempts_in_flight_count_at_once(self) -> None:
        await self.build()
        client = Client(self.api)
        body = json.dumps({"username": "olga", "password": "wrong"}).encode()
        waiting = [
            client.stub.post(
                BASE + "/api/login", data=body, headers={"Content-Type": ["application/json"]}
            )
            for _ in range(8)
        ]
        statuses = [(await settle(client.stub, d)).code for d in waiting]
        self.assertEqual(sorted(statuses), [401] * 5 + [429] * 3)

    async def test_accounts_still_loading_is_503(self) -> None:
        await self.build()
        loading = AdminAccounts(
            default_settings(),
            reactor=global_reactor,
            state_dir=str(self.state_dir),
            open_store=lambda: Deferred(),
            terminal=io.StringIO(),
        )
        loading.startService()
        api = build_admin(**{**self.api_arguments, "users": loading})
        reply = await Client(api).login("olga")
        self.assertEqual(reply.status, 503)
        self.assertIn("starting", reply.json()["error"])


class TokenSettingsTests(AdminTestCase):
    async def test_token_digest_is_what_is_configured(self) -> None:
        token = "door-robot-7f3a9c"
        settings = default_settings(tokens=(AdminToken("robot", token_digest(token), "admin"),))
        await self.build(settings=settings)
        robot = self.users.check_token(token)
        assert robot is not None
        self.assertEqual(robot.name, "robot")
        self.assertIsNone(self.users.check_token(token_digest(token)))
        self.assertIsNone(self.users.check_token(token.upper()))


def test_guesses_at_one_name_from_many_addresses_are_throttled() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock, max_failures=5, max_failures_in_all=1000)
    for number in range(5):
        assert throttle.retry_after(f"10.0.0.{number}", "admin") is None
        throttle.failed(f"10.0.0.{number}", "admin")
    # A sixth address, the same name: locked out, though the address is new.
    assert throttle.retry_after("10.0.0.99", "admin") == 30
    assert throttle.retry_after("10.0.0.99", "booth") is None


def test_a_valid_login_between_guesses_resets_nothing_of_the_guessed_name() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock, max_failures=5)
    for _ in range(4):
        throttle.failed("10.0.0.7", "admin")
    # A viewer's own login from the same address, counted then found valid.
    throttle.failed("10.0.0.7", "vera")
    throttle.succeeded("10.0.0.7", "vera")
    throttle.failed("10.0.0.7", "admin")
    assert throttle.retry_after("10.0.0.7", "admin") == 30


def test_guesses_spread_over_names_and_addresses_are_throttled_in_all() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock, max_failures=5, max_failures_in_all=20)
    for number in range(20):
        throttle.failed(f"10.0.{number}.1", f"user{number}")
    assert throttle.retry_after("192.0.2.1", "someone") == 30
    clock.advance(30)
    assert throttle.retry_after("192.0.2.1", "someone") is None
