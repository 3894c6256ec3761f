"""Camera events into the durable store, before the camera is answered."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from gateway.bus import EventBus
from gateway.camera.events import CameraEvent, EventNotKept
from gateway.camera.settings import CameraServerSettings
from gateway.policy.decision import Decision
from gateway.protocol.messages import (
    CameraReceipt,
    Heartbeat,
    IoInput,
    PlateResult,
    Registration,
    SerialData,
    SnapshotUpload,
    WhitelistResult,
)
from gateway.store import EventRecord, EventType, Store, StoreWriteError
from gateway.store.bounded import RecordLimits, bound_record

log = Logger()

_TYPES = {
    "plate": EventType.PLATE,
    "io": EventType.IO,
    "serial": EventType.SERIAL,
    "snapshot": EventType.SNAPSHOT,
    "camera_online": EventType.CAMERA_ONLINE,
    "camera_offline": EventType.CAMERA_OFFLINE,
    "whitelist_result": EventType.COMMAND_RESULT,
    "command_result": EventType.COMMAND_RESULT,
    "receipt": EventType.COMMAND_RESULT,
}


#: The limits of ``[camera_server]``'s defaults.
DEFAULT_LIMITS = RecordLimits()


def record_limits(settings: CameraServerSettings) -> RecordLimits:
    """What an event's raw record keeps of a push, from ``[camera_server]``."""
    return RecordLimits(
        max_record_bytes=settings.max_record_bytes,
        max_text_chars=settings.max_field_chars,
        max_items=settings.max_field_items,
        max_nesting=settings.max_field_nesting,
    )


def _raw(event: CameraEvent) -> dict[str, Any]:
    """What the camera sent, JSON-ready: every field at every level of the push, as sent,
    without image data (kept as files) or secrets; plus, under names of its own, what the
    gateway read from it (``dialect``, ``imagePathDecoded``, ``imageErrors``, ``truncated``,
    ``lengthOk``, ``kind``, ``operation``). Fields the body carried at its top level beside
    the message's own key are under ``beside``."""
    message = event.message
    raw: dict[str, Any]
    if isinstance(message, PlateResult):
        raw = {"PlateResult": dict(message.raw)}
        for name, value in message.fields.items():
            raw.setdefault(name, value)
        raw["dialect"] = message.dialect.value
        if message.image_path is not None:
            raw["imagePathDecoded"] = message.image_path
        if message.image_errors:
            raw["imageErrors"] = list(message.image_errors)
    elif isinstance(message, SerialData):
        raw = {
            **dict(message.raw),
            # The bytes received, in standard base64 (whitespace and padding as the
            # camera wrote them are not kept; the bytes are).
            "data": base64.b64encode(message.data).decode("ascii"),
            "truncated": message.truncated,
        }
    elif isinstance(message, SnapshotUpload):
        raw = {**dict(message.raw), "lengthOk": message.image.length_ok}
    elif isinstance(message, WhitelistResult):
        raw = {
            **dict(message.raw),
            "kind": type(message).__name__,
            "operation": message.operation.value,
            "response": message.key,
        }
    elif isinstance(message, (IoInput, Heartbeat, CameraReceipt)):
        raw = {**dict(message.raw), "kind": type(message).__name__}
    elif isinstance(message, Registration):
        # Never the camera's web login.
        return {"device_name": message.device_name, "ipaddr": message.ipaddr, "port": message.port}
    else:
        return dict(event.details)
    beside = getattr(message, "beside", None)
    if beside:
        raw["beside"] = dict(beside)
    return raw


def _images(event: CameraEvent) -> list[tuple[str, bytes]]:
    message = event.message
    if isinstance(message, PlateResult):
        return [(image.kind, image.data) for image in message.images]
    if isinstance(message, SnapshotUpload):
        return [("full", message.image.data)]
    return []


def to_record(event: CameraEvent, limits: RecordLimits = DEFAULT_LIMITS) -> EventRecord:
    """The store's row for a camera event; its raw record within ``limits``
    (what was cut is said in the record, see :mod:`gateway.store.bounded`)."""
    message = event.message
    decision = event.decision
    camera_time = None
    license = ""
    offline = False
    if isinstance(message, PlateResult):
        camera_time = message.camera_time.as_datetime() if message.camera_time else None
        license = message.license
        offline = message.offline
    return EventRecord(
        id=event.id,
        type=_TYPES[event.kind],
        received_at=event.received_at,
        camera=event.camera,
        lane=event.lane,
        camera_time=camera_time,
        plate=decision.plate if decision else "",
        license=license,
        offline=offline,
        decision_open=decision.open if decision else None,
        decision_reason=decision.reason if decision else None,
        decision_source=decision.source if decision else None,
        repeat=event.repeat,
        raw=bound_record(_raw(event), limits),
        reply=json.dumps({"open_channel": event.open_channel}) if event.kind == "plate" else None,
    )


def as_kept(event: CameraEvent, record: EventRecord) -> CameraEvent:
    """``event`` as first received and answered (for a re-sent push)."""
    decision = event.decision
    if record.decision_open is not None and record.decision_reason is not None:
        decision = Decision(
            open=record.decision_open,
            reason=record.decision_reason,
            source=record.decision_source or "local",
            plate=record.plate,
        )
    open_channel = None
    if record.reply:
        try:
            open_channel = json.loads(record.reply).get("open_channel")
        except (ValueError, AttributeError):
            open_channel = None
    return CameraEvent(
        id=record.id,
        kind=event.kind,
        camera=event.camera,
        lane=record.lane,
        received_at=record.received_at,
        message=event.message,
        decision=decision,
        repeat=record.repeat,
        open_channel=open_channel,
        resent=True,
    )


class StoreRecorder:
    """Keeps every camera event durably before its reply is sent.

    ``store`` returns the open store, or None while it is still opening (the
    camera is then left to send the event again). ``outbox`` says whether
    events are queued for the cloud.
    """

    def __init__(
        self,
        store: Callable[[], Store | None],
        *,
        outbox: bool = False,
        bus: EventBus | None = None,
        clock: IReactorTime | None = None,
        limits: RecordLimits = DEFAULT_LIMITS,
    ) -> None:
        self._store = store
        self.limits = limits
        self.outbox = outbox
        self.bus = bus
        self._clock = clock
        # Told after each new event is committed (the cloud link drains at once).
        self.on_commit: Callable[[], None] | None = None
        # Told how long each commit took, in seconds (metrics).
        self.on_commit_time: Callable[[float], None] | None = None

    async def record(self, event: CameraEvent) -> CameraEvent:
        store = self._store()
        if store is None:
            raise EventNotKept("the event store is not open yet")
        started = self._clock.seconds() if self._clock is not None else None
        try:
            result = await store.commit_event(
                to_record(event, self.limits), _images(event), outbox=self.outbox
            )
        except StoreWriteError as error:
            raise EventNotKept(str(error)) from error
        if started is not None and self._clock is not None and self.on_commit_time is not None:
            self.on_commit_time(self._clock.seconds() - started)
        kept = event if result.created else as_kept(event, result.record)
        _log_event(kept)
        if result.created:
            self._committed(result.record)
        return kept

    async def keep(self, record: EventRecord) -> None:
        """Keep an event the gateway made itself (the result of a command that
        never reached a camera), told to the consumers like a camera's.
        Raises :class:`EventNotKept`."""
        store = self._store()
        if store is None:
            raise EventNotKept("the event store is not open yet")
        try:
            result = await store.commit_event(record, outbox=self.outbox)
        except StoreWriteError as error:
            raise EventNotKept(str(error)) from error
        if result.created:
            self._committed(result.record)

    def _committed(self, record: EventRecord) -> None:
        if self.bus is not None:
            self.bus.publish("event", event_summary(record))
        if self.on_commit is not None:
            self.on_commit()


def event_summary(record: EventRecord) -> dict[str, Any]:
    """A kept event as JSON for the live stream and the admin API."""
    return {
        "id": record.id,
        "seq": record.seq,
        "type": record.type.value,
        "camera": record.camera,
        "lane": record.lane,
        "received_at": record.received_at.isoformat(),
        "camera_time": record.camera_time.isoformat() if record.camera_time else None,
        "plate": record.plate,
        "license": record.license,
        "offline": record.offline,
        "repeat": record.repeat,
        "decision": None
        if record.decision_open is None
        else {
            "open": record.decision_open,
            "reason": record.decision_reason,
            "source": record.decision_source,
        },
        "images": [
            kind for kind in ("full", "crop") if record.image_state(kind).value == "present"
        ],
        "raw": dict(record.raw),
        "answers": record.answers,
    }


def _log_event(event: CameraEvent) -> None:
    decision = event.decision
    if event.kind == "plate" and isinstance(event.message, PlateResult) and decision:
        log.info(
            "Plate {license} on lane {lane} (camera {camera}): {verdict}, {reason}"
            "{offline}{repeat}{resent}",
            event_id=event.id,
            kind=event.kind,
            license=event.message.license,
            plate=decision.plate,
            camera=event.camera,
            lane=event.lane,
            verdict="open" if event.open_channel is not None else "barrier stays shut",
            open=decision.open,
            reason=decision.reason,
            source=decision.source,
            offline=" (offline record)" if event.message.offline else "",
            repeat=" (repeat read)" if event.repeat else "",
            resent=" (sent again; answered as before)" if event.resent else "",
        )
    else:
        log.info(
            "{kind} event from camera {camera} (lane {lane})",
            event_id=event.id,
            kind=event.kind,
            camera=event.camera,
            lane=event.lane,
        )
