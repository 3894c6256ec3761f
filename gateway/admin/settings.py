"""Who may use the admin page and API: the ``[admin]`` settings, password
hashes and token digests.

Pure: no Twisted, no I/O. Passwords are stored as scrypt hashes in a
self-describing text form::

    scrypt$n=16384,r=8,p=1$<salt, base64>$<hash, base64>

so the cost can be raised later without breaking existing hashes. Machine
tokens are configured as the SHA-256 hex digest of the token, never the token
itself: a leaked configuration file gives nobody access.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from typing import Literal

import attrs

from gateway.camera.settings import endpoint
from gateway.schema import (
    ConfigError,
    Section,
    boolean,
    describe,
    integer,
    number,
    one_of,
    setting,
    table,
    tables,
    text,
    text_list,
)

__all__ = [
    "ADMIN",
    "ADMIN_SECTION",
    "ATTENTION_KINDS",
    "ATTENTION_SOUNDS",
    "AttentionSettings",
    "DEFAULT_OPEN_REASONS",
    "MAX_PASSWORD_LENGTH",
    "MIN_PASSWORD_LENGTH",
    "OPERATOR",
    "ROLES",
    "VIEWER",
    "AdminSettings",
    "AdminToken",
    "AdminUser",
    "Role",
    "hash_password",
    "password_hash_problem",
    "password_problem",
    "role_allows",
    "token_digest",
    "verify_password",
]

Role = Literal["viewer", "operator", "admin"]
VIEWER: Role = "viewer"
OPERATOR: Role = "operator"
ADMIN: Role = "admin"
#: Roles from least to most powerful: each may do what the ones before it may.
ROLES: tuple[Role, ...] = (VIEWER, OPERATOR, ADMIN)
#: The shortest and longest password a user may be given on the page.
MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024
#: The reasons an operator may give for opening by hand, unless configured
#: (``[admin] open_reasons``); the page shows these in its own language.
DEFAULT_OPEN_REASONS: tuple[str, ...] = (
    "visitor",
    "delivery",
    "staff",
    "misread",
    "no_plate",
    "emergency",
    "other",
)


def role_allows(role: str, needed: str) -> bool:
    """Whether ``role`` may do what needs ``needed``."""
    if role not in ROLES or needed not in ROLES:
        return False
    return ROLES.index(role) >= ROLES.index(needed)


# --------------------------------------------------------------------------
# Password hashes

# scrypt's recommended interactive cost: about 16 MiB and 50 ms per check on a
# Raspberry Pi 4 class machine.
SCRYPT_N = 16384
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32
# Costs accepted when reading a hash: enough headroom to raise them, bounded so
# a hand-edited hash cannot make one login take minutes or gigabytes.
_MAX_N = 1 << 20
_MAX_R = 32
_MAX_P = 16
_MAX_MEMORY = 256 * 1024 * 1024

_HASH_RE = re.compile(
    r"scrypt\$n=(?P<n>\d{1,8}),r=(?P<r>\d{1,3}),p=(?P<p>\d{1,3})"
    r"\$(?P<salt>[A-Za-z0-9+/]+={0,2})\$(?P<hash>[A-Za-z0-9+/]+={0,2})"
)


@attrs.frozen
class _ParsedHash:
    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes


def _parse_hash(encoded: str) -> _ParsedHash:
    match = _HASH_RE.fullmatch(encoded.strip())
    if match is None:
        raise ValueError(
            "must look like scrypt$n=16384,r=8,p=1$<salt>$<hash> "
            "(make one with anpr-gateway-password)"
        )
    n, r, p = int(match["n"]), int(match["r"]), int(match["p"])
    if n < 2 or n & (n - 1) or n > _MAX_N:
        raise ValueError(f"scrypt n must be a power of 2 up to {_MAX_N}, got {n}")
    if not 1 <= r <= _MAX_R or not 1 <= p <= _MAX_P:
        raise ValueError(f"scrypt r must be 1-{_MAX_R} and p 1-{_MAX_P}, got r={r}, p={p}")
    if 128 * n * r > _MAX_MEMORY:
        raise ValueError("scrypt parameters need too much memory")
    try:
        salt = base64.b64decode(match["salt"], validate=True)
        digest = base64.b64decode(match["hash"], validate=True)
    except ValueError:
        raise ValueError("the salt or hash is not valid base64") from None
    if len(salt) < 8 or len(digest) < 16:
        raise ValueError("the salt or hash is too short")
    return _ParsedHash(n, r, p, salt, digest)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        maxmem=max(_MAX_MEMORY + 1024 * 1024, 132 * n * r),
        dklen=length,
    )


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """The stored form of ``password``: a fresh random salt, scrypt with the
    default cost, in the self-describing text form."""
    if not password:
        raise ValueError("a password must not be empty")
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, HASH_BYTES)
    return "scrypt$n={n},r={r},p={p}${salt}${hash}".format(
        n=SCRYPT_N,
        r=SCRYPT_R,
        p=SCRYPT_P,
        salt=base64.b64encode(salt).decode("ascii"),
        hash=base64.b64encode(digest).decode("ascii"),
    )


def password_problem(password: object) -> str | None:
    """Why ``password`` may not be a user's new password, or None."""
    if not isinstance(password, str):
        return "must be text"
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"must be at least {MIN_PASSWORD_LENGTH} characters"
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"must be at most {MAX_PASSWORD_LENGTH} characters"
    if password != password.strip():
        return "must not start or end with a space"
    return None


def password_hash_problem(encoded: str) -> str | None:
    """Why ``encoded`` is not a usable password hash, or None when it is
    (for the configuration check)."""
    try:
        _parse_hash(encoded)
    except ValueError as error:
        return str(error)
    return None


def verify_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches the hash ``encoded``. Compared in
    constant time; a malformed hash matches nothing. Slow on purpose (tens
    of milliseconds): call it off the reactor thread."""
    try:
        parsed = _parse_hash(encoded)
    except ValueError:
        return False
    digest = _scrypt(password, parsed.salt, parsed.n, parsed.r, parsed.p, len(parsed.digest))
    return hmac.compare_digest(digest, parsed.digest)


def token_digest(token: str) -> str:
    """The SHA-256 hex digest a bearer token is configured as."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------
# Settings

_DIGEST_RE = re.compile(r"[0-9a-f]{64}")

_name = text(
    pattern=r"[A-Za-z0-9._@-]{1,64}", rule="1-64 characters of A-Z, a-z, 0-9, \".\", \"_\", \"@\", \"-\""
)
_role = one_of(*ROLES)


def _password_hash(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(path, f"must be a string, got {describe(value)}")
    problem = password_hash_problem(value)
    if problem is not None:
        raise ConfigError(path, problem)
    return value


def _digest(value: object, path: str) -> str:
    if not isinstance(value, str) or _DIGEST_RE.fullmatch(value.strip().lower()) is None:
        raise ConfigError(
            path, "must be the 64 hex digits of the token's SHA-256 digest (see token_digest)"
        )
    return value.strip().lower()


@attrs.frozen
class AdminUser:
    """A person who logs in to the page (``[[admin.users]]`` or stored)."""

    name: str = setting(_name)
    password_hash: str = setting(_password_hash, repr=False)
    role: Role = setting(_role)
    # Kept, but may not sign in (its sessions end).
    disabled: bool = setting(boolean, default=False)

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "password_hash": self.password_hash,
            "role": self.role,
            "disabled": self.disabled,
        }


@attrs.frozen
class AdminToken:
    """A machine (a script, a Prometheus scraper) that sends
    ``Authorization: Bearer <token>``; only the token's digest is known
    (``[[admin.tokens]]``)."""

    name: str = setting(_name)
    sha256: str = setting(_digest, repr=False)
    role: Role = setting(_role)

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "sha256": self.sha256, "role": self.role}


USER = Section(AdminUser)
TOKEN = Section(AdminToken)

MIN_SESSION_HOURS = 0.25
MAX_SESSION_HOURS = 720.0
DEFAULT_SESSION_HOURS = 12.0
#: Twice the largest body an admin route reads (the plate-list CSV import).
MIN_ADMIN_BODY_BUDGET = 2 * 32 * 1024 * 1024


#: What calls for the booth's attention (``[admin.attention]``).
ATTENTION_KINDS = ("blacklist", "refused", "camera_offline", "display_fault", "cloud_down")
#: How each kind calls: a sound and a banner, a banner only (``silent``), or
#: nothing (``off``). The page makes the sounds itself (Web Audio).
ATTENTION_SOUNDS = ("alarm", "chime", "beep", "silent", "off")
_sound = one_of(*ATTENTION_SOUNDS)


@attrs.frozen
class AttentionSettings:
    """``[admin.attention]``: for each kind of trouble, the sound the page
    plays with its banner (``alarm``, ``chime``, ``beep``), a banner without
    sound (``silent``), or nothing (``off``). A banner stays until an
    operator acknowledges it."""

    blacklist: str = setting(_sound, default="alarm")
    refused: str = setting(_sound, default="chime")
    camera_offline: str = setting(_sound, default="beep")
    display_fault: str = setting(_sound, default="beep")
    cloud_down: str = setting(_sound, default="beep")

    def sound(self, kind: str) -> str:
        value: str = getattr(self, kind)
        return value

    def to_json(self) -> dict[str, str]:
        return {kind: self.sound(kind) for kind in ATTENTION_KINDS}


ATTENTION = Section(AttentionSettings)


def _endpoints(value: object, path: str) -> tuple[str, ...]:
    checked: tuple[str, ...] = text_list(item=endpoint, what="endpoint")(value, path)
    return checked


@attrs.frozen
class AdminSettings:
    """``[admin]``: the staff web page and API. No listeners means it is off.

    ``users`` log in to the page with a password; ``tokens`` are for
    machines. ``metrics_public`` serves ``/metrics`` without credentials (for
    a scraper on a trusted network). A login lasts ``session_hours``; a wall
    screen's session, opened with a viewer token, ``wall_session_days``.
    """

    listen: tuple[str, ...] = setting(_endpoints, default=("tcp:8081:interface=127.0.0.1",))
    users: tuple[AdminUser, ...] = setting(tables(USER, unique="name"), default=())
    tokens: tuple[AdminToken, ...] = setting(tables(TOKEN, unique="name"), default=())
    metrics_public: bool = setting(boolean, default=False)
    session_hours: float = setting(
        number(MIN_SESSION_HOURS, MAX_SESSION_HOURS), default=DEFAULT_SESSION_HOURS
    )
    # A wall screen's session (``/wall?token=``) lasts this many days.
    wall_session_days: float = setting(number(1, 3650), default=365.0)
    # Idle or flooding connections to the page cannot use up the gateway's
    # file descriptors (the cameras' port has its own limits).
    max_connections: int = setting(integer(8, 10_000), default=256)
    max_connections_per_address: int = setting(integer(2, 1_000), default=32)
    attention: AttentionSettings = setting(table(ATTENTION), factory=AttentionSettings)
    # Before any credential is checked: a client must send its headers in
    # time, its whole request in time and its body at a minimum rate, and
    # the bodies in memory at once are bounded (at least twice the largest
    # body a route takes, the 32 MiB plate-list import).
    header_timeout_seconds: float = setting(number(1, 120), default=30.0)
    request_timeout_seconds: float = setting(number(2, 3600), default=120.0)
    min_body_bytes_per_second: int = setting(integer(0, 104_857_600), default=16_384)
    body_memory_budget_bytes: int = setting(
        integer(MIN_ADMIN_BODY_BUDGET, 17_179_869_184), default=MIN_ADMIN_BODY_BUDGET
    )
    idle_timeout_seconds: int = setting(integer(5, 3600), default=60)
    # Why an operator opens the barrier or lets a car in by hand: the page
    # offers these (the known ones in the page's language), and a note.
    open_reasons: tuple[str, ...] = setting(
        text_list(item=text(max_length=64), min_items=1, what="reason"),
        default=DEFAULT_OPEN_REASONS,
    )

    def __attrs_post_init__(self) -> None:
        if self.request_timeout_seconds < self.header_timeout_seconds:
            raise ConfigError(
                "request_timeout_seconds",
                f"must be at least header_timeout_seconds ({self.header_timeout_seconds:g})",
            )
        seen: set[str] = set()
        for number_from_one, token in enumerate(self.tokens, start=1):
            if token.sha256 in seen:
                raise ConfigError(
                    f"tokens[{number_from_one}].sha256", "the same token is configured twice"
                )
            seen.add(token.sha256)


ADMIN_SECTION = Section(AdminSettings)
