"""Users, machine tokens and the audit log on the page: ``/api/users``,
``/api/tokens``, ``/api/audit`` (admins only), and
``/api/session/password`` (anyone signed in, for their own password).

Users and tokens made here are kept in the store; those of the
configuration file are listed too, and cannot be changed here. Passwords
are at least :data:`~gateway.admin.settings.MIN_PASSWORD_LENGTH` characters
and kept as scrypt hashes; a token is shown once, when it is made, and only
its SHA-256 is kept. Disabling a user, resetting or changing a password,
changing a role and removing a user end that user's sessions; revoking a
token ends the wall screens it opened. Every change is in the audit log
(:mod:`gateway.admin.audit`) with the ``reason`` given.
"""

from __future__ import annotations

from twisted.logger import Logger
from twisted.web.iweb import IRequest

from gateway.admin.access import Access, authorized
from gateway.admin.audit import AuditLog, note, reason_of
from gateway.admin.auth import (
    PASSWORD_ORIGIN,
    TOKEN_ORIGIN,
    AccountError,
    AdminAccounts,
    Principal,
    SessionStore,
)
from gateway.admin.http import ApiError, admin_app, json_body, json_response, no_content
from gateway.admin.settings import ADMIN, MIN_PASSWORD_LENGTH, VIEWER

__all__ = ["UsersResource"]

log = Logger()


def _text(body: dict[str, object], name: str, *, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value):
        raise ApiError(400, f"{name} is required (text)", errors={name: "required"})
    return value


def _refused(error: AccountError) -> ApiError:
    errors = {error.field: error.message} if error.field else None
    return ApiError(error.status, error.message, errors=errors)


class UsersResource:
    """The page's accounts and audit log."""

    app = admin_app()

    def __init__(
        self,
        *,
        access: Access,
        accounts: AdminAccounts,
        sessions: SessionStore,
        audit: AuditLog,
    ) -> None:
        self.access = access
        self._accounts = accounts
        self._sessions = sessions
        self._audit = audit

    # -- users ------------------------------------------------------------------

    @authorized(app, "/api/users", methods=["GET"], role=ADMIN)
    def list_users(self, request: IRequest, who: Principal) -> bytes:
        return json_response(
            request,
            {
                "users": [user.to_json() for user in self._accounts.user_list()],
                "min_password_length": MIN_PASSWORD_LENGTH,
            },
        )

    @authorized(app, "/api/users", methods=["POST"], role=ADMIN)
    async def create_user(self, request: IRequest, who: Principal) -> bytes:
        body = json_body(request)
        reason_of(body)
        name = _text(body, "name") or ""
        role = _text(body, "role") or ""
        password = _text(body, "password") or ""
        try:
            created = await self._accounts.create_user(name.strip(), role, password)
        except AccountError as error:
            raise _refused(error) from None
        note(request, target=created.name, role=created.role)
        log.info(
            "{admin} added the {role} user {user}",
            admin=who.name,
            role=created.role,
            user=created.name,
        )
        return json_response(request, created.to_json(), 201)

    @authorized(app, "/api/users/<name>", methods=["PUT"], role=ADMIN)
    async def change_user(self, request: IRequest, who: Principal, name: str) -> bytes:
        body = json_body(request)
        reason_of(body)
        role = _text(body, "role", required=False)
        password = _text(body, "password", required=False)
        disabled = body.get("disabled")
        if disabled is not None and not isinstance(disabled, bool):
            raise ApiError(
                400, "disabled must be true or false", errors={"disabled": "true or false"}
            )
        if role is None and password is None and disabled is None:
            raise ApiError(400, "nothing to change: give role, disabled or password")
        try:
            changed = await self._accounts.change_user(
                name, role=role, disabled=disabled, password=password
            )
        except AccountError as error:
            raise _refused(error) from None
        # A new password, a new role or a disabled user: signed out everywhere.
        await self._sessions.end_all(changed.name, PASSWORD_ORIGIN)
        what = [
            part
            for part, given in (
                (f"role {role}", role is not None),
                ("disabled" if disabled else "enabled", disabled is not None),
                ("password reset", password is not None),
            )
            if given
        ]
        note(request, target=changed.name, changes=what)
        log.info(
            "{admin} changed the user {user}: {what}",
            admin=who.name,
            user=changed.name,
            what=", ".join(what),
        )
        return json_response(request, changed.to_json())

    @authorized(app, "/api/users/<name>", methods=["DELETE"], role=ADMIN)
    async def remove_user(self, request: IRequest, who: Principal, name: str) -> bytes:
        reason_of(json_body(request, required=False))
        try:
            await self._accounts.remove_user(name)
        except AccountError as error:
            raise _refused(error) from None
        await self._sessions.end_all(name, PASSWORD_ORIGIN)
        log.info("{admin} removed the user {user}", admin=who.name, user=name)
        return no_content(request)

    @authorized(app, "/api/session/password", methods=["POST"], role=VIEWER)
    async def change_password(self, request: IRequest, who: Principal) -> bytes:
        if who.session is None or who.session.origin != PASSWORD_ORIGIN:
            raise ApiError(400, "only a user signed in with a password can change it")
        body = json_body(request)
        current = _text(body, "current_password") or ""
        new = _text(body, "new_password") or ""
        try:
            await self._accounts.change_own_password(who.name, current, new)
        except AccountError as error:
            raise _refused(error) from None
        # Every other browser of this user signs in again; this one stays.
        await self._sessions.end_all(who.name, PASSWORD_ORIGIN, keep=who.session)
        log.info("{user} changed their password", user=who.name)
        note(request, target=who.name)
        return no_content(request)

    # -- tokens -----------------------------------------------------------------

    @authorized(app, "/api/tokens", methods=["GET"], role=ADMIN)
    def list_tokens(self, request: IRequest, who: Principal) -> bytes:
        return json_response(
            request, {"tokens": [token.to_json() for token in self._accounts.token_list()]}
        )

    @authorized(app, "/api/tokens", methods=["POST"], role=ADMIN)
    async def create_token(self, request: IRequest, who: Principal) -> bytes:
        body = json_body(request)
        reason_of(body)
        name = _text(body, "name") or ""
        role = _text(body, "role") or ""
        try:
            secret, created = await self._accounts.create_token(name.strip(), role)
        except AccountError as error:
            raise _refused(error) from None
        note(request, target=created.name, role=created.role)
        log.info(
            "{admin} made the {role} token {token}",
            admin=who.name,
            role=created.role,
            token=created.name,
        )
        # The only time the token is ever shown.
        return json_response(request, {**created.to_json(), "token": secret}, 201)

    @authorized(app, "/api/tokens/<name>", methods=["DELETE"], role=ADMIN)
    async def revoke_token(self, request: IRequest, who: Principal, name: str) -> bytes:
        reason_of(json_body(request, required=False))
        try:
            await self._accounts.remove_token(name)
        except AccountError as error:
            raise _refused(error) from None
        await self._sessions.end_all(name, TOKEN_ORIGIN)
        log.info("{admin} revoked the token {token}", admin=who.name, token=name)
        return no_content(request)

    # -- audit --------------------------------------------------------------------

    @authorized(app, "/api/audit", methods=["GET"], role=ADMIN)
    async def audit_log(self, request: IRequest, who: Principal) -> bytes:
        return await self._audit.page(request)
