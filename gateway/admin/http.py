"""What every admin resource answers with: JSON bodies, errors, request
arguments and bodies, and the Klein app each resource is built on.

Every resource's Klein app comes from :func:`admin_app`, so that each answers
errors alike (an :class:`ApiError`, an unknown path or method, a failure) and
the resources can be mounted side by side under one root.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime, timezone, tzinfo
from typing import ParamSpec, TypeVar

from klein import Klein
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.routing import RequestRedirect

__all__ = [
    "MAX_JSON_BYTES",
    "ApiError",
    "admin_app",
    "arg",
    "client_address",
    "common_headers",
    "header",
    "in_thread",
    "int_arg",
    "iso",
    "json_body",
    "json_response",
    "no_content",
    "optional_int_arg",
    "read_body",
    "time_arg",
]

log = Logger()

#: The largest JSON body of any route (the site refuses larger ones before
#: reading them, unless a route declares more: see :mod:`gateway.admin.access`).
MAX_JSON_BYTES = 64 * 1024


class ApiError(Exception):
    """An answer other than success: ``status``, a one-line ``message``,
    per-field ``errors`` for a 400, extra ``headers``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        errors: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = dict(errors) if errors else None
        self.headers = dict(headers) if headers else {}


P = ParamSpec("P")
T = TypeVar("T")


def in_thread(
    reactor: IReactorThreads, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs
) -> Deferred[T]:
    """``function(*args, **kwargs)`` on the reactor's thread pool: work that
    costs in proportion to a file or the plate list stays off the reactor."""
    return deferToThreadPool(reactor, reactor.getThreadPool(), function, *args, **kwargs)


def common_headers(request: IRequest) -> None:
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    request.setHeader(b"Referrer-Policy", b"no-referrer")
    request.setHeader(b"X-Frame-Options", b"DENY")


def json_response(request: IRequest, value: object, status: int = 200) -> bytes:
    common_headers(request)
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
    request.setHeader(b"Cache-Control", b"no-store")
    # Text is returned exactly as stored (a note may hold anything); the
    # page inserts it as text, never as markup.
    return json.dumps(value, ensure_ascii=False, default=str).encode("utf-8")


def no_content(request: IRequest) -> bytes:
    common_headers(request)
    request.setResponseCode(204)
    request.setHeader(b"Cache-Control", b"no-store")
    return b""


def header(request: IRequest, name: bytes) -> str | None:
    value = request.getHeader(name)
    if value is None:
        return None
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


def client_address(request: IRequest) -> str:
    address = request.getClientAddress()
    return str(getattr(address, "host", None) or address)


def iso(value: datetime | None, tz: tzinfo | None = None) -> str | None:
    if value is None:
        return None
    return (value.astimezone(tz) if tz is not None else value).isoformat()


def arg(request: IRequest, name: str) -> str | None:
    values = request.args.get(name.encode("ascii")) if request.args else None
    if not values:
        return None
    try:
        text: str = values[-1].decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, f"{name} is not UTF-8 text", errors={name: "not UTF-8 text"}) from None
    return text


def int_arg(request: IRequest, name: str, default: int, low: int, high: int) -> int:
    value = optional_int_arg(request, name, low, high)
    return default if value is None else value


def optional_int_arg(request: IRequest, name: str, low: int, high: int) -> int | None:
    text = arg(request, name)
    if text is None or text == "":
        return None
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        reason = f"must be an integer from {low} to {high}"
        raise ApiError(400, f"{name} {reason}", errors={name: reason})
    return value


def time_arg(request: IRequest, name: str) -> datetime | None:
    text = arg(request, name)
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        reason = "must be an ISO 8601 time such as 2025-01-31T08:00:00Z"
        raise ApiError(400, f"{name} {reason}", errors={name: reason}) from None
    # The API speaks UTC: a time without an offset is UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def read_body(request: IRequest, limit: int) -> bytes:
    """The request body, at most ``limit`` bytes (413 beyond). The admin
    site has already refused a larger body before reading it; this check
    is for a resource served any other way (tests, another site)."""
    content = request.content
    if content is None:
        return b""
    content.seek(0)
    data: bytes = content.read(limit + 1)
    if len(data) > limit:
        raise ApiError(413, f"the request body is larger than {limit} bytes")
    return data


def json_body(request: IRequest, *, required: bool = True) -> dict[str, object]:
    data = read_body(request, MAX_JSON_BYTES)
    if not data.strip():
        if required:
            raise ApiError(400, "a JSON object is expected in the body")
        return {}
    content_type = (header(request, b"content-type") or "").split(";")[0].strip().lower()
    if content_type != "application/json":
        # Also keeps cross-site HTML forms out: they cannot send JSON.
        raise ApiError(415, "send the body as application/json")
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise ApiError(400, f"the body is not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise ApiError(400, "a JSON object is expected in the body")
    return value


# -- errors ------------------------------------------------------------------------
#
# Klein calls an error handler with the resource instance first (as ``self``,
# by Klein's protocol); these answer alike for every resource and ignore it.


def _api_error(self: object, request: IRequest, failure: Failure) -> bytes:
    error = failure.value
    assert isinstance(error, ApiError)
    for name, value in error.headers.items():
        request.setHeader(name.encode("ascii"), value.encode("ascii"))
    if error.status == 401 and header(request, b"authorization") is not None:
        request.setHeader(b"WWW-Authenticate", b'Bearer realm="anpr-gateway"')
    body: dict[str, object] = {"error": error.message}
    if error.errors:
        body["errors"] = error.errors
    return json_response(request, body, error.status)


def _not_here(self: object, request: IRequest, failure: Failure) -> bytes:
    error = failure.value
    assert isinstance(error, HTTPException)
    status = error.code or 404
    if isinstance(error, MethodNotAllowed):
        request.setHeader(b"Allow", ", ".join(error.valid_methods or ()).encode("ascii"))
        return json_response(request, {"error": "method not allowed here"}, 405)
    if isinstance(error, RequestRedirect):
        request.setHeader(b"Location", error.new_url.encode("utf-8"))
        return json_response(request, {"error": f"moved to {error.new_url}"}, status)
    if status == 404:
        return json_response(request, {"error": "not found"}, 404)
    return json_response(request, {"error": (error.description or error.name).strip()}, status)


def _unexpected(self: object, request: IRequest, failure: Failure) -> bytes | None:
    if failure.check(CancelledError):
        return None  # the client went away
    log.failure(
        "Admin API request {method} {path} failed",
        failure,
        method=request.method,
        path=request.path,
    )
    return json_response(request, {"error": "internal error (logged)"}, 500)


def admin_app() -> Klein:
    """A Klein app for one admin resource (a class attribute, bound to the
    instance), answering errors as every admin resource does."""
    app = Klein()
    app.handle_errors(ApiError)(_api_error)
    app.handle_errors(HTTPException)(_not_here)
    app.handle_errors(Exception)(_unexpected)
    return app
