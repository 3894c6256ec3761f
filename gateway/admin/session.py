"""Logging in and out of the admin page: ``/api/login``, ``/api/logout``,
``/api/session``, and ``/wall`` for a wall screen.

A login gives a session cookie (``HttpOnly``, ``SameSite=Strict``, ``Secure``
over HTTPS) and the CSRF token the page sends back on every change. Failed
logins are throttled per client address, per user name and in all.

A wall screen (a booth monitor nobody types at) opens
``/wall?token=<a viewer token>`` once: the token is checked, a long-lived
viewer session cookie is set, and the browser is sent on to the page without
the token in its address. Wrong tokens are throttled like wrong passwords.
"""

from __future__ import annotations

import math
from typing import Protocol

from twisted.logger import Logger
from twisted.web.http import Request
from twisted.web.iweb import IRequest

from gateway.admin.access import SESSION_COOKIE, Access, authorized, open_route
from gateway.admin.auth import (
    PASSWORD_ORIGIN,
    TOKEN_ORIGIN,
    LoginThrottle,
    Principal,
    Session,
    SessionStore,
)
from gateway.admin.http import (
    ApiError,
    admin_app,
    arg,
    client_address,
    common_headers,
    json_body,
    json_response,
    no_content,
)
from gateway.admin.settings import VIEWER, AdminToken, AdminUser, Role
from gateway.store import StoreError

__all__ = ["Accounts", "SessionResource"]

log = Logger()


class Accounts(Protocol):
    """The people who may log in (:class:`~gateway.admin.auth.AdminAccounts`)."""

    @property
    def loaded(self) -> bool: ...

    def user(self, name: str) -> AdminUser | None: ...

    async def check_password(self, name: str, password: str) -> AdminUser | None: ...

    def check_token(self, token: str) -> AdminToken | None: ...


def _session_cookie(request: IRequest, value: str, max_age: int) -> None:
    """The login cookie: script-proof, never sent cross-site, and over
    HTTPS only when the page came over HTTPS."""
    # twisted.web's Request: IRequest does not know addCookie's flags.
    assert isinstance(request, Request)
    request.addCookie(
        SESSION_COOKIE,
        value.encode("ascii"),
        path=b"/",
        max_age=str(max_age).encode("ascii"),
        httpOnly=True,
        sameSite="strict",
        secure=True if request.isSecure() else None,
    )


class SessionResource:
    """Login sessions: who is logged in, from where, for how long."""

    app = admin_app()

    def __init__(
        self,
        *,
        access: Access,
        accounts: Accounts,
        sessions: SessionStore,
        throttle: LoginThrottle,
        timezone: str = "UTC",
    ) -> None:
        self.access = access
        #: The site's time zone: the page shows every time in it.
        self._timezone = timezone
        self._accounts = accounts
        self._sessions = sessions
        self._throttle = throttle

    @open_route(
        app, "/api/login", methods=["POST"], reason="logging in is how credentials are got"
    )
    async def login(self, request: IRequest) -> bytes:
        address = client_address(request)
        body = json_body(request)
        name, password = body.get("username"), body.get("password")
        if not isinstance(name, str) or not isinstance(password, str) or not name or not password:
            raise ApiError(400, "username and password are required")
        wait = self._throttle.retry_after(address, name)
        if wait is not None:
            raise ApiError(
                429,
                "too many failed logins; try again later",
                headers={"Retry-After": str(math.ceil(wait))},
            )
        if not self._accounts.loaded:
            raise self.access.not_ready()
        # Counted before the (slow) check, so that many attempts at once
        # cannot all be checked before the first failure counts.
        self._throttle.failed(address, name)
        user = await self._accounts.check_password(name, password)
        if user is None:
            known = self._accounts.user(name)
            # A name that is no user may be a password typed in the wrong
            # field: it is not logged.
            log.warn(
                "Failed admin login as {user} from {address}",
                user=known.name if known is not None else "(an unknown name)",
                address=address,
            )
            raise ApiError(401, "wrong user name or password")
        self._throttle.succeeded(address, name)
        session_id, session = await self._new_session(user.name, user.role)
        _session_cookie(request, session_id, int(self._sessions.lifetime))
        log.info(
            "Admin login: {user} ({role}) from {address}",
            user=user.name,
            role=user.role,
            address=address,
        )
        await self._audit(Principal(user.name, user.role, "session", session), "sign_in", address)
        return json_response(
            request,
            {
                "user": user.name,
                "role": user.role,
                "csrf_token": session.csrf_token,
                "wall": False,
                "timezone": self._timezone,
            },
        )

    async def _audit(self, who: Principal, action: str, address: str) -> None:
        if self.access.audit is not None:
            await self.access.audit.record(who, action, target=address)

    async def _new_session(
        self, name: str, role: Role, origin: str = PASSWORD_ORIGIN
    ) -> tuple[str, Session]:
        if not self._sessions.loaded:
            raise self.access.not_ready()
        try:
            return await self._sessions.create(name, role, origin=origin)
        except StoreError as error:
            log.error("A sign-in could not be kept: {reason}", reason=str(error))
            raise ApiError(503, "the sign-in could not be kept (storage problem)") from None

    @open_route(
        app,
        "/wall",
        methods=["GET"],
        reason="a wall screen signs in here with the viewer token in its address",
    )
    async def wall(self, request: IRequest) -> bytes:
        address = client_address(request)
        token = (arg(request, "token") or "").strip()
        if not token or len(token) > 512:
            raise ApiError(400, "open /wall?token=<a viewer token>")
        wait = self._throttle.retry_after(address)
        if wait is not None:
            raise ApiError(
                429,
                "too many wrong tokens; try again later",
                headers={"Retry-After": str(math.ceil(wait))},
            )
        if not self._accounts.loaded:
            raise self.access.not_ready()
        found = self._accounts.check_token(token)
        if found is None:
            self._throttle.failed(address)
            log.warn("A wall screen at {address} sent an unknown token", address=address)
            raise ApiError(401, "unknown token")
        if found.role != VIEWER:
            # A token that can open barriers does not belong in an address bar.
            raise ApiError(403, f"a wall screen needs a viewer token; {found.name} is {found.role}")
        self._throttle.succeeded(address)
        session_id, session = await self._new_session(found.name, VIEWER, TOKEN_ORIGIN)
        _session_cookie(request, session_id, int(self._sessions.wall_lifetime))
        log.info(
            "Wall screen signed in with the token {token} from {address}",
            token=found.name,
            address=address,
        )
        await self._audit(Principal(found.name, VIEWER, "session", session), "wall_sign_in", address)
        common_headers(request)
        request.setResponseCode(303)
        request.setHeader(b"Location", b"/#lanes")
        request.setHeader(b"Cache-Control", b"no-store")
        return b""

    @open_route(
        app,
        "/api/logout",
        methods=["POST"],
        reason="logging out always clears the cookie; a session's own CSRF token is checked",
    )
    async def logout(self, request: IRequest) -> bytes:
        principal = self.access.principal(request)
        if principal is not None and principal.session is not None:
            self.access.authorize(request, VIEWER)  # the CSRF check
            log.info("Admin logout: {user}", user=principal.name)
            try:
                await self._sessions.end(principal.session)
            except StoreError as error:
                log.error("A sign-out could not be kept: {reason}", reason=str(error))
                raise ApiError(503, "the sign-out could not be kept (storage problem)") from None
            await self._audit(principal, "sign_out", client_address(request))
        _session_cookie(request, "", 0)
        return no_content(request)

    @authorized(app, "/api/session", methods=["GET"], role=VIEWER)
    def session(self, request: IRequest, who: Principal) -> bytes:
        return json_response(
            request,
            {
                "user": who.name,
                "role": who.role,
                "csrf_token": who.session.csrf_token if who.session else None,
                "wall": who.session is not None and who.session.origin == TOKEN_ORIGIN,
                "timezone": self._timezone,
            },
        )
