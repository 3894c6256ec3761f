"""The web page itself: ``/`` and its files under ``/static/``.

Open to anyone: the page holds no data (it asks the API, which needs
credentials), and the sign-in form is part of it. Only plain names below the
static directory are served: no hidden files, no way out of it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from twisted.internet.interfaces import IReactorThreads
from twisted.web.iweb import IRequest

from gateway.admin.access import open_route
from gateway.admin.http import ApiError, admin_app, common_headers, in_thread

__all__ = ["STATIC_DIR", "PageResource"]

#: The web page's files, served at ``/`` and ``/static/``.
STATIC_DIR = Path(__file__).resolve().parent / "static"

# A page file's name: a few path segments, none hidden (no leading dot).
_STATIC_SEGMENT = r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}"
_STATIC_NAME_RE = re.compile(rf"{_STATIC_SEGMENT}(/{_STATIC_SEGMENT}){{0,4}}")
_CONTENT_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".mjs": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".json": b"application/json; charset=utf-8",
    ".svg": b"image/svg+xml",
    ".png": b"image/png",
    ".jpg": b"image/jpeg",
    ".ico": b"image/x-icon",
    ".woff2": b"font/woff2",
    ".txt": b"text/plain; charset=utf-8",
}
# The page loads only its own files; nothing may frame it.
_PAGE_POLICY = (
    b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    b"img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; "
    b"base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_WHY_OPEN = "the page and its files hold no data, and the sign-in form is part of them"


class PageResource:
    """The page's files, read from ``static_dir`` on the reactor's thread pool."""

    app = admin_app()

    def __init__(self, *, reactor: IReactorThreads, static_dir: Path | str | None = None) -> None:
        self._reactor = reactor
        self._static_dir = Path(static_dir) if static_dir is not None else STATIC_DIR

    @open_route(app, "/", methods=["GET", "HEAD"], reason=_WHY_OPEN)
    async def index(self, request: IRequest) -> bytes:
        page = await self._static_file("index.html")
        if page is None:
            raise ApiError(404, "the admin page is not installed")
        request.setHeader(b"Content-Security-Policy", _PAGE_POLICY)
        return self._serve(request, "index.html", page)

    @open_route(app, "/static/<path:name>", methods=["GET", "HEAD"], reason=_WHY_OPEN)
    async def static(self, request: IRequest, name: str) -> bytes:
        content = await self._static_file(name)
        if content is None:
            raise ApiError(404, "not found")
        return self._serve(request, name, content)

    async def _static_file(self, name: str) -> bytes | None:
        """A file of the page, or None."""
        if _STATIC_NAME_RE.fullmatch(name) is None:
            return None
        root = self._static_dir.resolve()
        path = (root / name).resolve()
        if not path.is_relative_to(root):
            return None

        def read() -> bytes | None:
            try:
                return path.read_bytes() if path.is_file() else None
            except OSError:
                return None

        return await in_thread(self._reactor, read)

    def _serve(self, request: IRequest, name: str, content: bytes) -> bytes:
        common_headers(request)
        suffix = os.path.splitext(name)[1].lower()
        request.setHeader(b"Content-Type", _CONTENT_TYPES.get(suffix, b"application/octet-stream"))
        # Revalidated on every load: an upgraded gateway serves its new page.
        request.setHeader(b"Cache-Control", b"no-cache")
        return b"" if request.method == b"HEAD" else content
