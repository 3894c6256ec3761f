"""The site's plate list copied into each camera's own whitelist, so a lane
keeps opening for known cars while the gateway or its link is down.

For each camera the gateway remembers what it has sent (plate, blacklist
flag, validity) and sends the difference against the list for the camera's
lane, in the camera's own dialect (PROTOCOL.md sections 4 and 7):

* Vzenith: ``white_list_operate`` in replies, at most 5 rows a reply, adds and
  deletes in separate replies. A reply carrying rows counts as delivered.
* ParkingCam: the command is the whole heartbeat reply (delete all, then add
  in batches of up to 1000, deletions 10 at a time); each is confirmed by the
  camera's ``Response_*`` push and sent again when no confirmation comes.

While rows are pending, a comet-polling camera's polls are answered at once
(the registry does not hold a camera with queued commands), so a list of
20 000 plates reaches it in minutes. What each camera holds is checkpointed in
the store, so a restart resumes where it was; sending a row a camera already
holds is harmless.

The camera enforces nothing but validity: entries limited to weekly hours are
not copied (the camera would let the car in at any hour), nor, for ParkingCam
cameras, blacklist entries (its list can only open). Plates a camera cannot
hold (over 15 characters, outside GB2312) are skipped with a warning.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone, tzinfo
from typing import Any, Callable, Iterable

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from gateway.camera.commands import (
    CameraCommand,
    CameraWhitelistEdit,
    CommandState,
    ParkingCamWhitelistCommand,
)
from gateway.camera.registry import Camera, CameraRegistry
from gateway.policy.whitelist import WhitelistEntry
from gateway.protocol import replies
from gateway.protocol.messages import Dialect, WhitelistOperation, WhitelistResult
from gateway.protocol.replies import WhitelistOperate, WhitelistRow
from gateway.store import Store, StoreError

log = Logger()

VZENITH_ROWS_PER_REPLY = replies.MAX_WHITELIST_ROWS_PER_REPLY
PARKINGCAM_ADD_BATCH = replies.MAX_PARKINGCAM_WHITELIST_ROWS
PARKINGCAM_DELETE_BATCH = replies.MAX_PARKINGCAM_DELETE_ROWS
MAX_CAMERA_PLATE_CHARS = 15
# A sync command not delivered within this long is dropped and sent again at
# the camera's next contact.
COMMAND_EXPIRY_SECONDS = 120.0
# How long a ParkingCam camera has to confirm a whitelist command.
CONFIRM_SECONDS = 60.0
# Checkpoints of what a camera holds are written at most this often.
CHECKPOINT_SECONDS = 5.0
# Stalled cameras are retried this often.
TICK_SECONDS = 30.0
# Entries whose validity ended are taken out of the cameras this often.
EXPIRY_PASS_SECONDS = 3600.0
KV_PREFIX = "camera_whitelist:"


@attrs.frozen
class CameraRow:
    """One plate as a camera holds it."""

    plate: str
    blacklist: bool = False
    valid_from: datetime | None = None  # aware
    valid_until: datetime | None = None

    def to_json(self) -> list[Any]:
        return [
            self.blacklist,
            self.valid_from.isoformat() if self.valid_from else None,
            self.valid_until.isoformat() if self.valid_until else None,
        ]

    @classmethod
    def from_json(cls, plate: str, value: list[Any]) -> CameraRow:
        blacklist, start, end = value
        return cls(
            plate=plate,
            blacklist=bool(blacklist),
            valid_from=datetime.fromisoformat(start) if start else None,
            valid_until=datetime.fromisoformat(end) if end else None,
        )


def camera_can_hold(plate: str) -> str | None:
    """Why a camera cannot hold ``plate`` (None when it can)."""
    if len(plate) > MAX_CAMERA_PLATE_CHARS:
        return f"longer than {MAX_CAMERA_PLATE_CHARS} characters"
    try:
        plate.encode("gb2312")
    except UnicodeEncodeError:
        return "has characters outside GB2312"
    return None


def desired_rows(
    entries: Iterable[WhitelistEntry], lane: str | None, dialect: Dialect | None, now: datetime
) -> tuple[dict[str, CameraRow], list[tuple[str, str]]]:
    """The rows a camera on ``lane`` should hold, and (plate, why) of the
    entries left out for a reason worth telling."""
    rows: dict[str, CameraRow] = {}
    skipped: list[tuple[str, str]] = []
    for entry in entries:
        if not entry.enabled or not entry.covers_lane(lane):
            continue
        if entry.valid_until is not None and entry.valid_until < now:
            continue
        if entry.hours:
            skipped.append((entry.plate, "limited to weekly hours the camera cannot enforce"))
            continue
        if entry.blacklist and dialect is Dialect.PARKINGCAM:
            continue
        why = camera_can_hold(entry.plate)
        if why is not None:
            skipped.append((entry.plate, why))
            continue
        rows[entry.plate] = CameraRow(
            plate=entry.plate,
            blacklist=entry.blacklist,
            valid_from=entry.valid_from,
            valid_until=entry.valid_until,
        )
    return rows, skipped


@attrs.define
class CameraSync:
    """What one camera holds, and what is on its way to it."""

    serialno: str
    has: dict[str, CameraRow] = attrs.field(factory=dict)
    known: bool = False  # False: the camera's list is unknown, start with a full clear
    pending: CameraCommand | None = None
    to_delete: list[str] = attrs.field(factory=list)
    to_add: list[CameraRow] = attrs.field(factory=list)
    generation: int = -1  # of the list the work lists were computed from
    dirty: bool = False  # has changed since the last checkpoint
    last_checkpoint: float = 0.0
    rows_sent: int = 0
    largest_reply: int = 0
    warned: set[str] = attrs.field(factory=set)

    @property
    def in_sync(self) -> bool:
        return self.known and not self.to_delete and not self.to_add and self.pending is None

    def describe(self) -> dict[str, Any]:
        return {
            "camera": self.serialno,
            "plates": len(self.has),
            "pending_adds": len(self.to_add),
            "pending_deletes": len(self.to_delete),
            "in_sync": self.in_sync,
        }


class CameraWhitelistSync(Service):
    """Keeps every known camera's own whitelist equal to the site's list
    for its lane."""

    def __init__(
        self,
        *,
        clock: IReactorTime,
        registry: CameraRegistry,
        entries: Callable[[], Iterable[WhitelistEntry]],
        store: Callable[[], Store | None],
        tz: tzinfo,
        cameras: Iterable[str],
    ) -> None:
        self.setName("camera-whitelist-sync")
        self._clock = clock
        self._registry = registry
        self._entries = entries
        self._store = store
        self._tz = tz
        self._cameras: dict[str, CameraSync] = {}
        self._generation = 0
        self._tick: LoopingCall | None = None
        self._retry: dict[str, IDelayedCall] = {}
        self._last_expiry_pass = clock.seconds()
        self._confirm_timers: set[IDelayedCall] = set()
        # Only cameras of lanes that ask for it: a camera's first sync
        # replaces whatever its own list held.
        self._synced = {serialno.casefold() for serialno in cameras}
        registry.on_state_change(self._camera_state_changed)

    # -- service ------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._tick = LoopingCall(self._periodic)
        self._tick.clock = self._clock
        self._tick.start(TICK_SECONDS, now=False)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._tick is not None and self._tick.running:
            self._tick.stop()
        for call in [*self._retry.values(), *self._confirm_timers]:
            if call.active():
                call.cancel()
        self._retry.clear()
        self._confirm_timers.clear()
        return Deferred.fromCoroutine(self._checkpoint_all())

    # -- triggers ---------------------------------------------------------------

    def list_changed(self) -> None:
        """The site's list changed: recompute every camera's work."""
        self._generation += 1
        for camera in self._registry:
            self.kick(camera.serialno)

    def kick(self, serialno: str) -> None:
        """Send what a camera is missing, if it can take it now."""
        camera = self._registry.get(serialno)
        if camera is None or not camera.online or camera.dialect is None:
            return
        if camera.serialno.casefold() not in self._synced or not self.running:
            return
        sync = self._cameras.get(camera.serialno.casefold())
        if sync is None:
            Deferred.fromCoroutine(self._load(camera)).addErrback(
                lambda f: log.failure("Loading camera {serialno} whitelist state failed", f, serialno=serialno)
            )
            return
        self._advance(camera, sync)

    def resync(self, serialno: str) -> None:
        """Forget what the camera holds: clear its list and send it all again
        (a new camera, or one that was reset)."""
        sync = self._cameras.get(serialno.casefold())
        if sync is not None:
            sync.known = False
            sync.has.clear()
            sync.generation = -1
            sync.dirty = True
        self.kick(serialno)

    def state(self, serialno: str) -> CameraSync | None:
        return self._cameras.get(serialno.casefold())

    def whitelist_result(self, camera: Camera, result: WhitelistResult) -> None:
        """A ParkingCam camera's confirmation of a whitelist command."""
        sync = self._cameras.get(camera.serialno.casefold())
        command = sync.pending if sync else None
        if not isinstance(command, ParkingCamWhitelistCommand):
            return
        if command.operation != result.operation.value:
            return
        if result.ok is False:
            command.fail(CommandState.FAILED, "the camera refused it")
        else:
            command.complete(result)

    def _camera_state_changed(self, camera: Camera, online: bool) -> None:
        if online:
            self.kick(camera.serialno)

    def _periodic(self) -> None:
        # Stalled cameras retry every tick. Recomputing every camera's list
        # walks the whole site list, so entries whose validity ended leave
        # the cameras only hourly: the camera itself already refuses them
        # after their overdue time.
        now = self._clock.seconds()
        if now - self._last_expiry_pass >= EXPIRY_PASS_SECONDS:
            self._last_expiry_pass = now
            self._generation += 1
        for camera in self._registry:
            self.kick(camera.serialno)

    # -- the work -----------------------------------------------------------------

    async def _load(self, camera: Camera) -> None:
        key = camera.serialno.casefold()
        if key in self._cameras:
            return
        store = self._store()
        if store is None:
            return
        raw = await store.kv_get(KV_PREFIX + key)
        if key in self._cameras:
            return
        sync = CameraSync(serialno=camera.serialno)
        if raw:
            try:
                saved = json.loads(raw)
                sync.has = {
                    plate: CameraRow.from_json(plate, value)
                    for plate, value in saved["rows"].items()
                }
                sync.known = bool(saved.get("known")) and saved.get("dialect") == (
                    camera.dialect.value if camera.dialect else None
                )
            except (ValueError, KeyError, TypeError):
                log.warn("Camera {serialno} whitelist state unreadable; resyncing", serialno=camera.serialno)
                sync.has = {}
                sync.known = False
        self._cameras[key] = sync
        self._advance(camera, sync)

    def _recompute(self, camera: Camera, sync: CameraSync) -> None:
        now = datetime.fromtimestamp(self._clock.seconds(), tz=timezone.utc)
        wanted, skipped = desired_rows(self._entries(), camera.lane, camera.dialect, now)
        for plate, why in skipped:
            if plate not in sync.warned:
                sync.warned.add(plate)
                log.warn(
                    "Plate {plate} is not copied to camera {serialno}: {why}",
                    plate=plate,
                    serialno=camera.serialno,
                    why=why,
                )
        has = sync.has if sync.known else {}
        parkingcam = camera.dialect is Dialect.PARKINGCAM
        changed = [plate for plate, row in wanted.items() if plate in has and has[plate] != row]
        sync.to_delete = sorted(set(has) - set(wanted))
        if parkingcam:
            # ParkingCam adds do not say whether they replace a row: a changed
            # row is deleted, then added again.
            sync.to_delete += sorted(changed)
        sync.to_add = [row for plate, row in sorted(wanted.items()) if has.get(plate) != row]
        sync.generation = self._generation

    def _advance(self, camera: Camera, sync: CameraSync) -> None:
        if sync.pending is not None or not camera.online or not self.running:
            return
        if sync.generation != self._generation:
            self._recompute(camera, sync)
        if camera.dialect is Dialect.PARKINGCAM:
            command = self._parkingcam_step(sync)
        else:
            command = self._vzenith_step(sync)
        if command is None:
            if sync.dirty:
                self._checkpoint(sync)
            return
        sync.pending = command
        command.camera = camera.serialno
        command.done.addBoth(self._step_done, camera, sync)
        if command.confirmed:
            # Delivered or not, a confirmation must come by then.
            deadline = COMMAND_EXPIRY_SECONDS + CONFIRM_SECONDS
            timer = self._clock.callLater(deadline, self._unconfirmed, command)
            self._confirm_timers.add(timer)

            def settled(result: CameraCommand) -> CameraCommand:
                self._confirm_timers.discard(timer)
                if timer.active():
                    timer.cancel()
                return result

            command.done.addCallback(settled)
        self._registry.queue(camera.serialno, command)

    def _unconfirmed(self, command: CameraCommand) -> None:
        if command.state is CommandState.DELIVERED:
            command.fail(CommandState.FAILED, "no confirmation from the camera")

    def _vzenith_step(self, sync: CameraSync) -> CameraCommand | None:
        expires = self._clock.seconds() + COMMAND_EXPIRY_SECONDS
        if not sync.known:
            # An empty plate in a delete clears the camera's whole list.
            operation = WhitelistOperate("delete", (WhitelistRow(plate=""),))
            return CameraWhitelistEdit(operation=operation, expires_at=expires)
        if sync.to_delete:
            plates = sync.to_delete[:VZENITH_ROWS_PER_REPLY]
            rows = tuple(WhitelistRow(plate=plate) for plate in plates)
            return CameraWhitelistEdit(operation=WhitelistOperate("delete", rows), expires_at=expires)
        if sync.to_add:
            batch = sync.to_add[:VZENITH_ROWS_PER_REPLY]
            rows = tuple(
                WhitelistRow(
                    plate=row.plate,
                    enable=True,
                    blacklist=row.blacklist,
                    enable_time=self._local(row.valid_from),
                    overdue_time=self._local(row.valid_until),
                )
                for row in batch
            )
            return CameraWhitelistEdit(operation=WhitelistOperate("add", rows), expires_at=expires)
        return None

    def _parkingcam_step(self, sync: CameraSync) -> CameraCommand | None:
        expires = self._clock.seconds() + COMMAND_EXPIRY_SECONDS
        if not sync.known:
            return ParkingCamWhitelistCommand(
                body=replies.parkingcam_delete_all_whitelist(),
                operation=WhitelistOperation.DELETE_ALL.value,
                expires_at=expires,
            )
        if sync.to_delete:
            plates = sync.to_delete[:PARKINGCAM_DELETE_BATCH]
            return ParkingCamWhitelistCommand(
                body=replies.parkingcam_delete_whitelist(plates),
                operation=WhitelistOperation.DELETE.value,
                expires_at=expires,
            )
        if sync.to_add:
            batch = sync.to_add[:PARKINGCAM_ADD_BATCH]
            return ParkingCamWhitelistCommand(
                body=replies.parkingcam_add_whitelist(
                    [
                        (row.plate, self._local(row.valid_from), self._local(row.valid_until))
                        for row in batch
                    ]
                ),
                operation=WhitelistOperation.ADD.value,
                expires_at=expires,
            )
        return None

    def _step_done(
        self, command: CameraCommand, camera: Camera, sync: CameraSync
    ) -> CameraCommand:
        self._step_finished(command, camera, sync)
        return command

    def _step_finished(self, command: CameraCommand, camera: Camera, sync: CameraSync) -> None:
        if sync.pending is command:
            sync.pending = None
        # done fires at a final state: delivered (Vzenith rows ride in a
        # reply), completed (ParkingCam confirmed), expired or failed.
        if command.state in (CommandState.DELIVERED, CommandState.COMPLETED):
            self._applied(command, sync)
            self._advance(camera, sync)
            return
        # The same rows go again: right away for a command that expired
        # while the camera was silent (it is talking again now), after a
        # pause for one the camera refused or did not confirm.
        log.info(
            "Whitelist update for camera {serialno} {state}: {reason}; sending it again",
            serialno=camera.serialno,
            state=command.state.value,
            reason=command.reason,
        )
        delay = 0.0 if command.state is CommandState.EXPIRED else CONFIRM_SECONDS / 2
        previous = self._retry.pop(camera.serialno, None)
        if previous is not None and previous.active():
            previous.cancel()
        self._retry[camera.serialno] = self._clock.callLater(
            delay, self._retry_now, camera.serialno
        )

    def _retry_now(self, serialno: str) -> None:
        self._retry.pop(serialno, None)
        self.kick(serialno)

    def _applied(self, command: CameraCommand, sync: CameraSync) -> None:
        """What the camera now holds after ``command``."""
        sync.dirty = True
        if isinstance(command, CameraWhitelistEdit) and command.operation is not None:
            operation = command.operation
            sync.largest_reply = max(sync.largest_reply, len(operation.rows))
            sync.rows_sent += len(operation.rows)
            plates = [row.plate for row in operation.rows]
            if operation.operate == "delete" and plates == [""]:
                sync.has.clear()
                sync.known = True
                sync.generation = -1
            elif operation.operate == "delete":
                for plate in plates:
                    sync.has.pop(plate, None)
                del sync.to_delete[: len(plates)]
            else:
                for row in sync.to_add[: len(plates)]:
                    sync.has[row.plate] = row
                del sync.to_add[: len(plates)]
        elif isinstance(command, ParkingCamWhitelistCommand):
            if command.operation == WhitelistOperation.DELETE_ALL.value:
                sync.has.clear()
                sync.known = True
                sync.generation = -1
            elif command.operation == WhitelistOperation.DELETE.value:
                plates = sync.to_delete[:PARKINGCAM_DELETE_BATCH]
                for plate in plates:
                    sync.has.pop(plate, None)
                del sync.to_delete[: len(plates)]
            else:
                batch = sync.to_add[:PARKINGCAM_ADD_BATCH]
                for row in batch:
                    sync.has[row.plate] = row
                del sync.to_add[: len(batch)]
        now = self._clock.seconds()
        if sync.in_sync or now - sync.last_checkpoint >= CHECKPOINT_SECONDS:
            self._checkpoint(sync)

    # -- checkpoints --------------------------------------------------------------

    def _checkpoint(self, sync: CameraSync) -> None:
        sync.last_checkpoint = self._clock.seconds()
        sync.dirty = False
        Deferred.fromCoroutine(self._save(sync)).addErrback(
            lambda f: log.failure("Saving camera {serialno} whitelist state failed", f, serialno=sync.serialno)
        )

    async def _save(self, sync: CameraSync) -> None:
        store = self._store()
        if store is None:
            sync.dirty = True
            return
        camera = self._registry.get(sync.serialno)
        value = json.dumps(
            {
                "known": sync.known,
                "dialect": camera.dialect.value if camera and camera.dialect else None,
                "rows": {plate: row.to_json() for plate, row in sync.has.items()},
            },
            ensure_ascii=False,
            separators=(",", ":"),
        )
        try:
            await store.kv_set(KV_PREFIX + sync.serialno.casefold(), value)
        except StoreError as error:
            sync.dirty = True
            log.warn(
                "Camera {serialno} whitelist state not saved: {reason}",
                serialno=sync.serialno,
                reason=str(error),
            )

    async def _checkpoint_all(self) -> None:
        for sync in self._cameras.values():
            if sync.dirty:
                await self._save(sync)

    def _local(self, value: datetime | None) -> datetime | None:
        """Camera clocks run on site local time, without a zone."""
        if value is None:
            return None
        return value.astimezone(self._tz).replace(tzinfo=None)
