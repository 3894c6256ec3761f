"""What the booth does for a car the gate did not let through, and what it
reads at the end of a shift.

Actions (operators and admins; each is an event of its own, naming the
operator and the read it answers, kept like a camera's event and sent
upstream, and recorded in the audit log):

* ``POST /api/events/{id}/open``: open the barrier for that read, with a
  reason from ``[admin] open_reasons`` and a note (both required). The
  barrier opens through the camera command path of
  ``POST /api/cameras/{serialno}/open``; the ``operator_open`` event carries
  the command.
* ``POST /api/events/{id}/correct``: the right plate for a misread. The
  camera's read stays as it was; the ``plate_correction`` event keeps the
  right plate and, with ``"decide": true``, the gate's decision for it as a
  live read on that lane (which opens the barrier when it says open).
* ``POST /api/lanes/{lane}/manual-entry``: a car whose plate could not be
  read, let through with its plate typed (``manual_entry``).

Reports (viewers too), in the site's time zone:

* ``GET /api/reports/daily?date=YYYY-MM-DD``: per lane, entries, exits,
  refused reads by reason, manual opens, corrections, manual entries.
* ``GET /api/reports/handover?since=<time>``: the same counts since a time and
  every operator's event since then (the shift hand-over).
* ``GET /api/events.csv?from=&to=``: the events of a time range as CSV,
  streamed from the store a page at a time (never held whole in memory),
  each cell guarded against spreadsheet formulas.
* ``GET /api/sessions.csv?from=&to=``: the parking sessions of a time range
  (by the entry's time, else the exit's) as CSV, streamed the same way.
* ``GET /api/events/{id}/answers``: the operators' events that answer a read.
* ``GET /api/booth``: the reasons an operator may give.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from typing import Any, TypeVar, cast
from zoneinfo import ZoneInfo

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer, IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from zope.interface import implementer

from gateway.admin.access import Access, authorized
from gateway.admin.audit import MAX_REASON_CHARS, note
from gateway.admin.auth import Principal
from gateway.admin.events import event_id_ok, open_store
from gateway.admin.http import ApiError, admin_app, arg, common_headers, json_body, json_response
from gateway.admin.settings import OPERATOR, VIEWER
from gateway.camera.commands import CameraCommand
from gateway.camera.control import (
    CameraControl,
    CameraOffline,
    CommandRefused,
    NotSupported,
    UnknownCamera,
)
from gateway.camera.events import EventNotKept
from gateway.camera.recorder import StoreRecorder, event_summary
from gateway.gate import Gate, GateLane, GateVerdict, PlateRead
from gateway.policy.csvformat import guard_cell
from gateway.policy.occupancy import ParkingSession
from gateway.policy.plates import is_no_plate, normalise_plate
from gateway.site import Lanes, LaneSettings
from gateway.store import (
    OPERATOR_EVENT_TYPES,
    EventRecord,
    EventType,
    LaneDayCounts,
    Store,
    StoreError,
    new_event_id,
)

__all__ = ["EVENT_CSV_COLUMNS", "BoothResource", "OperatorEvents", "event_csv_rows"]

log = Logger()

#: The longest plate an operator may type.
MAX_PLATE_CHARS = 32
#: Events read from the store per page of a CSV export: on the benchmark
#: machine a page holds the store's thread (which also commits the cameras'
#: events) about 14 ms, and its formatting the reactor about 1 ms.
EXPORT_PAGE = 200
#: The most operators' events a hand-over lists (the counts cover them all).
MAX_HANDOVER_EVENTS = 1000
#: How far back a hand-over may reach.
MAX_HANDOVER_DAYS = 31

T = TypeVar("T")

#: The columns of ``/api/events.csv``, in order.
EVENT_CSV_COLUMNS: tuple[str, ...] = (
    "time",
    "type",
    "lane",
    "camera",
    "plate",
    "license",
    "decision",
    "reason",
    "source",
    "repeat",
    "offline",
    "operator",
    "note",
    "answers",
    "id",
)


def _now(clock: IReactorTime) -> datetime:
    return datetime.fromtimestamp(clock.seconds(), tz=timezone.utc)


def _text(body: Mapping[str, object], name: str, limit: int, *, required: bool) -> str:
    value = body.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise ApiError(400, f"{name} is required", errors={name: "required"})
        return ""
    if not isinstance(value, str):
        raise ApiError(400, f"{name} must be text", errors={name: "must be text"})
    value = " ".join(value.split())
    if len(value) > limit:
        problem = f"must be at most {limit} characters"
        raise ApiError(400, f"{name} {problem}", errors={name: problem})
    return value


def _plate(body: Mapping[str, object]) -> tuple[str, str]:
    """The plate typed (as typed, trimmed) and normalised; 400 when none."""
    typed = _text(body, "plate", MAX_PLATE_CHARS, required=True)
    plate = normalise_plate(typed)
    if not plate or is_no_plate(plate):
        problem = "must be a plate such as 京A12345"
        raise ApiError(400, f"plate {problem}", errors={"plate": problem})
    return typed, plate


def _operator(who: Principal) -> dict[str, str]:
    return {"name": who.name, "role": who.role, "via": who.via}


def _command_refused(error: CommandRefused) -> ApiError:
    status = 400
    if isinstance(error, UnknownCamera):
        status = 404
    elif isinstance(error, (CameraOffline, NotSupported)):
        status = 409
    return ApiError(status, str(error))


class OperatorEvents:
    """Opens the barrier for an operator and keeps the events that say who
    did what (``operator_open``, ``plate_correction``, ``manual_entry``)
    through the recorder, as the camera's events are kept: in the store,
    in the cloud's outbox, on the live stream."""

    def __init__(
        self,
        *,
        clock: IReactorTime,
        control: CameraControl,
        recorder: StoreRecorder | None,
        reasons: Sequence[str],
    ) -> None:
        self._clock = clock
        self._control = control
        self._recorder = recorder
        #: The reasons an operator may give (``[admin] open_reasons``).
        self.reasons = tuple(reasons)

    def now(self) -> datetime:
        return _now(self._clock)

    def reason(self, body: Mapping[str, object], *, required: bool = True) -> str:
        """The body's ``reason``: one of the configured reasons (400 else)."""
        reason = _text(body, "reason", 64, required=required)
        if reason and reason not in self.reasons:
            problem = f"must be one of {', '.join(self.reasons)}"
            raise ApiError(400, f"reason {problem}", errors={"reason": problem})
        return reason

    def note_text(self, body: Mapping[str, object], *, required: bool) -> str:
        return _text(body, "note", MAX_REASON_CHARS, required=required)

    def open(self, serialno: str, who: Principal, channel: int | None = None) -> CameraCommand:
        """Queue the barrier open for ``serialno`` as ``who`` asked (the
        camera command path of the lane card's Open barrier)."""
        try:
            return self._control.open(serialno, channel, operator=who.name)
        except CommandRefused as error:
            log.info(
                "{user} ({role}) asked camera {serialno} to open the barrier: refused ({reason})",
                user=who.name,
                role=who.role,
                serialno=serialno,
                reason=str(error),
            )
            raise _command_refused(error) from None

    def record(
        self,
        kind: EventType,
        who: Principal,
        *,
        camera: str | None,
        lane: str | None,
        reason: str,
        note_text: str,
        answers: EventRecord | None = None,
        plate: str = "",
        license: str = "",
        opened: bool | None = True,
        decision_reason: str | None = None,
        decision_source: str = "operator",
        command: CameraCommand | None = None,
        extra: Mapping[str, Any] | None = None,
        event_id: str | None = None,
        received_at: datetime | None = None,
    ) -> EventRecord:
        """The event of what ``who`` did (``opened`` None: not decided)."""
        raw: dict[str, Any] = {
            "operator": _operator(who),
            "reason": reason,
            "note": note_text,
            **(extra or {}),
        }
        if command is not None:
            raw["command"] = command.describe()
        decided = opened is not None
        return EventRecord(
            id=event_id or self.new_id(kind),
            type=kind,
            received_at=received_at or self.now(),
            camera=camera,
            lane=lane,
            plate=plate,
            license=license,
            decision_open=opened,
            decision_reason=(decision_reason or reason or kind.value) if decided else None,
            decision_source=decision_source if decided else None,
            raw=raw,
            answers=answers.id if answers is not None else None,
        )

    @staticmethod
    def new_id(kind: EventType) -> str:
        prefix = {
            EventType.OPERATOR_OPEN: "open",
            EventType.PLATE_CORRECTION: "fix",
            EventType.MANUAL_ENTRY: "manual",
        }[kind]
        return new_event_id(prefix)

    async def keep(self, kind: EventType, who: Principal, **fields: Any) -> EventRecord:
        """Keep the event of what ``who`` did (:meth:`record`'s fields); 503
        when it cannot be kept."""
        record = self.record(kind, who, **fields)
        if self._recorder is None:
            raise ApiError(503, "events cannot be kept on this gateway")
        try:
            await self._recorder.keep(record)
        except EventNotKept as error:
            log.error(
                "The {kind} event by {user} was not kept: {reason}",
                kind=kind.value,
                user=who.name,
                reason=str(error),
            )
            raise ApiError(503, f"the event could not be kept: {error}") from None
        log.info(
            "{user} ({role}): {kind} on lane {lane}{plate}{answering} ({reason})",
            user=who.name,
            role=who.role,
            kind=kind.value,
            lane=record.lane or "-",
            plate=f", plate {record.plate}" if record.plate else "",
            answering=f", answering {record.answers}" if record.answers else "",
            reason=str(record.raw.get("reason") or "no reason given"),
            event_id=record.id,
        )
        return record


@implementer(IPushProducer)
class _Paced:
    """Writes of a streamed answer, paused while the client's connection
    has more than it can take (the transport pauses its producer)."""

    def __init__(self) -> None:
        self._paused: Deferred[None] | None = None
        self.stopped = False

    def pauseProducing(self) -> None:
        if self._paused is None:
            self._paused = Deferred()

    def resumeProducing(self) -> None:
        paused, self._paused = self._paused, None
        if paused is not None:
            paused.callback(None)

    def stopProducing(self) -> None:
        self.stopped = True
        self.resumeProducing()

    async def ready(self) -> None:
        """Once the connection takes more."""
        if self._paused is not None:
            await self._paused


def _local(value: datetime | None, zone: tzinfo) -> str:
    return value.astimezone(zone).isoformat(timespec="seconds") if value is not None else ""


def event_csv_rows(records: Sequence[EventRecord], zone: tzinfo) -> str:
    """CSV lines (no header) for ``records``, times in ``zone``, each cell
    guarded so that no spreadsheet runs it as a formula."""
    output = io.StringIO()
    writer = csv.writer(output, lineterminator="\r\n")
    for record in records:
        operator = record.raw.get("operator") if record.type in OPERATOR_EVENT_TYPES else None
        decision = ""
        if record.decision_open is not None:
            decision = "open" if record.decision_open else "refused"
        row = [
            _local(record.received_at, zone),
            record.type.value,
            record.lane or "",
            record.camera or "",
            record.plate,
            record.license,
            decision,
            record.decision_reason or "",
            record.decision_source or "",
            "yes" if record.repeat else "",
            "yes" if record.offline else "",
            str(operator.get("name", "")) if isinstance(operator, Mapping) else "",
            str(record.raw.get("note") or "") if operator is not None else "",
            record.answers or "",
            record.id,
        ]
        writer.writerow([guard_cell(cell) for cell in row])
    return output.getvalue()


#: The columns of ``/api/sessions.csv``, in order.
SESSION_CSV_COLUMNS: tuple[str, ...] = (
    "entered",
    "left",
    "duration_seconds",
    "plate",
    "area",
    "state",
    "entry_lane",
    "exit_lane",
    "entry_event",
    "exit_event",
)


def session_csv_rows(sessions: Sequence[ParkingSession], zone: tzinfo) -> str:
    """CSV lines (no header) for parking ``sessions``, times in ``zone``,
    each cell guarded as for the events. The site's sessions have area ``""``."""
    output = io.StringIO()
    writer = csv.writer(output, lineterminator="\r\n")
    for session in sessions:
        duration = session.duration_seconds
        row = [
            _local(session.entered_at, zone),
            _local(session.left_at, zone),
            "" if duration is None else f"{duration:.0f}",
            session.plate,
            session.area,
            session.state.value,
            session.entry_lane or "",
            session.exit_lane or "",
            session.entry_event or "",
            session.exit_event or "",
        ]
        writer.writerow([guard_cell(cell) for cell in row])
    return output.getvalue()


def _lane_report(counts: LaneDayCounts, lane: LaneSettings | None) -> dict[str, object]:
    """One lane's counts as the reports show them. The cars that passed are
    the reads the barrier opened for, the operators' opens, the corrections
    decided again that opened, and the manual entries that opened; on an
    entry lane they are entries, on an exit lane exits."""
    passed = (
        counts.opened + counts.operator_opens + counts.corrections_opened + counts.manual_opened
    )
    direction = lane.direction if lane is not None else None
    return {
        "lane": counts.lane,
        "direction": direction,
        "entries": passed if direction == "in" else 0,
        "exits": passed if direction == "out" else 0,
        "passed": passed,
        "reads": counts.reads,
        "opened": counts.opened,
        "refused": dict(sorted(counts.refused.items())),
        "refused_total": sum(counts.refused.values()),
        "offline_records": counts.offline,
        "repeats": counts.repeats,
        "manual_opens": counts.operator_opens,
        "corrections": counts.corrections,
        "corrections_opened": counts.corrections_opened,
        "manual_entries": counts.manual_entries,
    }


_TOTALS = (
    "entries",
    "exits",
    "passed",
    "reads",
    "opened",
    "refused_total",
    "offline_records",
    "repeats",
    "manual_opens",
    "corrections",
    "corrections_opened",
    "manual_entries",
)


def _report(counts: Sequence[LaneDayCounts], lanes: Lanes) -> dict[str, object]:
    by_lane = {c.lane: c for c in counts}
    rows = [
        _lane_report(by_lane.pop(lane.name, LaneDayCounts(lane=lane.name)), lane) for lane in lanes
    ]
    # Cameras in no lane (or a lane since removed from the configuration).
    rows += [_lane_report(c, None) for c in sorted(by_lane.values(), key=lambda c: c.lane or "")]
    totals: dict[str, object] = {key: sum(cast(int, row[key]) for row in rows) for key in _TOTALS}
    refused: dict[str, int] = {}
    for row in rows:
        for reason, number in cast("dict[str, int]", row["refused"]).items():
            refused[reason] = refused.get(reason, 0) + number
    totals["refused"] = dict(sorted(refused.items()))
    return {"lanes": rows, "totals": totals}


class BoothResource:
    """The booth's answers to refused cars, and its reports. ``store()`` is
    the open store or None (answered 503); ``gate`` decides a corrected
    plate again (None: corrections are only recorded)."""

    app = admin_app()

    def __init__(
        self,
        *,
        access: Access,
        clock: IReactorTime,
        timezone_name: str,
        lanes: Lanes,
        store: Callable[[], Store | None],
        operator_events: OperatorEvents,
        gate: Gate | None = None,
    ) -> None:
        self.access = access
        self._clock = clock
        self._timezone_name = timezone_name
        self._zone = ZoneInfo(timezone_name)
        self._lanes = lanes
        self._store = store
        self._events = operator_events
        self._gate = gate

    # -- reading a read ----------------------------------------------------------

    async def _read(self, event_id: str) -> EventRecord:
        """The plate read ``event_id``; 404 for none, 409 for another kind."""
        if not event_id_ok(event_id):
            raise ApiError(404, "no such event")
        store = open_store(self._store)
        try:
            record = await store.get_event(event_id)
        except StoreError as error:
            raise ApiError(503, f"the event store cannot answer: {error}") from None
        if record is None:
            raise ApiError(404, "no such event")
        if record.type is not EventType.PLATE:
            raise ApiError(
                409, f"event {event_id} is a {record.type.value} event, not a plate read"
            )
        return record

    def _camera_of(self, record: EventRecord) -> str:
        if not record.camera:
            raise ApiError(409, f"event {record.id} names no camera to open")
        return record.camera

    # -- actions -----------------------------------------------------------------

    @authorized(app, "/api/booth", methods=["GET"], role=VIEWER)
    def booth(self, request: IRequest, who: Principal) -> bytes:
        return json_response(
            request, {"open_reasons": list(self._events.reasons), "timezone": self._timezone_name}
        )

    @authorized(app, "/api/events/<event_id>/open", methods=["POST"], role=OPERATOR)
    async def open_for_read(self, request: IRequest, who: Principal, event_id: str) -> bytes:
        body = json_body(request)
        reason = self._events.reason(body)
        note_text = self._events.note_text(body, required=True)
        read = await self._read(event_id)
        camera = self._camera_of(read)
        command = self._events.open(camera, who)
        record = await self._events.keep(
            EventType.OPERATOR_OPEN,
            who,
            camera=read.camera,
            lane=read.lane,
            reason=reason,
            note_text=note_text,
            answers=read,
            plate=read.plate,
            license=read.license,
            command=command,
        )
        note(request, target=event_id, event=record.id, plate=read.plate, note=note_text)
        return json_response(
            request, {"event": event_summary(record), "command": command.describe()}, 202
        )

    @authorized(app, "/api/events/<event_id>/correct", methods=["POST"], role=OPERATOR)
    async def correct_read(self, request: IRequest, who: Principal, event_id: str) -> bytes:
        body = json_body(request)
        typed, plate = _plate(body)
        decide = body.get("decide", False)
        if not isinstance(decide, bool):
            raise ApiError(400, "decide must be true or false", errors={"decide": "true or false"})
        note_text = self._events.note_text(body, required=False)
        read = await self._read(event_id)
        if plate == read.plate:
            problem = f"is the plate the camera read ({read.plate})"
            raise ApiError(400, f"plate {problem}", errors={"plate": problem})
        fields: dict[str, Any] = {
            "camera": read.camera,
            "lane": read.lane,
            "reason": "misread",
            "note_text": note_text,
            "answers": read,
            "plate": plate,
            "license": read.license,
            "opened": None,
            "extra": {"read_plate": read.plate, "typed": typed, "decided": decide},
            "event_id": OperatorEvents.new_id(EventType.PLATE_CORRECTION),
            "received_at": self._events.now(),
        }
        if decide:
            if self._gate is None:
                raise ApiError(409, "this gateway cannot decide plates again")
            # The cloud is asked about the correction itself, not yet decided;
            # the same event (same id) then comes with the decision taken.
            undecided = self._events.record(EventType.PLATE_CORRECTION, who, **fields)
            verdict = await self._decide(read, typed, undecided)
            opens = verdict.decision.open and verdict.act
            fields.update(
                opened=opens,
                decision_reason=verdict.decision.reason,
                decision_source=verdict.decision.source,
            )
            if opens:
                fields["command"] = self._events.open(self._camera_of(read), who)
            self._gate.kept(verdict)
        record = await self._events.keep(EventType.PLATE_CORRECTION, who, **fields)
        command: CameraCommand | None = fields.get("command")
        note(
            request,
            target=event_id,
            event=record.id,
            plate=plate,
            read_plate=read.plate,
            decided=bool(decide),
        )
        return json_response(
            request,
            {
                "event": event_summary(record),
                "command": command.describe() if command is not None else None,
            },
            201,
        )

    async def _decide(self, read: EventRecord, typed: str, undecided: EventRecord) -> GateVerdict:
        """The gate's verdict for the corrected plate as a live read on the
        read's lane, now (``undecided``: the correction, for the cloud)."""
        assert self._gate is not None
        lane = self._lanes.named(read.lane) if read.lane else None
        gate_lane = (
            GateLane(
                name=lane.name,
                ask_cloud=lane.ask_cloud,
                cloud_overrides_blacklist=lane.cloud_overrides_blacklist,
            )
            if lane is not None
            else None
        )

        def cloud_record(normalised: str) -> EventRecord:
            return attrs.evolve(undecided, plate=normalised)

        return await self._gate.decide(
            PlateRead(
                license=typed,
                has_plate=True,
                offline=False,
                camera=read.camera or "",
                lane=gate_lane,
                received_at=undecided.received_at,
                record=cloud_record,
            )
        )

    @authorized(app, "/api/lanes/<lane>/manual-entry", methods=["POST"], role=OPERATOR)
    async def manual_entry(self, request: IRequest, who: Principal, lane: str) -> bytes:
        settings = self._lanes.named(lane)
        if settings is None:
            raise ApiError(404, f"no lane {lane} is configured")
        body = json_body(request)
        typed, plate = _plate(body)
        reason = self._events.reason(body)
        note_text = self._events.note_text(body, required=False)
        open_barrier = body.get("open", True)
        if not isinstance(open_barrier, bool):
            raise ApiError(400, "open must be true or false", errors={"open": "true or false"})
        answered: EventRecord | None = None
        answering = body.get("event_id")
        if answering is not None:
            if not isinstance(answering, str):
                raise ApiError(400, "event_id must be text", errors={"event_id": "must be text"})
            answered = await self._read(answering)
            if answered.lane != settings.name:
                problem = f"is a read of lane {answered.lane or '-'}, not of {settings.name}"
                raise ApiError(400, f"event_id {problem}", errors={"event_id": problem})
        command = self._events.open(settings.camera, who) if open_barrier else None
        record = await self._events.keep(
            EventType.MANUAL_ENTRY,
            who,
            camera=settings.camera,
            lane=settings.name,
            reason=reason,
            note_text=note_text,
            answers=answered,
            plate=plate,
            license=typed,
            opened=open_barrier,
            command=command,
        )
        note(request, target=settings.name, event=record.id, plate=plate, note=note_text)
        return json_response(
            request,
            {
                "event": event_summary(record),
                "command": command.describe() if command is not None else None,
            },
            201,
        )

    @authorized(app, "/api/events/<event_id>/answers", methods=["GET"], role=VIEWER)
    async def answers(self, request: IRequest, who: Principal, event_id: str) -> bytes:
        if not event_id_ok(event_id):
            raise ApiError(404, "no such event")
        try:
            records = await open_store(self._store).events_answering(event_id)
        except StoreError as error:
            raise ApiError(503, f"the event store cannot answer: {error}") from None
        return json_response(request, {"events": [event_summary(r) for r in records]})

    # -- reports -----------------------------------------------------------------

    def _day(self, text: str | None, name: str) -> date:
        if not text:
            raise ApiError(400, f"{name} is required (YYYY-MM-DD)", errors={name: "required"})
        try:
            return date.fromisoformat(text)
        except ValueError:
            problem = "must be a date such as 2025-03-01"
            raise ApiError(400, f"{name} {problem}", errors={name: problem}) from None

    def _midnight(self, day: date) -> datetime:
        return datetime.combine(day, time(0), tzinfo=self._zone)

    def _moment(self, request: IRequest, name: str, *, end: bool) -> datetime | None:
        """A time argument: ISO 8601 (without an offset: the site's time), or
        a date alone (the start of that day in the site's time zone; for
        ``end``, the end of that day)."""
        text = arg(request, name)
        if not text:
            return None
        text = text.strip()
        if len(text) == 10:
            day = self._day(text, name)
            return self._midnight(day + timedelta(days=1) if end else day)
        try:
            value = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            problem = "must be a date (2025-03-01) or an ISO 8601 time (2025-03-01T08:00:00+08:00)"
            raise ApiError(400, f"{name} {problem}", errors={name: problem}) from None
        return value if value.tzinfo is not None else value.replace(tzinfo=self._zone)

    async def _counts(self, since: datetime, until: datetime) -> list[LaneDayCounts]:
        try:
            return await open_store(self._store).lane_counts(since, until)
        except StoreError as error:
            raise ApiError(503, f"the event store cannot answer: {error}") from None

    @authorized(app, "/api/reports/daily", methods=["GET"], role=VIEWER)
    async def daily_report(self, request: IRequest, who: Principal) -> bytes:
        day = self._day(arg(request, "date"), "date")
        since = self._midnight(day)
        until = self._midnight(day + timedelta(days=1))
        counts = await self._counts(since, until)
        return json_response(
            request,
            {
                "date": day.isoformat(),
                "timezone": self._timezone_name,
                "from": since.isoformat(),
                "to": until.isoformat(),
                **_report(counts, self._lanes),
            },
        )

    def _until_now(self) -> datetime:
        # Up to now, this instant included.
        return self._events.now() + timedelta(microseconds=1)

    @authorized(app, "/api/reports/handover", methods=["GET"], role=VIEWER)
    async def handover(self, request: IRequest, who: Principal) -> bytes:
        now = self._until_now()
        since = self._moment(request, "since", end=False)
        if since is None:
            raise ApiError(400, "since is required", errors={"since": "required"})
        if since > now or now - since > timedelta(days=MAX_HANDOVER_DAYS):
            problem = f"must be in the last {MAX_HANDOVER_DAYS} days"
            raise ApiError(400, f"since {problem}", errors={"since": problem})
        counts = await self._counts(since, now)
        store = open_store(self._store)
        try:
            actions = await store.events_in_range(
                since, now, limit=MAX_HANDOVER_EVENTS, types=sorted(OPERATOR_EVENT_TYPES)
            )
        except StoreError as error:
            raise ApiError(503, f"the event store cannot answer: {error}") from None
        return json_response(
            request,
            {
                "since": since.astimezone(self._zone).isoformat(),
                "until": now.astimezone(self._zone).isoformat(),
                "timezone": self._timezone_name,
                "by": who.name,
                **_report(counts, self._lanes),
                "actions": [event_summary(record) for record in actions],
                "actions_truncated": len(actions) >= MAX_HANDOVER_EVENTS,
            },
        )

    @authorized(app, "/api/events.csv", methods=["GET"], role=VIEWER)
    async def events_csv(self, request: IRequest, who: Principal) -> bytes:
        since, until = self._range(request)
        store = open_store(self._store)

        async def page(after: EventRecord | None) -> list[EventRecord]:
            key = None if after is None else (after.received_at, after.seq or 0)
            return await store.events_in_range(since, until, key, EXPORT_PAGE)

        await self._stream_csv(
            request, who, "events", since, until, EVENT_CSV_COLUMNS, page,
            lambda records: event_csv_rows(records, self._zone),
        )
        return b""

    @authorized(app, "/api/sessions.csv", methods=["GET"], role=VIEWER)
    async def sessions_csv(self, request: IRequest, who: Principal) -> bytes:
        since, until = self._range(request)
        store = open_store(self._store)

        async def page(
            after: tuple[int, int, ParkingSession] | None,
        ) -> list[tuple[int, int, ParkingSession]]:
            key = None if after is None else (after[0], after[1])
            return await store.sessions_in_range(since, until, key, EXPORT_PAGE)

        await self._stream_csv(
            request, who, "sessions", since, until, SESSION_CSV_COLUMNS, page,
            lambda sessions: session_csv_rows([s for _, _, s in sessions], self._zone),
        )
        return b""

    def _range(self, request: IRequest) -> tuple[datetime, datetime]:
        since = self._moment(request, "from", end=False)
        if since is None:
            raise ApiError(400, "from is required", errors={"from": "required"})
        until = self._moment(request, "to", end=True) or self._until_now()
        if until <= since:
            raise ApiError(400, "to must be after from", errors={"to": "must be after from"})
        return since, until

    async def _stream_csv(
        self,
        request: IRequest,
        who: Principal,
        what: str,
        since: datetime,
        until: datetime,
        columns: Sequence[str],
        page: Callable[[T | None], Awaitable[list[T]]],
        rows_of: Callable[[list[T]], str],
    ) -> None:
        """Answer a CSV file of ``what`` in [``since``, ``until``), streamed a
        page at a time (``page(last of the previous page)``), pausing while
        the client does not read: never built in memory."""
        try:
            rows = await page(None)
        except StoreError as error:
            raise ApiError(503, f"the event store cannot answer: {error}") from None
        common_headers(request)
        request.setHeader(b"Content-Type", b"text/csv; charset=utf-8")
        first, last_time = since.astimezone(self._zone), until.astimezone(self._zone)
        name = f"{what}-{first:%Y%m%d-%H%M}-{last_time:%Y%m%d-%H%M}.csv"
        request.setHeader(b"Content-Disposition", f"attachment; filename={name}".encode("ascii"))
        request.setHeader(b"Cache-Control", b"no-store")
        paced = _Paced()
        # The site's requests are twisted.web ones, which take a producer.
        consumer = cast(IConsumer, request)
        consumer.registerProducer(paced, True)
        count = 0
        try:
            header = io.StringIO()
            csv.writer(header, lineterminator="\r\n").writerow(columns)
            # With a BOM, spreadsheets read the file as UTF-8 (plates in Chinese).
            request.write(("\ufeff" + header.getvalue()).encode("utf-8"))
            while rows and not paced.stopped:
                request.write(rows_of(rows).encode("utf-8"))
                count += len(rows)
                if len(rows) < EXPORT_PAGE:
                    break
                await paced.ready()
                try:
                    rows = await page(rows[-1])
                except StoreError as error:
                    # The file must not look whole: the connection is cut
                    # without the end of the answer.
                    log.error(
                        "The CSV export of {what} stopped after {rows} rows: {reason}",
                        what=what,
                        rows=count,
                        reason=str(error),
                    )
                    _abort(request)
                    return
        finally:
            consumer.unregisterProducer()
        log.info(
            "{user} ({role}) exported {rows} {what} as CSV",
            user=who.name,
            role=who.role,
            rows=count,
            what=what,
        )


def _abort(request: IRequest) -> None:
    transport = getattr(getattr(request, "channel", None), "transport", None)
    abort = getattr(transport, "abortConnection", None)
    if abort is not None:
        abort()
    else:
        cast(Any, request).loseConnection()
