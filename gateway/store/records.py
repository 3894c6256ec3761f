"""Typed values the store takes and gives back."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import PurePath
from typing import Any

import attrs

from gateway.policy.cameralist import CameraRow

__all__ = [
    "AdminSessionRow",
    "AuditRow",
    "CachedCloudDecision",
    "CommitResult",
    "DeadLetter",
    "EventRecord",
    "EventType",
    "ImageState",
    "ImageUpload",
    "OutboxItem",
    "OutboxTrim",
    "QuarantinedRow",
    "RetentionResult",
    "StoreHealth",
    "StoreStats",
    "EventExpiry",
    "Integrity",
    "IntegrityState",
    "EventRetentionTotals",
    "CameraListState",
    "PlateRow",
    "PlateRowsWritten",
    "IMAGE_KINDS",
    "SALVAGE_PARTS",
    "LogDamage",
    "Replacement",
    "SalvageReport",
    "SalvagedPart",
    "OPERATOR_EVENT_TYPES",
    "LaneDayCounts",
]


class EventType(str, enum.Enum):
    """What happened."""

    PLATE = "plate"
    IO = "io"
    SERIAL = "serial"
    SNAPSHOT = "snapshot"
    CAMERA_ONLINE = "camera_online"
    CAMERA_OFFLINE = "camera_offline"
    COMMAND_RESULT = "command_result"
    OCCUPANCY = "occupancy"  # an operator's count of the cars inside
    # What people at the booth did, each an event of its own naming the
    # operator (``raw["operator"]``) and, when it answers a read, that read
    # (:attr:`EventRecord.answers`).
    OPERATOR_OPEN = "operator_open"  # the barrier opened by an operator, with a reason
    PLATE_CORRECTION = "plate_correction"  # the right plate for a misread
    MANUAL_ENTRY = "manual_entry"  # a car let in (or out) with its plate typed


#: The event types that record what an operator did.
OPERATOR_EVENT_TYPES: frozenset[EventType] = frozenset(
    {EventType.OPERATOR_OPEN, EventType.PLATE_CORRECTION, EventType.MANUAL_ENTRY}
)


class ImageState(str, enum.Enum):
    """Whether an event's image is on disk."""

    NONE = "none"  # the camera sent none
    PRESENT = "present"
    EXPIRED = "expired"  # removed by retention; the event row stays
    MISSING = "missing"  # the camera sent one, but it could not be written (disk, directory)


IMAGE_KINDS: tuple[str, ...] = ("full", "crop")
"""Image kinds an event can carry: the whole frame and the plate crop."""


def _require_aware(instance: Any, attribute: attrs.Attribute[Any], value: datetime | None) -> None:
    if value is not None and value.tzinfo is None:
        raise ValueError(f"{attribute.name} must be timezone-aware")


@attrs.frozen
class EventRecord:
    """One event as stored.

    Built by the caller for :meth:`Store.commit_event` (``seq`` None, image
    states left at their defaults: the store sets them from the images it is
    given) and returned by queries as stored.

    ``received_at`` is the gateway's clock, ``camera_time`` the camera's (it
    may be wrong; both are kept). ``plate`` is the normalised plate the
    decision was made on, ``license`` the text as the camera read it.
    ``raw`` is what the camera sent, JSON-serialisable, without image data.
    ``reply`` is whatever the camera server needs to answer a re-sent push
    exactly as the first time (opaque to the store). ``answers`` is the id
    of the read an operator's event answers (an open, a correction); the
    store keeps it in ``raw`` as ``answers`` too.
    """

    id: str
    type: EventType = attrs.field(converter=EventType)
    received_at: datetime = attrs.field(validator=_require_aware)
    camera: str | None = None
    lane: str | None = None
    camera_time: datetime | None = attrs.field(default=None, validator=_require_aware)
    plate: str = ""
    license: str = ""
    offline: bool = False
    decision_open: bool | None = None  # None: no decision was made (not a plate, or offline)
    decision_reason: str | None = None
    decision_source: str | None = None
    repeat: bool = False  # a repeated read of a car already seen (duplicate suppression)
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False, hash=False)
    reply: str | None = attrs.field(default=None, repr=False)
    image_full: ImageState = attrs.field(default=ImageState.NONE, converter=ImageState)
    image_full_bytes: int = 0
    image_crop: ImageState = attrs.field(default=ImageState.NONE, converter=ImageState)
    image_crop_bytes: int = 0
    seq: int | None = None  # assigned by the store: the order events were committed in
    # Bytes of the raw record's JSON as stored (set by the store's reads; what
    # listings and batches count to stay within their bounds).
    raw_bytes: int = attrs.field(default=0, eq=False, repr=False)
    answers: str | None = None  # the event this one answers (operator events)

    def image_state(self, kind: str) -> ImageState:
        """The state of the image of ``kind`` ("full" or "crop")."""
        if kind == "full":
            return self.image_full
        if kind == "crop":
            return self.image_crop
        raise ValueError(f"unknown image kind {kind!r}")


@attrs.frozen
class CommitResult:
    """The outcome of :meth:`Store.commit_event`.

    ``created`` is False when an event with the same id was already stored;
    ``record`` is then the record stored the first time (answer the camera
    from it, exactly as the first time).
    """

    record: EventRecord
    created: bool

    @property
    def duplicate(self) -> bool:
        return not self.created


def _str_tuple(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


@attrs.frozen
class PlateRow:
    """One row of the gateway's plate list (whitelist and blacklist alike).

    ``plate`` is normalised by the caller. ``lanes`` empty means every lane.
    ``hours`` is the opening-hours text of the entry (empty: any time).
    ``valid_from`` / ``valid_until`` are kept exactly as given (naive local
    time or timezone-aware). ``source`` says where the row came from (``local``
    edits, ``cloud`` sync, a CSV import name...). ``updated_at`` is set by the
    store when left None.
    """

    plate: str
    enabled: bool = True
    blacklist: bool = False
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    lanes: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    hours: str = ""
    note: str = ""
    source: str = "local"
    updated_at: datetime | None = attrs.field(default=None, validator=_require_aware)


@attrs.frozen
class PlateRowsWritten:
    """What a plate list write did."""

    inserted: int = 0
    updated: int = 0
    deleted: int = 0

    def __add__(self, other: PlateRowsWritten) -> PlateRowsWritten:
        return PlateRowsWritten(
            self.inserted + other.inserted,
            self.updated + other.updated,
            self.deleted + other.deleted,
        )


@attrs.frozen
class CameraListState:
    """What one camera's own whitelist holds, as last checkpointed.
    ``known`` False: the camera's list is unknown (it is cleared first)."""

    camera: str
    dialect: str | None
    known: bool
    rows: dict[str, CameraRow] = attrs.field(factory=dict)


@attrs.frozen
class OutboxItem:
    """An event waiting to be sent upstream."""

    seq: int
    event: EventRecord
    enqueued_at: datetime
    attempts: int
    next_attempt_at: datetime | None  # None: due now


@attrs.frozen
class DeadLetter:
    """An event the cloud rejected permanently; kept until replayed."""

    event_id: str
    camera: str | None
    status: int | None  # HTTP status of the rejection, None when there was none
    body: str  # the cloud's answer (bounded)
    at: datetime
    attempts: int


@attrs.frozen
class StoreHealth:
    """Whether the store can write. ``reason`` and ``since`` are set while degraded."""

    degraded: bool = False
    reason: str | None = None
    since: datetime | None = None


@attrs.frozen
class StoreStats:
    """Sizes and counts for the status page and metrics."""

    db_bytes: int  # database file and its write-ahead log
    image_bytes: int  # images present on disk (running total)
    image_files: int
    events: int
    outbox_depth: int
    dead_letters: int
    whitelist_rows: int
    commit_transactions: int  # event-commit transactions since the store opened
    health: StoreHealth
    quarantined_db: str | None  # where a corrupt database was moved at start, if it was
    images_lost: int = 0  # images that could not be written since the store opened; events kept
    db_live_bytes: int = 0  # database pages in use (what max_db_bytes caps)
    integrity: IntegrityState | None = None
    retention: EventRetentionTotals | None = None
    quarantined_rows: int = 0  # event rows set aside because they could not be read
    latest_quarantined: QuarantinedRow | None = None


@attrs.frozen
class QuarantinedRow:
    """An event row that could not be read back, set aside in the store's
    quarantine table (kept there as found, for inspection)."""

    event_id: str | None  # as found in the row
    event_seq: int | None
    reason: str
    at: datetime  # when it was set aside
    queued: bool  # it was still queued for the cloud


@attrs.frozen
class RetentionResult:
    """What one retention pass removed."""

    expired_by_age: int = 0  # images removed for being older than the retention
    expired_by_size: int = 0  # images removed to get under the size cap
    bytes_freed: int = 0
    image_bytes: int = 0  # images left on disk afterwards
    events_expired: int = 0  # event rows older than event_retention_days deleted
    events_waiting: int = 0  # old enough, kept: still to be delivered upstream
    events_dropped: int = 0  # the oldest event rows deleted to stay under max_db_bytes
    events_dropped_unsent: int = 0  # of those, events not yet delivered
    db_live_bytes: int = 0  # database pages in use afterwards


class Integrity(str, enum.Enum):
    """What is known of the database file's pages."""

    CLEAN = "clean"  # closed by the gateway last time: not checked at this start
    CHECKING = "checking"  # the last run ended without closing it: being checked
    OK = "ok"  # checked page by page since this start: no problem
    DAMAGED = "damaged"  # the check found damage: moved aside at the next start
    UNCHECKED = "unchecked"  # the check could not run to its end


@attrs.frozen
class IntegrityState:
    state: Integrity
    detail: str | None = None  # the problems found, or why the check did not finish
    at: datetime | None = None  # when the check ended


@attrs.frozen
class EventExpiry:
    """What one step of event retention (by age or by size) did."""

    removed: int = 0  # event rows deleted
    kept_waiting: int = 0  # old enough, kept: still to be delivered upstream
    dropped_unsent: int = 0  # deleted for the size cap before they were delivered
    last_seq: int = 0  # where the walk got to
    finished: bool = True  # nothing more to do in this pass
    image_bytes_freed: int = 0


@attrs.frozen
class EventRetentionTotals:
    """Event rows removed since the database was created."""

    expired: int = 0  # older than event_retention_days
    dropped: int = 0  # the oldest, to stay under max_db_bytes
    dropped_unsent: int = 0  # of those, events the cloud had not accepted


@attrs.frozen
class ImageUpload:
    """An image still to be sent upstream, queued when the cloud accepted its event."""

    seq: int  # the order images were queued in
    event_id: str
    kind: str  # "full" or "crop"
    enqueued_at: datetime


@attrs.frozen
class OutboxTrim:
    """Events taken out of the outbox to keep it under its cap, by kind:
    camera online/offline changes go first, then other non-plate events,
    plate events last. The event rows stay in the store."""

    camera_status: int = 0
    other: int = 0
    plate: int = 0

    @property
    def total(self) -> int:
        return self.camera_status + self.other + self.plate


def _str_lines(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


@attrs.frozen
class CachedCloudDecision:
    """A decision the cloud allowed the gateway to reuse until ``cache_until``
    for this plate on this lane (``lane`` empty: a camera in no lane), when the
    cloud cannot be asked."""

    plate: str
    lane: str
    open: bool
    reason: str
    cache_until: datetime = attrs.field(validator=_require_aware)
    decided_at: datetime = attrs.field(validator=_require_aware)
    display: tuple[str, ...] = attrs.field(default=(), converter=_str_lines)
    voice: str = ""


@attrs.frozen
class AdminSessionRow:
    """A login session of the admin page as kept: ``key`` is the SHA-256 of
    its cookie, never the cookie. Times are unix seconds."""

    key: str
    user: str
    role: str
    origin: str
    csrf_token: str = attrs.field(repr=False)
    created_at: float
    expires_at: float


@attrs.frozen
class AuditRow:
    """One entry of the audit log: ``who`` (``role``, ``via`` a session or
    a token) did ``action`` to ``target`` at ``at`` (unix seconds), for
    ``reason``; ``detail`` is a small JSON object. ``seq`` is 0 until stored."""

    at: float
    who: str
    role: str
    via: str
    action: str
    target: str = ""
    reason: str = ""
    detail: Mapping[str, Any] = attrs.field(factory=dict)
    seq: int = 0


#: What each part of a salvage is called in its report (and on the page).
SALVAGE_PARTS = (
    "plates",  # the plate list
    "settings",  # key/value state: admin users and tokens, cursors, totals
    "sessions",  # admin page sign-ins
    "outbox",  # events not yet delivered upstream, with their events
    "dead_letters",  # events the cloud refused, with their events
    "events",  # the most recent events (beyond those of the outbox)
    "camera_lists",  # what each camera's own list holds
    "cursors",  # where each consumer (MQTT) got to
    "cloud_decisions",  # the cloud's reusable decisions
    "image_uploads",  # images of accepted events still to send
    "audit",  # the newest entries of the audit log
)


@attrs.frozen
class SalvagedPart:
    """How much of one part of a replaced database was copied.

    ``copied`` rows are in the fresh database; ``unusable`` rows were read but
    could not be used (undecodable, or an outbox entry whose event could not
    be read); ``damaged`` counts the damaged stretches skipped while reading
    (the rows in them are lost, their number is not known)."""

    copied: int = 0
    unusable: int = 0
    damaged: int = 0

    def to_json(self) -> dict[str, int]:
        return {"copied": self.copied, "unusable": self.unusable, "damaged": self.damaged}


@attrs.frozen
class SalvageReport:
    """What was copied from a replaced database into the fresh one."""

    parts: Mapping[str, SalvagedPart] = attrs.field(factory=dict)
    finished: bool = False  # False: still running, or the gateway stopped during it
    error: str | None = None  # why nothing (more) could be read, if so

    @property
    def lost_anything(self) -> bool:
        return self.error is not None or any(
            part.unusable or part.damaged for part in self.parts.values()
        )

    def summary(self) -> str:
        """One line for the log: what was copied, what was lost."""
        copied = ", ".join(
            f"{name} {part.copied}" for name, part in self.parts.items() if part.copied
        )
        lost = ", ".join(
            f"{name} ({part.unusable} unusable rows, {part.damaged} damaged stretches)"
            for name, part in self.parts.items()
            if part.unusable or part.damaged
        )
        text = f"copied: {copied or 'nothing'}"
        text += f"; lost in: {lost}" if lost else "; nothing readable was lost"
        if self.error is not None:
            text += f"; {self.error}"
        if not self.finished:
            text += "; the salvage did not finish"
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "parts": {name: part.to_json() for name, part in self.parts.items()},
            "finished": self.finished,
            "error": self.error,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SalvageReport:
        parts = data.get("parts")
        return cls(
            parts={
                str(name): SalvagedPart(
                    copied=int(part.get("copied", 0)),
                    unusable=int(part.get("unusable", 0)),
                    damaged=int(part.get("damaged", 0)),
                )
                for name, part in (parts.items() if isinstance(parts, Mapping) else ())
                if isinstance(part, Mapping)
            },
            finished=bool(data.get("finished", False)),
            error=str(data["error"]) if data.get("error") is not None else None,
        )


@attrs.frozen
class Replacement:
    """A database that could not be used was moved aside and a fresh one
    started: kept in the fresh one (and shown) until an admin acknowledges it."""

    at: datetime  # when it was replaced
    moved_to: str  # where the old file is
    reason: str  # why it could not be used
    salvage: SalvageReport = attrs.field(factory=SalvageReport)

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "moved_to": self.moved_to,
            "reason": self.reason,
            "salvage": self.salvage.to_json(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Replacement:
        salvage = data.get("salvage")
        return cls(
            at=datetime.fromisoformat(str(data["at"])),
            moved_to=str(data["moved_to"]),
            reason=str(data.get("reason", "")),
            salvage=SalvageReport.from_json(salvage if isinstance(salvage, Mapping) else {}),
        )

    def notice(self) -> str:
        """One line for systemd's status and the log."""
        return (
            f"DATABASE REPLACED at {self.at.isoformat(timespec='seconds')} "
            f"({self.reason}); the old file is {PurePath(self.moved_to).name} beside it; "
            f"{'some data was lost' if self.salvage.lost_anything else 'salvaged'}: "
            "acknowledge on the status page"
        )


@attrs.frozen
class LogDamage:
    """The write-ahead log was damaged: SQLite replayed it up to the damage
    and dropped the transactions committed after it. Kept (and shown) until
    an admin acknowledges it."""

    at: datetime  # when it was found (the start after it happened)
    dropped_commits: int  # committed transactions found in the log past the damage
    copy: str | None  # where the damaged log was copied, for inspection

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "dropped_commits": self.dropped_commits, "copy": self.copy}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LogDamage:
        return cls(
            at=datetime.fromisoformat(str(data["at"])),
            dropped_commits=int(data["dropped_commits"]),
            copy=str(data["copy"]) if data.get("copy") is not None else None,
        )

    def notice(self) -> str:
        """One line for systemd's status and the log."""
        return (
            f"WRITE-AHEAD LOG DAMAGED (found {self.at.isoformat(timespec='seconds')}): "
            f"{self.dropped_commits} committed transactions after the damage were dropped"
            f"{'; the log is kept as ' + PurePath(self.copy).name if self.copy else ''}: "
            "acknowledge on the status page"
        )
@attrs.frozen
class LaneDayCounts:
    """Events of one lane (None: a camera in no lane) in a time range, counted
    by kind: ``reads`` plate reads (repeats not counted), ``opened`` reads the
    barrier opened for, ``refused`` reads it stayed shut for, by reason,
    ``operator_opens``, ``corrections`` (of which ``corrections_opened``
    were decided again and opened) and ``manual_entries`` (of which
    ``manual_opened`` opened the barrier)."""

    lane: str | None
    reads: int = 0
    opened: int = 0
    repeats: int = 0
    offline: int = 0
    refused: Mapping[str, int] = attrs.field(factory=dict)
    operator_opens: int = 0
    corrections: int = 0
    corrections_opened: int = 0
    manual_entries: int = 0
    manual_opened: int = 0
