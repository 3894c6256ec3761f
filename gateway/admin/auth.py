"""Authentication for the admin page and API: accounts, login sessions,
CSRF tokens, the login throttle, and the ``anpr-gateway-password`` tool.

* People log in with a name and password (``POST /api/login``) and get a
  session: a random id in an ``HttpOnly; SameSite=Strict`` cookie, kept in
  memory only (a restart logs everyone out), with a CSRF token the page
  sends back in ``X-CSRF-Token`` on every state-changing request.
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
import functools
import getpass
import hashlib
import hmac
import json
import os
import secrets
import sys
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TextIO

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from gateway.admin.settings import (
    ADMIN,
    AdminSettings,
    AdminToken,
    AdminUser,
    Role,
    hash_password,
    token_digest,
    verify_password,
)
from gateway.store import Store, StoreError

__all__ = [
    "INITIAL_PASSWORD_FILE",
    "USERS_KEY",
    "AdminAccounts",
    "LoginThrottle",
    "Principal",
    "Session",
    "SessionStore",
    "hash_password",
    "hash_password_main",
]

log = Logger()

#: The store key holding accounts created by the gateway itself (JSON list).
USERS_KEY = "admin:users"
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


@attrs.define
class Session:
    """A logged-in person. ``key`` is the SHA-256 of the cookie's id (the id
    itself is not kept, so a lookup reveals nothing by timing)."""

    key: str
    user: str
    role: Role
    csrf_token: str = attrs.field(repr=False)
    created_at: float
    expires_at: float


def _session_key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "replace")).hexdigest()


class SessionStore:
    """Login sessions, in memory, each valid for ``lifetime`` seconds from
    login. At most ``max_sessions`` are kept (the oldest go first)."""

    def __init__(self, clock: IReactorTime, lifetime: float, *, max_sessions: int = 1000) -> None:
        self._clock = clock
        self.lifetime = lifetime
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._ended: list[Callable[[Session], None]] = []

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self, user: str, role: Role) -> tuple[str, Session]:
        """A new session for ``user``: its cookie value (32 random bytes) and
        the session."""
        self._expire()
        while len(self._sessions) >= self.max_sessions:
            self._sessions.popitem(last=False)
        session_id = secrets.token_urlsafe(32)
        now = self._clock.seconds()
        session = Session(
            key=_session_key(session_id),
            user=user,
            role=role,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            expires_at=now + self.lifetime,
        )
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

    def end(self, session: Session) -> None:
        """Log a session out; whoever watches for it (live streams) is told at once."""
        self._sessions.pop(session.key, None)
        for observer in list(self._ended):
            try:
                observer(session)
            except Exception:
                log.failure("Session end observer {observer!r} failed", observer=observer)

    def on_end(self, observer: Callable[[Session], None]) -> None:
        """Call ``observer(session)`` when a session is logged out."""
        self._ended.append(observer)

    def _expire(self) -> None:
        now = self._clock.seconds()
        for key in [k for k, s in self._sessions.items() if s.expires_at <= now]:
            del self._sessions[key]


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
        """The user if ``password`` is theirs, else None. The scrypt check
        runs on a worker thread; an unknown name costs the same time."""
        user = self.user(name)

        def check() -> bool:
            encoded = user.password_hash if user is not None else _dummy_hash()
            return verify_password(password, encoded)

        matches: bool = await deferToThreadPool(self._reactor, self._reactor.getThreadPool(), check)
        return user if matches and user is not None else None

    def check_token(self, token: str) -> AdminToken | None:
        """The configured token whose digest ``token`` has, else None
        (every digest is compared, in constant time)."""
        digest = token_digest(token)
        found = None
        for candidate in self.settings.tokens:
            if hmac.compare_digest(candidate.sha256, digest):
                found = candidate
        return found

    # -- loading --------------------------------------------------------------

    async def load(self) -> None:
        """Read the stored users; create the initial admin if nobody can log in."""
        store = await self._open_store()
        self._stored = parse_stored_users(await store.kv_get(USERS_KEY))
        if not self.users:
            await self._create_initial_admin(store)
        self.loaded = True
        log.info(
            "Admin accounts: {users} users, {tokens} tokens",
            users=len(self.users),
            tokens=len(self.settings.tokens),
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
    if not text:
        return ()
    try:
        items = json.loads(text)
    except ValueError:
        log.error("The stored admin users ({key}) are not JSON; ignored", key=USERS_KEY)
        return ()
    users = []
    for item in items if isinstance(items, list) else []:
        try:
            users.append(
                AdminUser(name=item["name"], password_hash=item["password_hash"], role=item["role"])
            )
        except (KeyError, TypeError, ValueError):
            log.error("A stored admin user ({key}) is damaged; skipped", key=USERS_KEY)
    return tuple(users)


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
