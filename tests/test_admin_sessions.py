"""Sign-ins that survive a restart, and the wall screen's sign-in by token.

The sessions are kept in the store by the SHA-256 of their cookie (never the
cookie); a restart (the API built again over the same store, with nothing
kept in memory) finds them again, CSRF token and all. Signing out, an
account removed from the configuration and an expiry end them for good.
A wall screen opens ``/wall?token=`` once with a viewer token and stays
signed in as a viewer for ``wall_session_days``."""

from __future__ import annotations

import hashlib
import io
from typing import Any

import attrs
from twisted.internet.defer import Deferred

from gateway.admin.auth import AdminAccounts
from gateway.admin.root import build_admin, session_store
from support.admin import (
    ENTRANCE,
    MACHINE_TOKEN,
    SCRAPER_TOKEN,
    AdminTestCase,
    Client,
    default_settings,
)
from support.store import db_rows
from support.threads import global_reactor

PLATE = {"plate": "京A12345"}


class RestartTests(AdminTestCase):
    async def test_a_sign_in_survives_a_restart_with_its_csrf_token(self) -> None:
        await self.build()
        browser = Client(self.api)
        login = await browser.login("olga")
        cookie = browser.session_cookie(login)

        after = browser.moved_to(await self.restarted(), cookie)
        session = await after.get("/api/session")
        self.assertEqual(session.status, 200)
        self.assertEqual(session.json()["user"], "olga")
        self.assertEqual(session.json()["csrf_token"], browser.csrf)
        # Changes still need the CSRF token, and it is the same one.
        self.assertEqual((await after.post("/api/whitelist", PLATE, csrf=False)).status, 403)
        self.assertEqual((await after.post("/api/whitelist", PLATE)).status, 201)

    async def test_only_a_digest_of_the_cookie_is_stored(self) -> None:
        await self.build()
        browser = Client(self.api)
        cookie = browser.session_cookie(await browser.login("olga"))
        session_id = cookie.split("=", 1)[1]
        rows = db_rows(self.state_dir, "SELECT key, user, role, origin FROM admin_sessions")
        digest = hashlib.sha256(session_id.encode()).hexdigest()
        self.assertEqual(rows, [(digest, "olga", "operator", "password")])
        self.assertNotIn(session_id.encode(), (self.state_dir / "gateway.db").read_bytes())

    async def test_signing_out_ends_the_session_across_a_restart(self) -> None:
        await self.build()
        browser = Client(self.api)
        cookie = browser.session_cookie(await browser.login("olga"))
        other = Client(self.api)
        other_cookie = other.session_cookie(await other.login("vera"))
        self.assertEqual((await browser.post("/api/logout")).status, 204)

        api = await self.restarted()
        self.assertEqual((await browser.moved_to(api, cookie).get("/api/session")).status, 401)
        # Another browser's sign-in is untouched.
        self.assertEqual((await other.moved_to(api, other_cookie).get("/api/session")).status, 200)
        self.assertEqual(db_rows(self.state_dir, "SELECT user FROM admin_sessions"), [("vera",)])

    async def test_expired_sessions_are_not_read_back_and_are_deleted(self) -> None:
        await self.build(settings=default_settings(session_hours=1))
        browser = Client(self.api)
        cookie = browser.session_cookie(await browser.login("olga"))
        self.clock.advance(3600)
        api = await self.restarted()
        self.assertEqual((await browser.moved_to(api, cookie).get("/api/session")).status, 401)
        self.assertEqual(db_rows(self.state_dir, "SELECT user FROM admin_sessions"), [])

    async def test_a_user_removed_from_the_configuration_is_signed_out(self) -> None:
        await self.build()
        browser = Client(self.api)
        cookie = browser.session_cookie(await browser.login("olga"))
        settings: Any = self.api_arguments["settings"]
        without_olga = default_settings(
            users=tuple(user for user in settings.users if user.name != "olga")
        )
        api = await self.restarted(without_olga)
        self.assertEqual((await browser.moved_to(api, cookie).get("/api/session")).status, 401)
        self.assertEqual(db_rows(self.state_dir, "SELECT user FROM admin_sessions"), [])

    async def test_a_role_lowered_in_the_configuration_counts_at_once(self) -> None:
        await self.build()
        browser = Client(self.api)
        cookie = browser.session_cookie(await browser.login("olga"))
        settings: Any = self.api_arguments["settings"]
        lowered = default_settings(
            users=tuple(
                attrs.evolve(user, role="viewer") if user.name == "olga" else user
                for user in settings.users
            )
        )
        after = browser.moved_to(await self.restarted(lowered), cookie)
        self.assertEqual((await after.get("/api/session")).json()["role"], "viewer")
        self.assertEqual((await after.post("/api/whitelist", PLATE)).status, 403)

    async def test_while_the_sessions_are_read_back_a_cookie_gets_503_not_401(self) -> None:
        await self.build()
        browser = Client(self.api)
        cookie = browser.session_cookie(await browser.login("olga"))
        reading: Deferred[Any] = Deferred()
        sessions = session_store(self.clock, self.api_arguments["settings"], lambda: reading)
        sessions.startService()

        def finish_reading() -> None:
            if not reading.called:
                reading.callback(self.store)

        self.addCleanup(finish_reading)
        api = build_admin(**{**self.api_arguments, "sessions": sessions})
        early = await browser.moved_to(api, cookie).get("/api/session")
        self.assertEqual(early.status, 503)
        self.assertEqual(early.header("retry-after"), "2")
        # No cookie at all is still simply "log in first".
        self.assertEqual((await Client(api).get("/api/session")).status, 401)
        # And a login waits for them too (it would be lost otherwise).
        self.assertEqual((await Client(api).login("vera")).status, 503)
        reading.callback(self.store)
        self.assertTrue(sessions.loaded)
        self.assertEqual((await browser.moved_to(api, cookie).get("/api/session")).status, 200)

    async def test_while_the_accounts_are_read_back_a_session_waits_and_is_kept(self) -> None:
        await self.build()
        browser = Client(self.api)
        cookie = browser.session_cookie(await browser.login("ada"))
        # The stored accounts are not read yet (the initial admin's "ada" is
        # configured here; a stored user would look unknown): 503, and the
        # session is not taken for one of a removed user.
        loading = AdminAccounts(
            self.api_arguments["settings"],
            reactor=global_reactor,
            state_dir=str(self.state_dir),
            open_store=lambda: Deferred(),
            terminal=io.StringIO(),
        )
        sessions = session_store(
            self.clock, self.api_arguments["settings"], self.store_service.when_open
        )
        await sessions.load()
        api = build_admin(**{**self.api_arguments, "users": loading, "sessions": sessions})
        early = browser.moved_to(api, cookie)
        self.assertEqual((await early.get("/api/session")).status, 503)
        # A configured token is good at once: nothing in the store can revoke it.
        robot = Client(api, token=MACHINE_TOKEN)
        self.assertEqual((await robot.get("/api/cameras")).status, 200)
        # Any other token is neither good nor bad yet.
        stranger = Client(api, token="not-a-configured-token")
        self.assertEqual((await stranger.get("/api/cameras")).status, 503)
        self.assertEqual(len(db_rows(self.state_dir, "SELECT key FROM admin_sessions")), 1)
        self.assertEqual(
            (await browser.moved_to(await self.restarted(), cookie).get("/api/session")).status, 200
        )


class WallScreenTests(AdminTestCase):
    async def test_a_viewer_token_in_the_address_becomes_a_long_session(self) -> None:
        await self.build()
        wall = Client(self.api)
        reply = await wall.get(f"/wall?token={SCRAPER_TOKEN}")
        self.assertEqual(reply.status, 303)
        self.assertEqual(reply.header("location"), "/#lanes")
        self.assertEqual(reply.header("cache-control"), "no-store")
        cookie = reply.header("set-cookie") or ""
        self.assertIn("Max-Age=31536000", cookie)  # 365 days by default
        self.assertIn("HttpOnly", cookie)
        self.assertIn("SameSite=strict", cookie)
        session = (await wall.get("/api/session")).json()
        self.assertEqual(
            {k: session[k] for k in ("user", "role", "wall")},
            {"user": "prometheus", "role": "viewer", "wall": True},
        )
        # It sees, and may change nothing, even with its CSRF token.
        wall.csrf = session["csrf_token"]
        self.assertEqual((await wall.get("/api/cameras")).status, 200)
        self.assertEqual((await wall.post(f"/api/cameras/{ENTRANCE}/open", {})).status, 403)
        self.assertEqual((await wall.post("/api/whitelist", PLATE)).status, 403)
        # It stays signed in for days, and across a restart.
        self.clock.advance(300 * 86400)
        after = wall.moved_to(await self.restarted(), wall.session_cookie(reply))
        self.assertEqual((await after.get("/api/session")).status, 200)
        self.clock.advance(66 * 86400)
        self.assertEqual((await after.get("/api/session")).status, 401)

    async def test_the_wall_session_lasts_as_configured(self) -> None:
        await self.build(settings=default_settings(wall_session_days=7))
        reply = await Client(self.api).get(f"/wall?token={SCRAPER_TOKEN}")
        self.assertIn(f"Max-Age={7 * 86400}", reply.header("set-cookie") or "")

    async def test_only_a_viewer_token_and_wrong_ones_are_throttled(self) -> None:
        await self.build()
        operator_token = await Client(self.api).get(f"/wall?token={MACHINE_TOKEN}")
        self.assertEqual(operator_token.status, 403)
        self.assertIn("viewer token", operator_token.json()["error"])
        self.assertIsNone(operator_token.header("set-cookie"))
        self.assertEqual((await Client(self.api).get("/wall")).status, 400)
        for _ in range(5):
            self.assertEqual((await Client(self.api).get("/wall?token=guess")).status, 401)
        locked = await Client(self.api).get(f"/wall?token={SCRAPER_TOKEN}")
        self.assertEqual(locked.status, 429)
        self.assertIsNotNone(locked.header("retry-after"))

    async def test_a_token_taken_out_of_the_configuration_ends_its_wall_screens(self) -> None:
        await self.build()
        wall = Client(self.api)
        cookie = wall.session_cookie(await wall.get(f"/wall?token={SCRAPER_TOKEN}"))
        settings: Any = self.api_arguments["settings"]
        without = default_settings(
            tokens=tuple(token for token in settings.tokens if token.name != "prometheus")
        )
        api = await self.restarted(without)
        self.assertEqual((await wall.moved_to(api, cookie).get("/api/session")).status, 401)

    async def test_a_wall_session_signs_out_like_any_other(self) -> None:
        await self.build()
        wall = Client(self.api)
        cookie = wall.session_cookie(await wall.get(f"/wall?token={SCRAPER_TOKEN}"))
        wall.csrf = (await wall.get("/api/session")).json()["csrf_token"]
        self.assertEqual((await wall.post("/api/logout")).status, 204)
        api = await self.restarted()
        self.assertEqual((await wall.moved_to(api, cookie).get("/api/session")).status, 401)
