"""Who may use each admin route, declared on the route itself.

Every route of an admin resource is declared with one of two decorators, in
the manner of Tahoe-LAFS's ``_authorized_route``:

* :func:`authorized` names the least role the route needs. The credentials
  are checked before the handler runs, and the handler is given the
  :class:`~gateway.admin.auth.Principal` asking; a handler cannot forget the
  check, since without it it never runs.
* :func:`open_route` declares a route deliberately open (logging in, the
  page's own files) and says why.

Both also declare the largest request body the route reads (by default
:data:`~gateway.admin.http.MAX_JSON_BYTES`). The admin site refuses a larger
body before reading it, and before any credential is looked at
(:mod:`gateway.admin.root`). The root mounts only resources whose every route
was declared in one of these ways.
"""

from __future__ import annotations

import functools
import hmac
import weakref
from collections.abc import Callable, Sequence
from typing import Concatenate, ParamSpec, Protocol, TypeVar, cast, overload

import attrs
from klein import Klein, KleinRenderable
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.routing import Map

from gateway.admin.audit import AuditLog
from gateway.admin.auth import Principal, SessionStore
from gateway.admin.http import MAX_JSON_BYTES, ApiError, header
from gateway.admin.settings import VIEWER, AdminToken, Role, role_allows

__all__ = [
    "CSRF_HEADER",
    "SESSION_COOKIE",
    "Access",
    "Guarded",
    "RouteAccess",
    "TokenCheck",
    "authorized",
    "declared_routes",
    "open_route",
]

log = Logger()

SESSION_COOKIE = b"anpr_session"
CSRF_HEADER = b"x-csrf-token"
_WRITE_METHODS = frozenset({b"POST", b"PUT", b"DELETE", b"PATCH"})

#: Who asks a route that is public by the site's settings (``/metrics`` with
#: ``metrics_public``): nobody in particular, reading.
PUBLIC = Principal(name="(public)", role=VIEWER, via="public")


class TokenCheck(Protocol):
    """The machine tokens and who sessions belong to
    (:class:`~gateway.admin.auth.AdminAccounts`)."""

    @property
    def loaded(self) -> bool: ...

    def check_token(self, token: str) -> AdminToken | None: ...

    def session_role(self, origin: str, name: str) -> Role | None: ...


class Access:
    """Who is asking, from a bearer token or a login session, and whether
    they may: the one check behind every :func:`authorized` route."""

    def __init__(
        self,
        tokens: TokenCheck,
        sessions: SessionStore,
        audit: AuditLog | None = None,
        unavailable: Callable[[], str | None] | None = None,
    ) -> None:
        self._tokens = tokens
        self.sessions = sessions
        #: Where each successful change is recorded (:mod:`gateway.admin.audit`).
        self.audit = audit
        self._unavailable = unavailable

    @property
    def ready(self) -> bool:
        """Whether the accounts and the kept sessions are read back."""
        return self._tokens.loaded and self.sessions.loaded

    def not_ready(self) -> ApiError:
        """The 503 of a request that needs the accounts before they are
        read: the gateway is starting, or its store cannot open (and why)."""
        problem = self._unavailable() if self._unavailable is not None else None
        if problem is not None:
            return ApiError(503, problem, headers={"Retry-After": "10"})
        return ApiError(
            503, "the gateway is starting; try again in a moment", headers={"Retry-After": "2"}
        )

    def principal(self, request: IRequest) -> Principal | None:
        """Who the credentials name; None without any. A bearer token that
        is not one, or another scheme, is a 401."""
        sent = header(request, b"authorization")
        cookie = request.getCookie(SESSION_COOKIE)
        # Just restarted: the accounts and the kept sessions are being read
        # back; a credential other than a configured token (which nothing in
        # the store can revoke) is neither good nor bad yet. A store that
        # cannot open is said to anyone without one, signed in or not: the
        # sign-in page shows it instead of a form that cannot work.
        starting = not self.ready
        if starting and sent is None and (
            cookie or (self._unavailable is not None and self._unavailable() is not None)
        ):
            raise self.not_ready()
        if sent is not None:
            scheme, _, token = sent.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise ApiError(401, "only bearer tokens are accepted in Authorization")
            found = self._tokens.check_token(token.strip())
            if found is not None:
                return Principal(name=found.name, role=found.role, via="token")
            if starting:
                raise self.not_ready()
            raise ApiError(401, "unknown bearer token")
        if cookie:
            session = self.sessions.get(cookie.decode("ascii", "replace"))
            if session is not None:
                role = self._tokens.session_role(session.origin, session.user)
                if role is None:
                    # The user was removed or disabled, or the wall screen's
                    # token revoked, since this session opened.
                    self.sessions.end(session).addErrback(_forget_failed)
                    return None
                # The account's role now, not at sign-in (a role lowered in
                # the configuration counts from the next request).
                session.role = role
                return Principal(
                    name=session.user, role=role, via="session", session=session
                )
        return None

    def authorize(self, request: IRequest, needed: Role) -> Principal:
        """Who is asking, once they may do what needs ``needed``: 401 with no
        valid credentials, 403 for a missing CSRF token or a weaker role."""
        principal = self.principal(request)
        if principal is None:
            raise ApiError(401, "log in first")
        if request.method in _WRITE_METHODS and principal.session is not None:
            sent = header(request, CSRF_HEADER) or ""
            if not _same(sent, principal.session.csrf_token):
                raise ApiError(403, "missing or wrong CSRF token (X-CSRF-Token)")
        if not role_allows(principal.role, needed):
            raise ApiError(403, f"the {principal.role} role may not do this")
        return principal


def _forget_failed(failure: Failure) -> None:
    log.failure("An ended admin session could not be removed from the store", failure)


def _same(sent: str, expected: str) -> bool:
    return hmac.compare_digest(sent.encode("utf-8", "replace"), expected.encode("utf-8"))


class Guarded(Protocol):
    """An admin resource: its routes are checked with its :class:`Access`."""

    @property
    def access(self) -> Access: ...


@attrs.frozen
class RouteAccess:
    """What a route declared: the least ``role`` it needs (None: open, for
    the ``reason`` given) and the largest body it reads."""

    role: Role | None
    max_body: int
    reason: str | None = None


# Declarations by app (its werkzeug Map, which the copies Klein binds to each
# instance share) and endpoint (the handler's name).
_DECLARED: weakref.WeakKeyDictionary[Map, dict[str, RouteAccess]] = weakref.WeakKeyDictionary()


def _declare(app: Klein, endpoint: str, declared: RouteAccess) -> None:
    routes = _DECLARED.setdefault(app.url_map, {})
    if endpoint in routes:
        raise ValueError(f"two admin routes are both named {endpoint}")
    routes[endpoint] = declared


def declared_routes(app: Klein) -> dict[str, RouteAccess]:
    """The declared routes of ``app``, by endpoint."""
    return dict(_DECLARED.get(app.url_map, {}))


G = TypeVar("G", bound=Guarded)
P = ParamSpec("P")
R = TypeVar("R", bound=KleinRenderable)
Handler = Callable[Concatenate[G, IRequest, Principal, P], R]
Routed = Callable[Concatenate[G, IRequest, P], R]


@overload
def authorized(
    app: Klein,
    url: str,
    *,
    methods: Sequence[str],
    role: Role,
    max_body: int = ...,
) -> Callable[[Handler[G, P, R]], Routed[G, P, R]]: ...


@overload
def authorized(
    app: Klein,
    url: str,
    *,
    methods: Sequence[str],
    role: Role,
    max_body: int = ...,
    public_if: Callable[[G], bool],
) -> Callable[[Handler[G, P, R]], Routed[G, P, R]]: ...


def authorized(
    app: Klein,
    url: str,
    *,
    methods: Sequence[str],
    role: Role,
    max_body: int = MAX_JSON_BYTES,
    public_if: Callable[[G], bool] | None = None,
) -> Callable[[Handler[G, P, R]], Routed[G, P, R]]:
    """Route ``url`` for ``methods`` to the decorated handler, for whoever
    has ``role`` (or a stronger one). The handler is called with the
    request, then the principal asking, then the URL's parts.

    ``public_if(resource)`` true lets anyone in (the principal is
    :data:`PUBLIC`): a route whose openness the site's settings decide.
    """

    def decorator(handler: Handler[G, P, R]) -> Routed[G, P, R]:
        @functools.wraps(handler)
        def checked(resource: G, request: IRequest, /, *args: P.args, **kwargs: P.kwargs) -> R:
            if public_if is not None and public_if(resource):
                who = PUBLIC
            else:
                who = resource.access.authorize(request, role)
            result = handler(resource, request, who, *args, **kwargs)
            audit = resource.access.audit
            if audit is None or who is PUBLIC or request.method not in _WRITE_METHODS:
                return result
            # Every change that succeeds is in the audit log before it is answered.
            return cast(R, audit.after(request, who, handler.__name__, kwargs, result))

        reason = "public when the site's settings say so" if public_if is not None else None
        _declare(app, handler.__name__, RouteAccess(role=role, max_body=max_body, reason=reason))
        app.route(url, methods=list(methods))(checked)
        return checked

    return decorator


H = TypeVar("H", bound=Callable[..., KleinRenderable])


def open_route(
    app: Klein,
    url: str,
    *,
    methods: Sequence[str],
    reason: str,
    max_body: int = MAX_JSON_BYTES,
) -> Callable[[H], H]:
    """Route ``url`` for ``methods`` to the decorated handler for anyone,
    deliberately: ``reason`` says why no credentials are needed."""

    def decorator(handler: H) -> H:
        name = getattr(handler, "__name__", repr(handler))
        _declare(app, name, RouteAccess(role=None, max_body=max_body, reason=reason))
        app.route(url, methods=list(methods))(handler)
        return handler

    return decorator
