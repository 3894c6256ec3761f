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
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import attrs

__all__ = [
    "ADMIN",
    "OPERATOR",
    "ROLES",
    "VIEWER",
    "AdminSettings",
    "AdminToken",
    "AdminUser",
    "Role",
    "SettingError",
    "hash_password",
    "password_hash_problem",
    "role_allows",
    "token_digest",
    "tokens_from_toml",
    "users_from_toml",
    "verify_password",
]

Role = Literal["viewer", "operator", "admin"]
VIEWER: Role = "viewer"
OPERATOR: Role = "operator"
ADMIN: Role = "admin"
#: Roles from least to most powerful: each may do what the ones before it may.
ROLES: tuple[Role, ...] = (VIEWER, OPERATOR, ADMIN)


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

_NAME_RE = re.compile(r"[A-Za-z0-9._@-]{1,64}")
_DIGEST_RE = re.compile(r"[0-9a-f]{64}")


def _check_name(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or _NAME_RE.fullmatch(value) is None:
        raise ValueError(
            f"{attribute.name} must be 1-64 characters of A-Z, a-z, 0-9, '.', '_', '@', '-'"
        )


def _check_role(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, got {value!r}")


def _check_hash(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    problem = password_hash_problem(value) if isinstance(value, str) else "must be a string"
    if problem is not None:
        raise ValueError(f"password_hash {problem}")


def _check_digest(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or _DIGEST_RE.fullmatch(value) is None:
        raise ValueError(
            "sha256 must be the 64 lower-case hex digits of the token's SHA-256 digest"
        )


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


@attrs.frozen
class AdminUser:
    """A person who logs in to the page (``[[admin.users]]`` or stored)."""

    name: str = attrs.field(validator=_check_name)
    password_hash: str = attrs.field(validator=_check_hash, repr=False)
    role: Role = attrs.field(validator=_check_role)

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "password_hash": self.password_hash, "role": self.role}


@attrs.frozen
class AdminToken:
    """A machine (a script, a Prometheus scraper) that sends
    ``Authorization: Bearer <token>``; only the token's digest is known."""

    name: str = attrs.field(validator=_check_name)
    sha256: str = attrs.field(converter=_lower, validator=_check_digest, repr=False)
    role: Role = attrs.field(validator=_check_role)


def _to_users(value: Iterable[AdminUser]) -> tuple[AdminUser, ...]:
    return tuple(value)


def _to_tokens(value: Iterable[AdminToken]) -> tuple[AdminToken, ...]:
    return tuple(value)


def _unique_names(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    seen: set[str] = set()
    for item in value:
        key = item.name.casefold()
        if key in seen:
            raise ValueError(f"{attribute.name}: the name {item.name!r} is used twice")
        seen.add(key)


def _check_session_hours(instance: object, attribute: object, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("session_hours must be a number")
    if not MIN_SESSION_HOURS <= value <= MAX_SESSION_HOURS:
        raise ValueError(
            f"session_hours must be between {MIN_SESSION_HOURS} and {MAX_SESSION_HOURS}"
        )


MIN_SESSION_HOURS = 0.25
MAX_SESSION_HOURS = 720.0
DEFAULT_SESSION_HOURS = 12.0


@attrs.frozen
class AdminSettings:
    """The ``[admin]`` settings beyond ``listen``.

    ``users`` log in to the page with a password; ``tokens`` are for
    machines. ``metrics_public`` serves ``/metrics`` without credentials (for
    a scraper on a trusted network). A login lasts ``session_hours``.
    """

    users: tuple[AdminUser, ...] = attrs.field(
        default=(), converter=_to_users, validator=_unique_names
    )
    tokens: tuple[AdminToken, ...] = attrs.field(
        default=(), converter=_to_tokens, validator=_unique_names
    )
    metrics_public: bool = False
    session_hours: float = attrs.field(
        default=DEFAULT_SESSION_HOURS, validator=_check_session_hours
    )


# --------------------------------------------------------------------------
# From TOML


class SettingError(ValueError):
    """A bad ``[admin]`` array item: ``where`` is the path below the key
    (``[2].role``, items numbered from 1), ``reason`` what is wrong."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


_USER_KEYS = ("name", "password_hash", "role")
_TOKEN_KEYS = ("name", "sha256", "role")


def _items(value: object, keys: tuple[str, ...]) -> list[tuple[str, Mapping[str, Any]]]:
    if not isinstance(value, (list, tuple)):
        raise SettingError("", "must be an array of tables")
    items = []
    for number, table in enumerate(value, start=1):
        where = f"[{number}]"
        if not isinstance(table, Mapping):
            raise SettingError(where, "must be a table")
        for key in table:
            if key not in keys:
                raise SettingError(f"{where}.{key}", f"unknown key (known: {', '.join(keys)})")
        for key in keys:
            if key not in table:
                raise SettingError(f"{where}.{key}", "missing required key")
            if not isinstance(table[key], str):
                raise SettingError(f"{where}.{key}", "must be a string")
        items.append((where, table))
    return items


def _build(where: str, build: Any, table: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    try:
        return build(**{key: table[key] for key in keys})
    except ValueError as error:
        reason = str(error)
        key = next((k for k in keys if reason.startswith(k)), None)
        if key is not None:
            reason = reason[len(key) :].strip()
        raise SettingError(f"{where}.{key}" if key else where, reason) from None


def users_from_toml(value: object) -> tuple[AdminUser, ...]:
    """``[[admin.users]]`` tables (name, password_hash, role) as users;
    raises :class:`SettingError`."""
    users: list[AdminUser] = []
    for where, table in _items(value, _USER_KEYS):
        user = _build(where, AdminUser, table, _USER_KEYS)
        if any(other.name.casefold() == user.name.casefold() for other in users):
            raise SettingError(f"{where}.name", f"the name {user.name!r} is used twice")
        users.append(user)
    return tuple(users)


def tokens_from_toml(value: object) -> tuple[AdminToken, ...]:
    """``[[admin.tokens]]`` tables (name, sha256, role) as tokens; raises
    :class:`SettingError`."""
    tokens: list[AdminToken] = []
    for where, table in _items(value, _TOKEN_KEYS):
        token = _build(where, AdminToken, table, _TOKEN_KEYS)
        if any(other.name.casefold() == token.name.casefold() for other in tokens):
            raise SettingError(f"{where}.name", f"the name {token.name!r} is used twice")
        if any(other.sha256 == token.sha256 for other in tokens):
            raise SettingError(f"{where}.sha256", "the same token is configured twice")
        tokens.append(token)
    return tuple(tokens)
