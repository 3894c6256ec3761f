"""The site's plate list: ``/api/whitelist`` (search and page, add, change,
delete) and its CSV import and export. An entry added from a read at the
booth names the read (``POST /api/whitelist?event=<id>``) in the audit log.

Viewers read and export; operators change. The CSV import is the one admin
route that reads a large body (:data:`MAX_CSV_BYTES`: 100 000 plates with
notes are a few MB); its parsing and the export's formatting run on the
reactor's thread pool.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IReactorThreads
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from gateway.admin.access import Access, authorized
from gateway.admin.audit import note
from gateway.admin.auth import Principal
from gateway.admin.events import event_id_ok, open_store
from gateway.admin.http import (
    ApiError,
    admin_app,
    arg,
    common_headers,
    header,
    in_thread,
    int_arg,
    json_body,
    json_response,
    no_content,
    read_body,
)
from gateway.admin.settings import OPERATOR, VIEWER
from gateway.platelist import PlateList
from gateway.policy.codec import EntryCodec, EntryError
from gateway.policy.csvformat import format_whitelist_csv, parse_whitelist_csv
from gateway.policy.plates import is_no_plate, normalise_plate
from gateway.policy.whitelist import WhitelistEntry
from gateway.store import Store, StoreError

__all__ = ["MAX_CSV_BYTES", "PlateListResource"]

log = Logger()

#: The largest CSV file the import reads.
MAX_CSV_BYTES = 32 * 1024 * 1024
DEFAULT_WHITELIST_LIMIT = 100
MAX_WHITELIST_LIMIT = 1000


class PlateListResource:
    """The plate list as the booth edits it. ``store()`` is the open store
    or None: until it is open and the list loaded, answers are 503."""

    app = admin_app()

    def __init__(
        self,
        *,
        access: Access,
        reactor: IReactorThreads,
        plate_list: PlateList,
        codec: EntryCodec,
        store: Callable[[], Store | None],
    ) -> None:
        self.access = access
        self._reactor = reactor
        self._plate_list = plate_list
        self._codec = codec
        self._store = store

    def _valid_entry(self, request: IRequest, plate: str | None = None) -> WhitelistEntry:
        try:
            return self._codec.from_json(json_body(request), "admin", plate=plate)
        except EntryError as error:
            errors = {field or "entry": reason for field, reason in error.errors.items()}
            raise ApiError(400, f"the entry is not valid ({error})", errors=errors) from None

    def _ready(self) -> PlateList:
        open_store(self._store)
        if not self._plate_list.loaded:
            raise ApiError(503, "the plate list is still loading")
        return self._plate_list

    async def _upsert(self, whitelist: PlateList, entries: list[WhitelistEntry]) -> None:
        try:
            await whitelist.upsert(entries)
        except StoreError as error:
            raise ApiError(503, f"the plate list could not be saved: {error}") from None

    @authorized(app, "/api/whitelist", methods=["GET"], role=VIEWER)
    def whitelist_entries(self, request: IRequest, who: Principal) -> bytes:
        limit = int_arg(request, "limit", DEFAULT_WHITELIST_LIMIT, 1, MAX_WHITELIST_LIMIT)
        offset = int_arg(request, "offset", 0, 0, 2**31)
        query = normalise_plate(arg(request, "q") or "")
        entries = self._ready().entries()
        if query:
            entries = tuple(entry for entry in entries if query in entry.plate)
        return json_response(
            request,
            {
                "entries": [self._codec.to_json(e) for e in entries[offset : offset + limit]],
                "total": len(entries),
            },
        )

    @authorized(app, "/api/whitelist", methods=["POST"], role=OPERATOR)
    async def add_whitelist_entry(self, request: IRequest, who: Principal) -> bytes:
        whitelist = self._ready()
        entry = self._valid_entry(request)
        if whitelist.get(entry.plate) is not None:
            raise ApiError(409, f"{entry.plate} is already listed; change it with PUT")
        # Added from a read at the booth (``?event=<id>``): the audit entry
        # names the read.
        read = arg(request, "event") or ""
        if read and not event_id_ok(read):
            raise ApiError(400, "event is not an event id", errors={"event": "not an event id"})
        await self._upsert(whitelist, [entry])
        if read:
            note(request, target=entry.plate, event=read)
        else:
            note(request, target=entry.plate)
        log.info(
            "{user} ({role}) added {count} plate to the list: {plate}",
            user=who.name,
            role=who.role,
            count=1,
            plate=entry.plate,
        )
        return json_response(request, self._codec.to_json(entry), 201)

    @authorized(app, "/api/whitelist/<plate>", methods=["PUT"], role=OPERATOR)
    async def change_whitelist_entry(self, request: IRequest, who: Principal, plate: str) -> bytes:
        whitelist = self._ready()
        entry = self._valid_entry(request, normalise_plate(plate))
        await self._upsert(whitelist, [entry])
        log.info(
            "{user} ({role}) changed {count} plate on the list: {plate}",
            user=who.name,
            role=who.role,
            count=1,
            plate=entry.plate,
        )
        return json_response(request, self._codec.to_json(entry))

    @authorized(app, "/api/whitelist/<plate>", methods=["DELETE"], role=OPERATOR)
    async def delete_whitelist_entry(self, request: IRequest, who: Principal, plate: str) -> bytes:
        whitelist = self._ready()
        normalised = normalise_plate(plate)
        if is_no_plate(normalised) or whitelist.get(normalised) is None:
            raise ApiError(404, f"{plate} is not on the list")
        try:
            await whitelist.delete([normalised])
        except StoreError as error:
            raise ApiError(503, f"the plate list could not be saved: {error}") from None
        log.info(
            "{user} ({role}) deleted {count} plate from the list: {plate}",
            user=who.name,
            role=who.role,
            count=1,
            plate=normalised,
        )
        return no_content(request)

    @authorized(
        app, "/api/whitelist/import", methods=["POST"], role=OPERATOR, max_body=MAX_CSV_BYTES
    )
    async def import_whitelist(self, request: IRequest, who: Principal) -> bytes:
        whitelist = self._ready()
        content_type = (header(request, b"content-type") or "").split(";")[0].strip().lower()
        if content_type.startswith("multipart/") or content_type.endswith("x-www-form-urlencoded"):
            raise ApiError(415, "send the CSV file itself as the body (Content-Type: text/csv)")
        data = read_body(request, MAX_CSV_BYTES)
        if not data.strip():
            raise ApiError(400, "the body is empty: send the CSV file")
        parsed = await in_thread(self._reactor, parse_whitelist_csv, data, self._codec, "admin")
        if parsed.entries:
            await self._upsert(whitelist, list(parsed.entries))
        note(request, accepted=len(parsed.entries), rejected=len(parsed.errors))
        log.info(
            "{user} ({role}) imported {count} plates from a CSV file ({rejected} rows rejected)",
            user=who.name,
            role=who.role,
            count=len(parsed.entries),
            rejected=len(parsed.errors),
        )
        return json_response(
            request,
            {
                "accepted": len(parsed.entries),
                "rejected": [
                    {"line": error.line, "column": error.column, "reason": error.reason}
                    for error in parsed.errors
                ],
            },
        )

    @authorized(app, "/api/whitelist/export", methods=["GET"], role=VIEWER)
    async def export_whitelist(self, request: IRequest, who: Principal) -> bytes:
        entries = self._ready().entries()
        text = await in_thread(self._reactor, format_whitelist_csv, entries, self._codec)
        common_headers(request)
        request.setHeader(b"Content-Type", b"text/csv; charset=utf-8")
        request.setHeader(b"Content-Disposition", b"attachment; filename=whitelist.csv")
        request.setHeader(b"Cache-Control", b"no-store")
        # With a BOM, spreadsheets read the file as UTF-8 (plates in Chinese).
        return text.encode("utf-8-sig")
