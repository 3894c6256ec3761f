"""Camera events into the durable store, before the camera is answered."""

from __future__ import annotations

import base64
import json
from typing import Any, Callable

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from gateway.bus import EventBus
from gateway.camera.events import CameraEvent, EventNotKept
from gateway.policy.decision import Decision
from gateway.protocol.messages import (
    Heartbeat,
    IoInput,
    PlateResult,
    Registration,
    SerialData,
    SnapshotUpload,
    WhitelistResult,
)
from gateway.store import EventRecord, EventType, Store, StoreWriteError

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
}


def _raw(event: CameraEvent) -> dict[str, Any]:
    """What the camera sent, JSON-ready, without image data or secrets."""
    message = event.message
    if isinstance(message, PlateResult):
        envelope = {
            "serialno": message.serialno,
            "deviceName": message.device_name,
            "ipaddr": message.ipaddr,
            "channel": message.channel,
            "dialect": message.dialect.value,
        }
        raw: dict[str, Any] = {"PlateResult": dict(message.raw), **envelope}
        if message.image_path is not None:
            raw["imagePathDecoded"] = message.image_path
        if message.image_errors:
            raw["imageErrors"] = list(message.image_errors)
        return raw
    if isinstance(message, SerialData):
        return {
            "serialChannel": message.serial_channel,
            "data": base64.b64encode(message.data).decode("ascii"),
            "dataLen": message.declared_length,
            "truncated": message.truncated,
            "ipaddr": message.ipaddr,
        }
    if isinstance(message, SnapshotUpload):
        return {
            "ipaddr": message.ipaddr,
            "imageFileLen": message.image.declared_length,
            "lengthOk": message.image.length_ok,
        }
    if isinstance(message, (IoInput, Heartbeat, WhitelistResult)):
        return {**dict(message.raw), "kind": type(message).__name__}
    if isinstance(message, Registration):
        # Never the camera's web login.
        return {"device_name": message.device_name, "ipaddr": message.ipaddr, "port": message.port}
    return dict(event.details)


def _images(event: CameraEvent) -> list[tuple[str, bytes]]:
    message = event.message
    if isinstance(message, PlateResult):
        return [(image.kind, image.data) for image in message.images]
    if isinstance(message, SnapshotUpload):
        return [("full", message.image.data)]
    return []


def to_record(event: CameraEvent) -> EventRecord:
    """The store's row for a camera event."""
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
        raw=_raw(event),
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
    ) -> None:
        self._store = store
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
            result = await store.commit_event(to_record(event), _images(event), outbox=self.outbox)
        except StoreWriteError as error:
            raise EventNotKept(str(error)) from error
        if started is not None and self._clock is not None and self.on_commit_time is not None:
            self.on_commit_time(self._clock.seconds() - started)
        kept = event if result.created else as_kept(event, result.record)
        _log_event(kept)
        if result.created:
            if self.bus is not None:
                self.bus.publish("event", event_summary(result.record))
            if self.on_commit is not None:
                self.on_commit()
        return kept


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
