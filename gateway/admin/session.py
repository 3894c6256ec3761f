"""Logging in and out of the admin page: ``/api/login``, ``/api/logout``,
``/api/session``.

A login gives a session cookie (``HttpOnly``, ``SameSite=Strict``, ``Secure``
over HTTPS) and the CSRF token the page sends back on every change. Failed
logins are throttled per client address, per user name and in all.
"""

from __future__ import annotations

import math
from typing import Protocol

from twisted.logger import Logger
from twisted.web.http import Request
from twisted.web.iweb import IRequest

from gateway.admin.access import SESSION_COOKIE, Access, authorized, open_route
from gateway.admin.auth import LoginThrottle, Principal, SessionStore
from gateway.admin.http import (
    ApiError,
    admin_app,
    client_address,
    json_body,
    json_response,
    no_content,
)
from gateway.admin.settings import VIEWER, AdminUser

__all__ = ["Accounts", "SessionResource"]

log = Logger()


class Accounts(Protocol):
    """The people who may log in (:class:`~gateway.admin.auth.AdminAccounts`)."""

    @property
    def loaded(self) -> bool: ...

    def user(self, name: str) -> AdminUser | None: ...

    async def check_password(self, name: str, password: str) -> AdminUser | None: ...


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
    ) -> None:
        self.access = access
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
            raise ApiError(503, "the gateway is starting; try again in a moment")
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
        session_id, session = self._sessions.create(user.name, user.role)
        _session_cookie(request, session_id, int(self._sessions.lifetime))
        log.info(
            "Admin login: {user} ({role}) from {address}",
            user=user.name,
            role=user.role,
            address=address,
        )
        return json_response(
            request, {"user": user.name, "role": user.role, "csrf_token": session.csrf_token}
        )

    @open_route(
        app,
        "/api/logout",
        methods=["POST"],
        reason="logging out always clears the cookie; a session's own CSRF token is checked",
    )
    def logout(self, request: IRequest) -> bytes:
        principal = self.access.principal(request)
        if principal is not None and principal.session is not None:
            self.access.authorize(request, VIEWER)  # the CSRF check
            self._sessions.end(principal.session)
            log.info("Admin logout: {user}", user=principal.name)
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
            },
        )
