"""How full the site is: ``/api/occupancy`` (viewers), the operator's
correction of the count (``POST /api/occupancy/correct``, operators, with a
reason) and the parking sessions kept (``/api/occupancy/sessions``)."""

from __future__ import annotations

from collections.abc import Callable

from twisted.web.iweb import IRequest

from gateway.admin.access import Access, authorized
from gateway.admin.audit import MAX_REASON_CHARS, note
from gateway.admin.auth import Principal
from gateway.admin.events import open_store
from gateway.admin.http import (
    ApiError,
    admin_app,
    arg,
    int_arg,
    json_body,
    json_response,
    optional_int_arg,
)
from gateway.admin.settings import OPERATOR, VIEWER
from gateway.camera.events import EventNotKept
from gateway.occupancy import MAX_CORRECTION, Occupancy, UnknownArea
from gateway.policy.occupancy import SITE, SessionState
from gateway.store import Store, StoreError

__all__ = ["OccupancyResource"]

DEFAULT_SESSION_LIMIT = 50
MAX_SESSION_LIMIT = 500


class OccupancyResource:
    """The site's occupancy. ``occupancy`` None: a gateway built without it
    (answered 404)."""

    app = admin_app()

    def __init__(
        self, *, access: Access, occupancy: Occupancy | None, store: Callable[[], Store | None]
    ) -> None:
        self.access = access
        self._occupancy = occupancy
        self._store = store

    def _counted(self) -> Occupancy:
        if self._occupancy is None:
            raise ApiError(404, "this gateway counts no occupancy")
        return self._occupancy

    def _area(self, name: object) -> str:
        """The area's configured name (``""``: the site); 400 for another."""
        occupancy = self._counted()
        if name is None or name == "":
            return SITE
        if not isinstance(name, str):
            raise ApiError(400, "area must be text", errors={"area": "must be text"})
        for known in occupancy.book.scopes[1:]:
            if known.casefold() == name.strip().casefold():
                return known
        areas = ", ".join(occupancy.book.scopes[1:]) or "none configured"
        reason = f"no area is called {name!r} (areas: {areas})"
        raise ApiError(400, reason, errors={"area": reason})

    @authorized(app, "/api/occupancy", methods=["GET"], role=VIEWER)
    def occupancy(self, request: IRequest, who: Principal) -> bytes:
        return json_response(request, self._counted().to_json())

    @authorized(app, "/api/occupancy/correct", methods=["POST"], role=OPERATOR)
    async def correct_occupancy(self, request: IRequest, who: Principal) -> bytes:
        occupancy = self._counted()
        body = json_body(request)
        errors: dict[str, str] = {}
        inside = body.get("inside")
        if (
            isinstance(inside, bool)
            or not isinstance(inside, int)
            or not 0 <= inside <= MAX_CORRECTION
        ):
            errors["inside"] = f"must be a whole number of cars from 0 to {MAX_CORRECTION}"
        reason = body.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            errors["reason"] = "say why the count is corrected"
        elif len(reason.strip()) > MAX_REASON_CHARS:
            errors["reason"] = f"must be at most {MAX_REASON_CHARS} characters"
        if errors:
            raise ApiError(400, "; ".join(f"{k} {v}" for k, v in errors.items()), errors=errors)
        area = self._area(body.get("area"))
        assert isinstance(inside, int) and isinstance(reason, str)
        if not occupancy.loaded:
            raise ApiError(
                503,
                "the parking sessions are being read back; try again in a moment",
                headers={"Retry-After": "2"},
            )
        try:
            count = await occupancy.correct(
                area, inside, who=who.name, role=who.role, reason=reason.strip()
            )
        except UnknownArea:
            raise ApiError(400, "no such area", errors={"area": "no such area"}) from None
        except EventNotKept as error:
            raise ApiError(503, f"the correction could not be kept: {error}") from None
        note(request, target=area or "site", inside=inside)
        return json_response(request, {"area": area or None, **count.to_json()})

    @authorized(app, "/api/occupancy/sessions", methods=["GET"], role=VIEWER)
    async def parking_sessions(self, request: IRequest, who: Principal) -> bytes:
        self._counted()
        limit = int_arg(request, "limit", DEFAULT_SESSION_LIMIT, 1, MAX_SESSION_LIMIT)
        before = optional_int_arg(request, "before", 1, 2**62)
        state = arg(request, "state") or None
        if state is not None and state not in {s.value for s in SessionState}:
            known = ", ".join(s.value for s in SessionState)
            reason = f"must be one of {known}"
            raise ApiError(400, f"state {reason}", errors={"state": reason})
        area_arg = arg(request, "area")
        area = self._area(area_arg) if area_arg is not None else None
        try:
            rows = await open_store(self._store).parking_sessions(
                area=area, state=state, before=before, limit=limit
            )
        except StoreError as error:
            raise ApiError(503, f"the event store cannot answer: {error}") from None
        return json_response(
            request,
            {
                "sessions": [{"seq": seq, **session.to_json()} for seq, session in rows],
                "next_before": rows[-1][0] if len(rows) == limit else None,
            },
        )
