"""Users and machine tokens made on the page, and the audit log.

Only admins may list or change accounts and read the audit log (viewers and
operators get 403, nobody signed in 401, a change without its CSRF token
403). Users made here sign in, are kept across a restart, can be disabled,
have their password reset, and be removed, each ending their sessions; a
user changes their own password; the last admin cannot lock everyone out;
the configuration file's accounts stay as they are. A token is shown once,
works as a bearer token, and its revocation ends it and the wall screens it
opened. Every change (and every sign-in) is in the audit log: who, what,
when, why."""

from __future__ import annotations

from typing import Any

from gateway.admin.settings import AdminUser
from support.admin import (
    ENTRANCE,
    HASHES,
    MACHINE_TOKEN,
    AdminTestCase,
    Client,
    default_settings,
)
from support.store import db_rows

NEW_PASSWORD = "gate-keeper-2041"

ADMIN_ROUTES: list[tuple[str, str, Any]] = [
    ("GET", "/api/users", None),
    ("POST", "/api/users", {"name": "ned", "role": "viewer", "password": NEW_PASSWORD}),
    ("PUT", "/api/users/ned", {"disabled": True}),
    ("DELETE", "/api/users/ned", None),
    ("GET", "/api/tokens", None),
    ("POST", "/api/tokens", {"name": "robot-2", "role": "viewer"}),
    ("DELETE", "/api/tokens/robot-2", None),
    ("GET", "/api/audit", None),
]


class UsersTestCase(AdminTestCase):
    async def admin(self) -> Client:
        client = Client(self.api)
        self.assertEqual((await client.login("ada")).status, 200)
        return client

    async def signed_in(self, name: str, password: str) -> Client:
        client = Client(self.api)
        reply = await client.login(name, password)
        self.assertEqual(reply.status, 200, reply.body)
        return client


class AccessTests(UsersTestCase):
    async def test_only_admins_and_only_with_csrf(self) -> None:
        await self.build()
        anonymous = Client(self.api)
        viewer, operator = Client(self.api), Client(self.api)
        await viewer.login("vera")
        await operator.login("olga")
        robot = Client(self.api, token=MACHINE_TOKEN)  # an operator token
        for method, path, body in ADMIN_ROUTES:
            self.assertEqual(
                (await anonymous.request(method, path, json_body=body)).status, 401, path
            )
            for client in (viewer, operator, robot):
                reply = await client.request(method, path, json_body=body)
                self.assertEqual(reply.status, 403, (method, path))
        admin = await self.admin()
        for method, path, body in ADMIN_ROUTES:
            if method != "GET":
                reply = await admin.request(method, path, json_body=body, csrf=False)
                self.assertEqual(reply.status, 403, (method, path))
                self.assertIn("CSRF", reply.json()["error"])
        # Nothing was made by any of them.
        self.assertEqual(
            db_rows(self.state_dir, "SELECT value FROM kv WHERE key = 'admin:tokens'"), []
        )
        users = (await admin.get("/api/users")).json()["users"]
        self.assertNotIn("ned", [user["name"] for user in users])

    async def test_a_viewer_changes_only_their_own_password(self) -> None:
        await self.build()
        await (await self.admin()).post(
            "/api/users", {"name": "wall-pc", "role": "viewer", "password": NEW_PASSWORD}
        )
        viewer = await self.signed_in("wall-pc", NEW_PASSWORD)
        reply = await viewer.post(
            "/api/session/password",
            {"current_password": NEW_PASSWORD, "new_password": "another-one-2042"},
            csrf=False,
        )
        self.assertEqual(reply.status, 403)
        reply = await viewer.post(
            "/api/session/password",
            {"current_password": NEW_PASSWORD, "new_password": "another-one-2042"},
        )
        self.assertEqual(reply.status, 204)
        self.assertEqual((await Client(self.api).login("wall-pc", "another-one-2042")).status, 200)
        # A token is no password to change.
        robot = Client(self.api, token=MACHINE_TOKEN)
        reply = await robot.post(
            "/api/session/password", {"current_password": "x", "new_password": NEW_PASSWORD}
        )
        self.assertEqual(reply.status, 400)


class UserTests(UsersTestCase):
    async def test_a_user_made_on_the_page_signs_in_and_is_kept(self) -> None:
        await self.build()
        admin = await self.admin()
        reply = await admin.post(
            "/api/users",
            {"name": "bao", "role": "operator", "password": NEW_PASSWORD, "reason": "night shift"},
        )
        self.assertEqual(reply.status, 201, reply.body)
        self.assertEqual(
            reply.json(), {"name": "bao", "role": "operator", "source": "store", "disabled": False}
        )
        listed = {user["name"]: user for user in (await admin.get("/api/users")).json()["users"]}
        self.assertEqual(listed["bao"]["source"], "store")
        self.assertEqual(listed["ada"]["source"], "config")
        self.assertNotIn("password_hash", listed["bao"])
        bao = await self.signed_in("bao", NEW_PASSWORD)
        self.assertEqual((await bao.get("/api/session")).json()["role"], "operator")
        # The password is kept only as a scrypt hash.
        self.assertNotIn(NEW_PASSWORD.encode(), (self.state_dir / "gateway.db").read_bytes())
        # A restart keeps the user.
        api = await self.restarted()
        self.assertEqual((await Client(api).login("bao", NEW_PASSWORD)).status, 200)

    async def test_bad_users_are_refused_field_by_field(self) -> None:
        await self.build()
        admin = await self.admin()
        cases = [
            ({"name": "x", "role": "viewer", "password": "short"}, 400, "password"),
            ({"name": "two words", "role": "viewer", "password": NEW_PASSWORD}, 400, "name"),
            ({"name": "x", "role": "boss", "password": NEW_PASSWORD}, 400, "role"),
            ({"name": "Ada", "role": "viewer", "password": NEW_PASSWORD}, 409, "name"),
            ({"name": "door-robot", "role": "viewer", "password": NEW_PASSWORD}, 409, "name"),
            ({"name": "x", "role": "viewer"}, 400, "password"),
        ]
        for body, status, field in cases:
            reply = await admin.post("/api/users", body)
            self.assertEqual(reply.status, status, body)
            self.assertIn(field, reply.json().get("errors", {}), body)
        reply = await admin.post(
            "/api/users",
            {"name": "x", "role": "viewer", "password": NEW_PASSWORD, "reason": "r" * 501},
        )
        self.assertEqual(reply.status, 400)
        self.assertIn("reason", reply.json()["errors"])
        # The configuration file's users are changed in the file only.
        for reply in (
            await admin.request("PUT", "/api/users/olga", json_body={"disabled": True}),
            await admin.request("DELETE", "/api/users/olga"),
        ):
            self.assertEqual(reply.status, 409)
            self.assertIn("configuration file", reply.json()["error"])
        self.assertEqual((await admin.request("DELETE", "/api/users/nobody")).status, 404)

    async def test_disable_reset_and_remove_end_the_users_sessions(self) -> None:
        await self.build()
        admin = await self.admin()
        await admin.post(
            "/api/users", {"name": "bao", "role": "operator", "password": NEW_PASSWORD}
        )
        bao = await self.signed_in("bao", NEW_PASSWORD)

        reply = await admin.request("PUT", "/api/users/bao", json_body={"disabled": True})
        self.assertEqual((reply.status, reply.json()["disabled"]), (200, True))
        self.assertEqual((await bao.get("/api/session")).status, 401)
        self.assertEqual((await Client(self.api).login("bao", NEW_PASSWORD)).status, 401)
        await admin.request("PUT", "/api/users/bao", json_body={"disabled": False})
        bao = await self.signed_in("bao", NEW_PASSWORD)

        reply = await admin.request(
            "PUT", "/api/users/bao", json_body={"password": "reset-by-ada-99"}
        )
        self.assertEqual(reply.status, 200)
        self.assertEqual((await bao.get("/api/session")).status, 401)
        self.assertEqual((await Client(self.api).login("bao", NEW_PASSWORD)).status, 401)
        bao = await self.signed_in("bao", "reset-by-ada-99")

        reply = await admin.request("PUT", "/api/users/bao", json_body={"role": "viewer"})
        self.assertEqual(reply.json()["role"], "viewer")
        self.assertEqual((await bao.get("/api/session")).status, 401)
        bao = await self.signed_in("bao", "reset-by-ada-99")
        self.assertEqual((await bao.get("/api/session")).json()["role"], "viewer")

        cookie = bao.session_cookie(await Client(self.api).login("bao", "reset-by-ada-99"))
        self.assertEqual((await admin.request("DELETE", "/api/users/bao")).status, 204)
        self.assertEqual((await bao.get("/api/session")).status, 401)
        self.assertEqual((await Client(self.api).login("bao", "reset-by-ada-99")).status, 401)
        # Gone from the store too: a restart does not bring the session back.
        api = await self.restarted()
        self.assertEqual((await bao.moved_to(api, cookie).get("/api/session")).status, 401)

    async def test_changing_ones_password_signs_out_the_other_browsers(self) -> None:
        await self.build()
        admin = await self.admin()
        await admin.post(
            "/api/users", {"name": "bao", "role": "operator", "password": NEW_PASSWORD}
        )
        here = await self.signed_in("bao", NEW_PASSWORD)
        elsewhere = await self.signed_in("bao", NEW_PASSWORD)
        wrong = await here.post(
            "/api/session/password",
            {"current_password": "not-it-at-all", "new_password": "brand-new-pass-1"},
        )
        self.assertEqual((wrong.status, list(wrong.json()["errors"])), (400, ["current_password"]))
        short = await here.post(
            "/api/session/password", {"current_password": NEW_PASSWORD, "new_password": "short"}
        )
        self.assertEqual((short.status, list(short.json()["errors"])), (400, ["new_password"]))
        reply = await here.post(
            "/api/session/password",
            {"current_password": NEW_PASSWORD, "new_password": "brand-new-pass-1"},
        )
        self.assertEqual(reply.status, 204)
        self.assertEqual((await here.get("/api/session")).status, 200)
        self.assertEqual((await elsewhere.get("/api/session")).status, 401)
        self.assertEqual((await Client(self.api).login("bao", NEW_PASSWORD)).status, 401)
        self.assertEqual((await Client(self.api).login("bao", "brand-new-pass-1")).status, 200)
        # A user of the configuration file changes it there.
        olga = await self.operator()
        reply = await olga.post(
            "/api/session/password",
            {"current_password": "operator-pass-1", "new_password": "brand-new-pass-2"},
        )
        self.assertEqual(reply.status, 409)

    async def test_the_last_admin_cannot_be_disabled_demoted_or_removed(self) -> None:
        only_staff = default_settings(
            users=(AdminUser("olga", HASHES["olga"], "operator"),), tokens=()
        )
        await self.build(settings=only_staff)
        # Configured users, so no initial admin: an admin is made in the store.
        accounts: Any = self.users
        self.threads.at_once = True  # the password's hash, made at once
        await accounts.create_user("root", "admin", NEW_PASSWORD)
        self.threads.at_once = False
        root = await self.signed_in("root", NEW_PASSWORD)
        for body in ({"disabled": True}, {"role": "operator"}):
            reply = await root.request("PUT", "/api/users/root", json_body=body)
            self.assertEqual(reply.status, 409, body)
            self.assertIn("last admin", reply.json()["error"])
        self.assertEqual((await root.request("DELETE", "/api/users/root")).status, 409)
        await root.post("/api/users", {"name": "deputy", "role": "admin", "password": NEW_PASSWORD})
        self.assertEqual((await root.request("DELETE", "/api/users/root")).status, 204)


class TokenTests(UsersTestCase):
    async def test_a_token_is_shown_once_works_and_is_revoked(self) -> None:
        await self.build()
        admin = await self.admin()
        reply = await admin.post(
            "/api/tokens", {"name": "hall-wall", "role": "viewer", "reason": "hall"}
        )
        self.assertEqual(reply.status, 201)
        made = reply.json()
        token = made.pop("token")
        self.assertGreaterEqual(len(token), 40)
        self.assertEqual(
            made, {"name": "hall-wall", "role": "viewer", "source": "store", "disabled": False}
        )
        listed = (await admin.get("/api/tokens")).json()["tokens"]
        self.assertIn(
            {"name": "hall-wall", "role": "viewer", "source": "store", "disabled": False}, listed
        )
        self.assertNotIn(token, (await admin.get("/api/tokens")).body.decode())
        self.assertNotIn(token.encode(), (self.state_dir / "gateway.db").read_bytes())

        machine = Client(self.api, token=token)
        self.assertEqual((await machine.get("/api/cameras")).status, 200)
        self.assertEqual((await machine.post(f"/api/cameras/{ENTRANCE}/open", {})).status, 403)
        wall = Client(self.api)
        self.assertEqual((await wall.get(f"/wall?token={token}")).status, 303)
        self.assertEqual((await wall.get("/api/session")).status, 200)
        # Kept across a restart.
        api = await self.restarted()
        self.assertEqual((await Client(api, token=token).get("/api/cameras")).status, 200)

        self.assertEqual((await admin.request("DELETE", "/api/tokens/hall-wall")).status, 204)
        self.assertEqual((await machine.get("/api/cameras")).status, 401)
        self.assertEqual((await wall.get("/api/session")).status, 401)
        self.assertEqual((await admin.request("DELETE", "/api/tokens/hall-wall")).status, 404)
        # The configuration file's tokens are revoked in the file.
        reply = await admin.request("DELETE", "/api/tokens/door-robot")
        self.assertEqual(reply.status, 409)
        self.assertEqual(
            (await admin.post("/api/tokens", {"name": "door-robot", "role": "viewer"})).status, 409
        )
        self.assertEqual(
            (await admin.post("/api/tokens", {"name": "x", "role": "root"})).status, 400
        )


class AuditTests(UsersTestCase):
    async def test_who_did_what_when_and_why(self) -> None:
        await self.build()
        await self.camera_online()
        operator = await self.operator()
        reply = await operator.post(f"/api/cameras/{ENTRANCE}/open", {"reason": "emergency"})
        self.assertLess(reply.status, 300, reply.body)
        self.assertEqual((await operator.post("/api/whitelist", {"plate": "京A12345"})).status, 201)
        # Refused attempts are no actions.
        viewer = Client(self.api)
        await viewer.login("vera")
        self.assertEqual((await viewer.post(f"/api/cameras/{ENTRANCE}/open", {})).status, 403)
        admin = await self.admin()
        await admin.post(
            "/api/users",
            {"name": "bao", "role": "operator", "password": NEW_PASSWORD, "reason": "new hire"},
        )
        robot = Client(self.api, token=MACHINE_TOKEN)
        self.assertLess((await robot.post(f"/api/cameras/{ENTRANCE}/open", {})).status, 300)

        page = (await admin.get("/api/audit")).json()
        entries = page["entries"]
        summary = [
            (e["who"], e["role"], e["via"], e["action"], e["target"], e["reason"]) for e in entries
        ]
        self.assertEqual(
            summary,
            [
                ("door-robot", "operator", "token", "open_barrier", ENTRANCE, ""),
                ("ada", "admin", "session", "create_user", "bao", "new hire"),
                ("ada", "admin", "session", "sign_in", "127.0.0.1", ""),
                ("vera", "viewer", "session", "sign_in", "127.0.0.1", ""),
                ("olga", "operator", "session", "add_whitelist_entry", "京A12345", ""),
                ("olga", "operator", "session", "open_barrier", ENTRANCE, "emergency"),
                ("olga", "operator", "session", "sign_in", "127.0.0.1", ""),
            ],
        )
        self.assertEqual(entries[1]["detail"], {"role": "operator"})
        self.assertTrue(entries[0]["at"].endswith("+00:00"))
        self.assertIsNone(page["next_before"])
        # Paged, newest first.
        first = (await admin.get("/api/audit?limit=3")).json()
        self.assertEqual(
            [e["action"] for e in first["entries"]], ["open_barrier", "create_user", "sign_in"]
        )
        rest = (await admin.get(f"/api/audit?limit=10&before={first['next_before']}")).json()
        self.assertEqual(len(rest["entries"]), 4)
        self.assertEqual((await admin.get("/api/audit?limit=0")).status, 400)
        # No password is in the log.
        self.assertNotIn(NEW_PASSWORD.encode(), (self.state_dir / "gateway.db").read_bytes())
