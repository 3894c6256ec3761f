"""Authentication for the admin page and API: accounts, login sessions,
CSRF tokens, the login throttle, and the ``anpr-gateway-password`` tool.

* People log in with a name and password (``POST /api/login``) and get a
  session: a random id in an ``HttpOnly; SameSite=Strict`` cookie, with a
  CSRF token the page sends back in ``X-CSRF-Token`` on every
  state-changing request. Sessions are kept in the store by the SHA-256 of
  the id (never the id), so a restart signs nobody out. A wall screen opens
  ``/wall?token=<viewer token>`` once and gets a long-lived viewer session.
* Machines send ``Authorization: Bearer <token>``; only the token's SHA-256
  digest is configured.
* Accounts come from the configuration and from the store (key
  ``admin:users``). A first start with no account at all creates ``admin``
  with a random password, written to ``<state_dir>/initial-admin-password``
  (mode 0600) and printed once on the terminal, never to the log.
* Failed logins are counted per client address; too many lock the address
  out for a while, doubling with each further failure.

Passwords, tokens and session ids never reach the log.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import getpass
import hashlib
import hmac
import json
import os
import secrets
import sys
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TextIO, TypeVar, cast

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredLock, succeed
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from gateway.admin.settings import (
    ADMIN,
    ROLES,
    VIEWER,
    AdminSettings,
    AdminToken,
    AdminUser,
    Role,
    hash_password,
    password_problem,
    token_digest,
    verify_password,
)
from gateway.schema import ConfigError
from gateway.store import AdminSessionRow, Store, StoreError

__all__ = [
    "INITIAL_PASSWORD_FILE",
    "PASSWORD_ORIGIN",
    "TOKEN_ORIGIN",
    "USERS_KEY",
    "TOKENS_KEY",
    "AccountError",
    "AdminAccounts",
    "LoginThrottle",
    "Principal",
    "Session",
    "SessionStore",
    "hash_password",
    "hash_password_main",
]

log = Logger()

#: The store key holding accounts created by the gateway itself or on the
#: page (JSON list).
USERS_KEY = "admin:users"
#: The store key holding machine tokens created on the page (digests only).
TOKENS_KEY = "admin:tokens"
#: The most users and tokens the page may keep (each).
MAX_STORED_ACCOUNTS = 500
#: Where the first start leaves the generated admin password.
INITIAL_PASSWORD_FILE = "initial-admin-password"
INITIAL_USER = "admin"


@functools.cache
def _dummy_hash() -> str:
    # A hash to check wrong user names against, so that a name that does not
    # exist takes as long to refuse as a wrong password (no probing for user
    # names by timing).
    return hash_password(secrets.token_urlsafe(16))


@attrs.frozen
class Principal:
    """Who is making a request: a logged-in person or a machine token."""

    name: str
    role: Role
    via: str  # "session" or "token"
    session: Session | None = None


#: How a session was opened: by a person's password, or by a wall screen's
#: viewer token opened once in a URL (``GET /wall?token=...``).
PASSWORD_ORIGIN = "password"
TOKEN_ORIGIN = "token"


@attrs.define
class Session:
    """A logged-in person (or wall screen). ``key`` is the SHA-256 of the
    cookie's id (the id itself is not kept, so a lookup reveals nothing by
    timing, and a copy of the store opens no session)."""

    key: str
    user: str
    role: Role
    csrf_token: str = attrs.field(repr=False)
    created_at: float
    expires_at: float
    origin: str = PASSWORD_ORIGIN

    def row(self) -> AdminSessionRow:
        return AdminSessionRow(
            key=self.key,
            user=self.user,
            role=self.role,
            origin=self.origin,
            csrf_token=self.csrf_token,
            created_at=self.created_at,
            expires_at=self.expires_at,
        )


def _session_key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "replace")).hexdigest()


class SessionStore(Service):
    """Login sessions, each valid for ``lifetime`` seconds from login (a
    wall screen's for ``wall_lifetime``). At most ``max_sessions`` are kept
    (the oldest go first).

    With ``open_store`` (``StoreService.when_open``) they are kept in the
    store as well, so that a restart signs nobody out: read back when the
    service starts (:attr:`loaded`), written before a login is answered,
    deleted when a session ends. Lookups are in memory, on the reactor.
    Without it (a test of another part) they live in memory only.
    """

    def __init__(
        self,
        clock: IReactorTime,
        lifetime: float,
        *,
        wall_lifetime: float | None = None,
        max_sessions: int = 1000,
        open_store: Callable[[], Awaitable[Store]] | None = None,
    ) -> None:
        self.setName("admin-sessions")
        self._clock = clock
        self.lifetime = lifetime
        self.wall_lifetime = lifetime if wall_lifetime is None else wall_lifetime
        self.max_sessions = max_sessions
        self._open_store = open_store
        self._store: Store | None = None
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._ended: list[Callable[[Session], None]] = []
        #: Whether the kept sessions were read back (always, without a store).
        self.loaded = open_store is None
        self._loading: Deferred[None] | None = None
        self._waiters: list[Deferred[None]] = []

    def __len__(self) -> int:
        return len(self._sessions)

    # -- service ------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        if self._open_store is not None and not self.loaded:
            self._loading = Deferred.fromCoroutine(self.load())
            self._loading.addErrback(self._load_failed)

    def _load_failed(self, failure: Failure) -> None:
        if failure.check(StoreError):
            if self.running:
                log.error(
                    "The admin page's sessions could not be read back: {reason}",
                    reason=str(failure.value),
                )
            return
        log.failure("The admin page's sessions could not be read back", failure)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        loading = self._loading
        return loading if loading is not None else succeed(None)

    async def load(self) -> None:
        """Read back the sessions kept in the store (the expired ones go)."""
        assert self._open_store is not None
        store = await self._open_store()
        rows = await store.admin_sessions(self._clock.seconds())
        for row in rows[-self.max_sessions :]:
            if row.role not in ROLES:
                continue
            self._sessions[row.key] = Session(
                key=row.key,
                user=row.user,
                role=row.role,
                csrf_token=row.csrf_token,
                created_at=row.created_at,
                expires_at=row.expires_at,
                origin=row.origin,
            )
        self._store = store
        self.loaded = True
        log.info("Admin page sessions read back: {count}", count=len(self._sessions))
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def when_loaded(self) -> Deferred[None]:
        """Fires once the kept sessions are read back."""
        if self.loaded:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._waiters.append(waiter)
        return waiter

    # -- sessions -------------------------------------------------------------

    async def create(
        self, user: str, role: Role, *, origin: str = PASSWORD_ORIGIN
    ) -> tuple[str, Session]:
        """A new session for ``user``: its cookie value (32 random bytes) and
        the session, kept (in the store too) before this returns."""
        forget = self._expire()
        while len(self._sessions) + 1 > self.max_sessions:
            key, _ = self._sessions.popitem(last=False)
            forget.append(key)
        session_id = secrets.token_urlsafe(32)
        now = self._clock.seconds()
        lifetime = self.wall_lifetime if origin == TOKEN_ORIGIN else self.lifetime
        session = Session(
            key=_session_key(session_id),
            user=user,
            role=role,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            expires_at=now + lifetime,
            origin=origin,
        )
        if self._store is not None:
            await self._store.put_admin_session(session.row(), forget)
        self._sessions[session.key] = session
        return session_id, session

    def get(self, session_id: str) -> Session | None:
        """The live session with this cookie value, or None."""
        session = self._sessions.get(_session_key(session_id))
        if session is None:
            return None
        if session.expires_at <= self._clock.seconds():
            del self._sessions[session.key]
            return None
        return session

    def alive(self, session: Session) -> bool:
        """Whether ``session`` is still logged in."""
        return (
            self._sessions.get(session.key) is session
            and session.expires_at > self._clock.seconds()
        )

    def end(self, session: Session) -> Deferred[None]:
        """Log a session out, at once here (whoever watches for it, live
        streams, is told now); the Deferred fires once the store forgot it."""
        return self._end([session])

    def end_all(
        self, user: str, origin: str = PASSWORD_ORIGIN, *, keep: Session | None = None
    ) -> Deferred[None]:
        """End every session of ``user`` (opened by ``origin``) but ``keep``:
        a changed password, a disabled or removed user, a revoked token."""
        wanted = user.casefold()
        return self._end(
            [
                session
                for session in self._sessions.values()
                if session.origin == origin
                and session.user.casefold() == wanted
                and session is not keep
            ]
        )

    def sessions_of(self, user: str, origin: str = PASSWORD_ORIGIN) -> list[Session]:
        """The live sessions of ``user`` opened by ``origin``."""
        wanted = user.casefold()
        now = self._clock.seconds()
        return [
            session
            for session in self._sessions.values()
            if session.origin == origin
            and session.user.casefold() == wanted
            and session.expires_at > now
        ]

    def _end(self, sessions: Sequence[Session]) -> Deferred[None]:
        for session in sessions:
            self._sessions.pop(session.key, None)
            for observer in list(self._ended):
                try:
                    observer(session)
                except Exception:
                    log.failure("Session end observer {observer!r} failed", observer=observer)
        store = self._store
        if store is None or not sessions:
            return succeed(None)
        keys = [session.key for session in sessions]

        async def forget() -> None:
            await store.delete_admin_sessions(keys)

        return Deferred.fromCoroutine(forget())

    def on_end(self, observer: Callable[[Session], None]) -> None:
        """Call ``observer(session)`` when a session is logged out."""
        self._ended.append(observer)

    def _expire(self) -> list[str]:
        now = self._clock.seconds()
        expired = [k for k, s in self._sessions.items() if s.expires_at <= now]
        for key in expired:
            del self._sessions[key]
        return expired


@attrs.define
class _Failures:
    count: int = 0
    last: float = 0.0
    locked_until: float = 0.0


class LoginThrottle:
    """Failed logins: per client address, per user name, and in all.

    After ``max_failures`` failures in a row from an address, or for a user
    name from any address, that address (or name) is locked out for
    ``base_lock`` seconds; each further failure once the lock ends locks it
    again for twice as long, up to ``max_lock``. Past ``max_failures_in_all``
    failures across every address and name, every login waits the same way:
    guesses spread over many addresses are throttled too. A success starts
    the counts of its address and its name again (not of another name: a
    valid viewer login between guesses at ``admin`` resets nothing of those);
    ``forget_after`` seconds without a failure clear a count.
    At most ``max_addresses`` addresses and names are tracked (the longest
    quiet go first).
    """

    _IN_ALL = "*"

    def __init__(
        self,
        clock: IReactorTime,
        *,
        max_failures: int = 5,
        max_failures_in_all: int = 50,
        base_lock: float = 30.0,
        max_lock: float = 900.0,
        forget_after: float = 3600.0,
        max_addresses: int = 10_000,
    ) -> None:
        self._clock = clock
        self.max_failures = max_failures
        self.max_failures_in_all = max_failures_in_all
        self.base_lock = base_lock
        self.max_lock = max_lock
        self.forget_after = forget_after
        self.max_addresses = max_addresses
        self._addresses: OrderedDict[str, _Failures] = OrderedDict()

    def _keys(self, address: str, name: str | None) -> list[tuple[str, int]]:
        keys = [(address, self.max_failures), (self._IN_ALL, self.max_failures_in_all)]
        if name:
            keys.append(("user:" + name.casefold(), self.max_failures))
        return keys

    def retry_after(self, address: str, name: str | None = None) -> float | None:
        """Seconds until a login from ``address`` (as ``name``) may be tried
        again, or None when it may now."""
        now = self._clock.seconds()
        waits = [
            record.locked_until - now
            for key, _ in self._keys(address, name)
            if (record := self._record(key)) is not None
        ]
        wait = max(waits, default=0.0)
        return wait if wait > 0 else None

    def failed(self, address: str, name: str | None = None) -> float | None:
        """Count a failure; the lock-out it causes (seconds), if any."""
        now = self._clock.seconds()
        locks = []
        for key, limit in self._keys(address, name):
            record = self._record(key)
            if record is None:
                while len(self._addresses) >= self.max_addresses:
                    self._addresses.popitem(last=False)
                record = self._addresses[key] = _Failures()
            self._addresses.move_to_end(key)
            record.count += 1
            record.last = now
            if record.count >= limit:
                lock = min(self.max_lock, self.base_lock * 2.0 ** min(record.count - limit, 30))
                record.locked_until = max(record.locked_until, now + lock)
                locks.append(lock)
        return max(locks) if locks else None

    def succeeded(self, address: str, name: str | None = None) -> None:
        """A login counted by :meth:`failed` before its check succeeded: the
        counts of this address and this name start again, the count in all
        only loses this attempt. Guesses at another name from the same
        address stay counted under that name."""
        self._addresses.pop(address, None)
        if name:
            self._addresses.pop("user:" + name.casefold(), None)
        record = self._addresses.get(self._IN_ALL)
        if record is not None:
            record.count = max(0, record.count - 1)

    def _record(self, address: str) -> _Failures | None:
        record = self._addresses.get(address)
        if record is None:
            return None
        now = self._clock.seconds()
        if record.locked_until <= now and now - record.last >= self.forget_after:
            del self._addresses[address]
            return None
        return record


class AccountError(Exception):
    """A change to the accounts that cannot be made: ``status`` is the HTTP
    status it answers (400 bad value, 404 no such account, 409 conflict),
    ``field`` the request field at fault, if one is."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


@attrs.frozen
class AccountView:
    """An account as the page lists it (no hash, no digest)."""

    name: str
    role: Role
    source: str  # "config" (the file) or "store" (made on the page)
    disabled: bool = False

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "role": self.role,
            "source": self.source,
            "disabled": self.disabled,
        }


class AdminAccounts(Service):
    """The accounts allowed in: configured users and tokens, and users kept
    in the store. Loaded when the store opens (:meth:`when_loaded`); a
    first start with no user creates the initial ``admin``.

    ``open_store`` waits for the open store (``StoreService.when_open``).
    ``terminal`` is where the initial password is shown: by default the
    process's original stderr when it is a terminal, never the log.
    """

    def __init__(
        self,
        settings: AdminSettings,
        *,
        reactor: IReactorThreads,
        state_dir: str,
        open_store: Callable[[], Awaitable[Store]],
        terminal: TextIO | None = None,
    ) -> None:
        self.setName("admin-accounts")
        self.settings = settings
        self._reactor = reactor
        self._state_dir = state_dir
        self._open_store = open_store
        self._terminal = terminal
        self._stored: tuple[AdminUser, ...] = ()
        self._stored_tokens: tuple[AdminToken, ...] = ()
        self._store: Store | None = None
        self._changing = DeferredLock()
        self.loaded = False
        self._waiters: list[Deferred[None]] = []
        self._loading: Deferred[None] | None = None

    # -- service ------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._loading = Deferred.fromCoroutine(self.load())
        self._loading.addErrback(self._load_failed)

    def _load_failed(self, failure: Failure) -> None:
        if not self.running and failure.check(StoreError):
            # Stopped while loading: the store closed under it; nothing lost.
            return
        if failure.check(StoreError):
            log.error(
                "The admin accounts could not be loaded: {reason}", reason=str(failure.value)
            )
            return
        log.failure("The admin accounts could not be loaded", failure)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        loading = self._loading
        return loading if loading is not None else succeed(None)

    def when_loaded(self) -> Deferred[None]:
        if self.loaded:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._waiters.append(waiter)
        return waiter

    # -- lookups --------------------------------------------------------------

    @property
    def users(self) -> tuple[AdminUser, ...]:
        """Every user: the configured ones, then stored ones of other names."""
        configured = {user.name.casefold() for user in self.settings.users}
        return self.settings.users + tuple(
            user for user in self._stored if user.name.casefold() not in configured
        )

    def user(self, name: str) -> AdminUser | None:
        wanted = name.casefold()
        for user in self.users:
            if user.name.casefold() == wanted:
                return user
        return None

    async def check_password(self, name: str, password: str) -> AdminUser | None:
        """The user if ``password`` is theirs (and the user is not disabled),
        else None. The scrypt check runs on a worker thread; an unknown name
        costs the same time."""
        user = self.user(name)

        def check() -> bool:
            encoded = user.password_hash if user is not None else _dummy_hash()
            return verify_password(password, encoded)

        matches: bool = await deferToThreadPool(self._reactor, self._reactor.getThreadPool(), check)
        return user if matches and user is not None and not user.disabled else None

    @property
    def tokens(self) -> tuple[AdminToken, ...]:
        """Every token: the configured ones, then those made on the page."""
        configured = {token.name.casefold() for token in self.settings.tokens}
        return self.settings.tokens + tuple(
            token for token in self._stored_tokens if token.name.casefold() not in configured
        )

    def check_token(self, token: str) -> AdminToken | None:
        """The token whose digest ``token`` has, else None (every digest is
        compared, in constant time)."""
        digest = token_digest(token)
        found = None
        for candidate in self.tokens:
            if hmac.compare_digest(candidate.sha256, digest):
                found = candidate
        return found

    def token(self, name: str) -> AdminToken | None:
        """The token named ``name``, or None."""
        wanted = name.casefold()
        for candidate in self.tokens:
            if candidate.name.casefold() == wanted:
                return candidate
        return None

    def user_list(self) -> list[AccountView]:
        configured = {user.name.casefold() for user in self.settings.users}
        return [
            AccountView(
                name=user.name,
                role=user.role,
                source="config" if user.name.casefold() in configured else "store",
                disabled=user.disabled,
            )
            for user in self.users
        ]

    def token_list(self) -> list[AccountView]:
        configured = {token.name.casefold() for token in self.settings.tokens}
        return [
            AccountView(
                name=token.name,
                role=token.role,
                source="config" if token.name.casefold() in configured else "store",
            )
            for token in self.tokens
        ]

    # -- changes made on the page --------------------------------------------

    async def create_user(self, name: str, role: str, password: str) -> AccountView:
        """Add a user kept in the store."""
        problem = password_problem(password)
        if problem is not None:
            raise AccountError(400, f"password {problem}", "password")
        encoded = await self._hash(password)
        async with self._changes():
            if self.user(name) is not None or self._name_taken_by_token(name):
                raise AccountError(409, f"there is already an account named {name}", "name")
            if len(self._stored) >= MAX_STORED_ACCOUNTS:
                raise AccountError(409, f"at most {MAX_STORED_ACCOUNTS} users can be kept")
            user = _valid(lambda: AdminUser(name=name, password_hash=encoded, role=cast(Role, role)))
            await self._save_users(self._stored + (user,))
        return AccountView(name=user.name, role=user.role, source="store")

    async def change_user(
        self,
        name: str,
        *,
        role: str | None = None,
        disabled: bool | None = None,
        password: str | None = None,
    ) -> AccountView:
        """Change a user kept in the store: role, disabled, a new password."""
        encoded = None
        if password is not None:
            problem = password_problem(password)
            if problem is not None:
                raise AccountError(400, f"password {problem}", "password")
            encoded = await self._hash(password)
        async with self._changes():
            user = self._stored_user(name)
            changed = _valid(
                lambda: attrs.evolve(
                    user,
                    role=cast(Role, role) if role is not None else user.role,
                    disabled=disabled if disabled is not None else user.disabled,
                    password_hash=encoded if encoded is not None else user.password_hash,
                )
            )
            if (user.role == ADMIN and not user.disabled) and (
                changed.role != ADMIN or changed.disabled
            ):
                self._keep_an_admin(user)
            await self._save_users(
                tuple(changed if stored is user else stored for stored in self._stored)
            )
        return AccountView(
            name=changed.name, role=changed.role, source="store", disabled=changed.disabled
        )

    async def change_own_password(self, name: str, current: str, new: str) -> None:
        """A user's own new password, once ``current`` is checked."""
        problem = password_problem(new)
        if problem is not None:
            raise AccountError(400, f"new password {problem}", "new_password")
        self._stored_user(name)
        if await self.check_password(name, current) is None:
            raise AccountError(400, "the current password is wrong", "current_password")
        await self.change_user(name, password=new)

    async def remove_user(self, name: str) -> None:
        """Remove a user kept in the store."""
        async with self._changes():
            user = self._stored_user(name)
            if user.role == ADMIN and not user.disabled:
                self._keep_an_admin(user)
            await self._save_users(tuple(stored for stored in self._stored if stored is not user))

    async def create_token(self, name: str, role: str) -> tuple[str, AccountView]:
        """A new machine token kept in the store: the token itself (shown
        once, never kept) and its account."""
        async with self._changes():
            if self.token(name) is not None or self.user(name) is not None:
                raise AccountError(409, f"there is already an account named {name}", "name")
            if len(self._stored_tokens) >= MAX_STORED_ACCOUNTS:
                raise AccountError(409, f"at most {MAX_STORED_ACCOUNTS} tokens can be kept")
            secret = secrets.token_urlsafe(32)
            token = _valid(
                lambda: AdminToken(name=name, sha256=token_digest(secret), role=cast(Role, role))
            )
            await self._save_tokens(self._stored_tokens + (token,))
        return secret, AccountView(name=token.name, role=token.role, source="store")

    async def remove_token(self, name: str) -> None:
        """Revoke a token kept in the store."""
        async with self._changes():
            wanted = name.casefold()
            if any(token.name.casefold() == wanted for token in self.settings.tokens):
                raise AccountError(
                    409, f"{name} is configured in the gateway's configuration file; remove it there"
                )
            kept = tuple(t for t in self._stored_tokens if t.name.casefold() != wanted)
            if len(kept) == len(self._stored_tokens):
                raise AccountError(404, f"there is no token named {name}")
            await self._save_tokens(kept)

    def _name_taken_by_token(self, name: str) -> bool:
        return self.token(name) is not None

    def _stored_user(self, name: str) -> AdminUser:
        wanted = name.casefold()
        if any(user.name.casefold() == wanted for user in self.settings.users):
            raise AccountError(
                409, f"{name} is configured in the gateway's configuration file; change it there"
            )
        for user in self._stored:
            if user.name.casefold() == wanted:
                return user
        raise AccountError(404, f"there is no user named {name}")

    def _keep_an_admin(self, leaving: AdminUser) -> None:
        others = [
            user
            for user in self.users
            if user is not leaving and user.role == ADMIN and not user.disabled
        ]
        if not others:
            raise AccountError(409, "this is the last admin who can sign in; add another first")

    @contextlib.asynccontextmanager
    async def _changes(self) -> AsyncIterator[None]:
        if not self.loaded or self._store is None:
            raise AccountError(503, "the gateway is starting; try again in a moment")
        await self._changing.acquire()
        try:
            yield
        finally:
            self._changing.release()

    async def _hash(self, password: str) -> str:
        threads = self._reactor.getThreadPool()
        encoded: str = await deferToThreadPool(self._reactor, threads, hash_password, password)
        return encoded

    async def _save_users(self, users: tuple[AdminUser, ...]) -> None:
        assert self._store is not None
        await self._store.kv_set(USERS_KEY, json.dumps([user.to_json() for user in users]))
        self._stored = users

    async def _save_tokens(self, tokens: tuple[AdminToken, ...]) -> None:
        assert self._store is not None
        await self._store.kv_set(TOKENS_KEY, json.dumps([token.to_json() for token in tokens]))
        self._stored_tokens = tokens

    def session_role(self, origin: str, name: str) -> Role | None:
        """The role a session of ``name`` opened by ``origin`` has now: the
        user's (None once the user is gone), or viewer for a wall screen
        while its token is still a viewer token."""
        if origin == TOKEN_ORIGIN:
            token = self.token(name)
            return VIEWER if token is not None and token.role == VIEWER else None
        user = self.user(name)
        return user.role if user is not None and not user.disabled else None

    # -- loading --------------------------------------------------------------

    async def load(self) -> None:
        """Read the stored users; create the initial admin if nobody can log in."""
        store = await self._open_store()
        self._stored = parse_stored_users(await store.kv_get(USERS_KEY))
        self._stored_tokens = parse_stored_tokens(await store.kv_get(TOKENS_KEY))
        self._store = store
        if not self.users:
            await self._create_initial_admin(store)
        self.loaded = True
        log.info(
            "Admin accounts: {users} users, {tokens} tokens",
            users=len(self.users),
            tokens=len(self.tokens),
        )
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)

    async def _create_initial_admin(self, store: Store) -> None:
        password = secrets.token_urlsafe(15)
        threads = self._reactor.getThreadPool()
        encoded: str = await deferToThreadPool(self._reactor, threads, hash_password, password)
        user = AdminUser(name=INITIAL_USER, password_hash=encoded, role=ADMIN)
        # Stored before it is shown: a password shown must be one that works.
        await store.kv_set(USERS_KEY, json.dumps([user.to_json()]))
        self._stored = (user,)
        path = os.path.join(self._state_dir, INITIAL_PASSWORD_FILE)
        try:
            await deferToThreadPool(self._reactor, threads, _write_secret_file, path, password)
        except OSError as error:
            log.warn(
                "Created the admin user {user}; its password could not be written to "
                "{path} ({reason}): it is shown once on the terminal",
                user=INITIAL_USER,
                path=path,
                reason=error.strerror,
            )
        else:
            log.warn(
                "Created the admin user {user}; its password is in {path} "
                "(readable by this user only): change it, then delete the file",
                user=INITIAL_USER,
                path=path,
            )
        terminal = self._terminal
        if terminal is None:
            # Only a real terminal: under systemd, stderr goes to the journal,
            # and the password must not end up in a log.
            stderr = sys.__stderr__
            terminal = stderr if stderr is not None and stderr.isatty() else None
        if terminal is not None:
            print(
                f"anpr-gateway: created the admin page user {INITIAL_USER!r} "
                f"with password {password} (also in {path})",
                file=terminal,
                flush=True,
            )


def parse_stored_users(text: str | None) -> tuple[AdminUser, ...]:
    """The users kept in the store; a damaged entry is logged and skipped."""
    return _parse_stored(
        text,
        USERS_KEY,
        "user",
        lambda item: AdminUser(
            name=item["name"],
            password_hash=item["password_hash"],
            role=item["role"],
            disabled=item.get("disabled", False),
        ),
    )


def parse_stored_tokens(text: str | None) -> tuple[AdminToken, ...]:
    """The tokens kept in the store; a damaged entry is logged and skipped."""
    return _parse_stored(
        text,
        TOKENS_KEY,
        "token",
        lambda item: AdminToken(name=item["name"], sha256=item["sha256"], role=item["role"]),
    )


def _parse_stored(
    text: str | None, key: str, what: str, build: Callable[[Any], Stored]
) -> tuple[Stored, ...]:
    """The entries of a JSON list kept in the store under ``key``, each made
    by ``build``; a list that is not JSON, or a damaged entry, is logged and
    skipped."""
    if not text:
        return ()
    try:
        items = json.loads(text)
    except ValueError:
        log.error(f"The stored admin {what}s ({{key}}) are not JSON; ignored", key=key)
        return ()
    built = []
    for item in items if isinstance(items, list) else []:
        try:
            built.append(build(item))
        except (KeyError, TypeError, ValueError, AttributeError):
            log.error(f"A stored admin {what} ({{key}}) is damaged; skipped", key=key)
    return tuple(built)


T = TypeVar("T")
Stored = TypeVar("Stored")


def _valid(make: Callable[[], T]) -> T:
    # The settings classes check names and roles as the configuration does.
    try:
        return make()
    except ConfigError as error:
        raise AccountError(400, f"{error.path} {error.reason}", error.path) from None


def _write_secret_file(path: str, secret: str) -> None:
    # Created 0600 and made 0600 even if it was there before, so the secret
    # is never readable by others, not even for a moment.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (secret + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------
# anpr-gateway-password


def hash_password_main(argv: Sequence[str] | None = None) -> int:
    """``anpr-gateway-password``: read a password and print its hash, for
    ``password_hash`` in ``[[admin.users]]``.

    From a terminal the password is asked twice without echo; otherwise
    the first line of standard input is read (for scripts).
    """
    parser = argparse.ArgumentParser(
        prog="anpr-gateway-password",
        description=(
            "Print the scrypt hash of a password for [[admin.users]] password_hash "
            "in the gateway's configuration. Reads the password from the terminal "
            "(asked twice) or from the first line of standard input."
        ),
    )
    parser.parse_args(argv)
    stdin: Any = sys.stdin
    if stdin is not None and stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("anpr-gateway-password: the passwords differ", file=sys.stderr)
            return 1
    else:
        line = stdin.readline() if stdin is not None else ""
        password = line.rstrip("\r\n")
    if not password:
        print("anpr-gateway-password: no password given", file=sys.stderr)
        return 1
    print(hash_password(password))
    return 0
