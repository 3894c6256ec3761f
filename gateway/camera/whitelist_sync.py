"""The site's plate list copied into each camera's own whitelist, so a lane
keeps opening for known cars while the gateway or its link is down.

For each camera the gateway keeps what it holds and the work still to send
(:class:`~gateway.policy.cameralist.CameraListWork`), and sends that work in
the camera's own dialect (PROTOCOL.md sections 4 and 7):

* Vzenith: ``white_list_operate`` in replies, at most 5 rows a reply, adds and
  deletes in separate replies. A reply carrying rows counts as delivered.
* ParkingCam: the command is the whole heartbeat reply (delete all, then add
  in batches of up to 1000, deletions 10 at a time); each is confirmed by the
  camera's ``Response_*`` push and sent again when no confirmation comes.

A change of the site's list reaches each camera's work in time proportional
to the change. Full recomputes (a camera seen for the first time, a large
change, the hourly pass that takes expired entries out, a requested resync,
a list cut to the camera's capacity) run off the reactor on a snapshot, one
camera at a time. What each camera holds is checkpointed in the store row by
row, so a restart resumes where it was.

While rows are pending, a comet-polling camera's polls are answered at once
(the registry does not hold a camera with queued commands), so a list of
20 000 plates reaches it in minutes.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone, tzinfo
from typing import Any, Protocol

import attrs
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from gateway.background import InThread
from gateway.camera.commands import (
    CameraCommand,
    CameraWhitelistEdit,
    CommandState,
    ParkingCamWhitelistCommand,
)
from gateway.camera.registry import Camera, CameraRegistry
from gateway.heap import bulk
from gateway.policy.cameralist import (
    CameraListRules,
    CameraListWork,
    CameraRow,
    DesiredList,
    RowChange,
    desired_lists,
    row_change,
)
from gateway.policy.whitelist import PlateListChange, WhitelistEntry
from gateway.protocol import replies
from gateway.protocol.capabilities import Capability
from gateway.protocol.messages import Dialect, WhitelistOperation, WhitelistResult
from gateway.protocol.replies import CameraWhitelistRow, WhitelistOperate
from gateway.store import CameraListState, StoreError
from gateway.timers import Every

log = Logger()

VZENITH_ROWS_PER_REPLY = replies.MAX_WHITELIST_ROWS_PER_REPLY
PARKINGCAM_ADD_BATCH = replies.MAX_PARKINGCAM_WHITELIST_ROWS
PARKINGCAM_DELETE_BATCH = replies.MAX_PARKINGCAM_DELETE_ROWS
#: Rows of a ParkingCam list read back per whiteList query.
PARKINGCAM_QUERY_PAGE = replies.MAX_PARKINGCAM_WHITELIST_ROWS
#: Where a ParkingCam camera's encoding is kept (key + case-folded serial number).
_CHARSET_KEY = "camera_charset."
#: How often a verified ParkingCam list is read back again.
READ_BACK_SECONDS = 24 * 3600.0
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
# A change larger than this is not applied row by row on the reactor: each
# camera's work is recomputed off it instead.
INCREMENTAL_LIMIT = 2000
# Rows of changes applied to cameras' work in one turn of the event loop
# (a few milliseconds); more wait for the next turn, after the cameras.
ROWS_PER_TURN = 500



class CameraLists(Protocol):
    """Where what each camera holds is checkpointed (the store)."""

    async def camera_list(self, camera: str) -> CameraListState | None: ...

    async def kv_get(self, key: str) -> str | None: ...

    async def kv_set(self, key: str, value: str | None) -> None: ...

    async def save_camera_list(
        self,
        camera: str,
        *,
        dialect: str | None,
        known: bool,
        cleared: bool,
        changes: Mapping[str, CameraRow | None],
    ) -> None: ...


@attrs.frozen
class LaneListSettings:
    """How one synced camera's list is kept: its lane and the most rows its
    list takes (None: no limit)."""

    lane: str
    capacity: int | None = None


@attrs.define(eq=False)
class _Incoming:
    """A change of the list on its way into one camera's work."""

    items: list[tuple[str, WhitelistEntry | None]]  # plate -> its entry now (None: gone)
    previous: Mapping[str, WhitelistEntry]
    done: int = 0


@attrs.define(eq=False)
class CameraSync:
    """What one camera holds, and what is on its way to it."""

    serialno: str
    dialect: Dialect
    work: CameraListWork
    capacity: int | None = None
    pending: CameraCommand | None = None
    sent: tuple[Any, ...] = ()  # the rows (adds) or plates (deletes) of ``pending``
    # What changed since the last checkpoint: plate -> row held (None: gone).
    unsaved: dict[str, CameraRow | None] = attrs.field(factory=dict)
    unsaved_clear: bool = False
    last_checkpoint: float = 0.0
    # A full recompute is on its way (no command goes out meanwhile), or due.
    recomputing: bool = False
    stale: bool = True
    # Commands the camera confirmed while a recompute ran (whether a clear,
    # what they carried): taken in when it lands.
    confirmed: list[tuple[bool, tuple[Any, ...]]] = attrs.field(factory=list)
    # Changes still to apply, in order, with how far the first one got.
    incoming: deque[_Incoming] = attrs.field(factory=deque)
    rows_sent: int = 0
    largest_reply: int = 0
    warned: set[str] = attrs.field(factory=set)
    # A ParkingCam list read back with the camera's whiteList query: when it
    # last matched (clock seconds; None: not since the last full sync), the
    # plates read so far, and whether a read-back is due.
    verified_at: float | None = None
    read_back: set[str] = attrs.field(factory=set)
    verify_due: bool = False
    # After a restart only the count is read (one query); after a full sync
    # and daily, every row.
    verify_rows: bool = True
    # The camera's encoding as last kept in the store.
    saved_charset: str | None = None

    @property
    def in_sync(self) -> bool:
        return (
            self.work.done and self.pending is None and not self.stale and not self.recomputing
        )

    @property
    def partial(self) -> bool:
        """The camera holds only part of its lane's list (its capacity)."""
        return self.work.wanted > self.work.size

    def describe(self) -> dict[str, Any]:
        return {
            "camera": self.serialno,
            "plates": len(self.work.has) if self.work.known else 0,
            "pending_adds": len(self.work.to_add),
            "pending_deletes": len(self.work.to_delete),
            "in_sync": self.in_sync,
            "lane_plates": self.work.wanted,
            "capacity": self.capacity,
            "partial": self.partial,
            # "verified": read back from the camera and found equal (ParkingCam's
            # whiteList query); "assumed": every command confirmed or delivered,
            # with no way to read the list back (Vzenith), or not read back yet.
            "verified": self.verified_at is not None,
            "verified_at": self.verified_at,
        }


class CameraWhitelistSync(MultiService):
    """Keeps every synced camera's own whitelist equal to the site's list
    for its lane (or to the part of it the camera can hold)."""

    def __init__(
        self,
        *,
        clock: IReactorTime,
        registry: CameraRegistry,
        snapshot: Callable[[], Sequence[WhitelistEntry]],
        store: Callable[[], CameraLists | None],
        tz: tzinfo,
        cameras: Mapping[str, LaneListSettings],
        in_thread: InThread,
    ) -> None:
        super().__init__()
        self.setName("camera-whitelist-sync")
        self._clock = clock
        self._registry = registry
        self._snapshot = snapshot
        self._store = store
        self._tz = tz
        self._in_thread = in_thread
        # Only cameras of lanes that ask for it: a camera's first sync
        # replaces whatever its own list held.
        self._settings = {serialno.casefold(): lane for serialno, lane in cameras.items()}
        self._cameras: dict[str, CameraSync] = {}
        self._loading: set[str] = set()
        self._recompute_queue: list[str] = []
        self._recompute_running = False
        self._draining = False
        self._saving = DeferredLock()
        Every(clock, TICK_SECONDS, self._periodic, name="camera-list-tick").setServiceParent(self)
        self._retry: dict[str, IDelayedCall] = {}
        self._last_expiry_pass = clock.seconds()
        self._confirm_timers: set[IDelayedCall] = set()
        self.recomputes = 0
        registry.on_state_change(self._camera_state_changed)

    # -- service ------------------------------------------------------------

    def stopService(self) -> Deferred[None]:
        timers = super().stopService()
        for call in [*self._retry.values(), *self._confirm_timers]:
            if call.active():
                call.cancel()
        self._retry.clear()
        self._confirm_timers.clear()
        return Deferred.fromCoroutine(self._stop(timers))

    async def _stop(self, timers: Deferred[object]) -> None:
        await timers
        await self._checkpoint_all()

    # -- triggers ---------------------------------------------------------------

    def list_changed(self, change: PlateListChange) -> None:
        """The site's list changed: bring each camera's work up to date, in
        time proportional to ``change`` (a large change is a recompute)."""
        if not change:
            return
        large = len(change) > INCREMENTAL_LIMIT
        items: list[tuple[str, WhitelistEntry | None]] | None = None
        for key, sync in self._cameras.items():
            if sync.stale:
                continue  # a recompute is due: it will see the change
            if large:
                self._schedule_recompute(key)
                continue
            if items is None:
                items = [(plate, None) for plate in change.deletes]
                items += [(entry.plate, entry) for entry in change.upserts]
            # A camera whose recompute runs takes it once that lands.
            sync.incoming.append(_Incoming(items=items, previous=change.previous))
        self._drain_soon()

    def kick(self, serialno: str) -> None:
        """Send what a camera is missing, if it can take it now."""
        camera = self._registry.get(serialno)
        if camera is None or not camera.online or camera.dialect is None:
            return
        key = camera.serialno.casefold()
        if key not in self._settings or not self.running:
            return
        if camera.mode.refusal(Capability.WHITELIST) is not None:
            # Older firmware keeps no list of its own: nothing to send (its
            # lane's status says so).
            return
        sync = self._cameras.get(key)
        if sync is None:
            if key not in self._loading:
                self._loading.add(key)
                Deferred.fromCoroutine(self._load(camera)).addErrback(
                    lambda f: log.failure(
                        "Loading camera {serialno} whitelist state failed", f, serialno=serialno
                    )
                )
            return
        if sync.dialect is not camera.dialect:
            # Another firmware or dialect behind the same serial number: its
            # list is unknown.
            sync.dialect = camera.dialect
            sync.work.replace_on_change = camera.dialect is Dialect.PARKINGCAM
            self._reset(sync)
        self._advance(camera, sync)

    def resync(self, serialno: str) -> None:
        """Forget what the camera holds: clear its list and send it all again
        (a new camera, or one that was reset)."""
        sync = self._cameras.get(serialno.casefold())
        if sync is not None:
            self._reset(sync)
        self.kick(serialno)

    def settings_for(self, serialno: str) -> LaneListSettings | None:
        """How the list of this camera is kept (None: its lane does not sync it)."""
        return self._settings.get(serialno.casefold())

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
        # Stalled cameras retry every tick. Entries whose validity ended leave
        # the cameras hourly, by a recompute (the camera itself already
        # refuses them after their overdue time).
        now = self._clock.seconds()
        if now - self._last_expiry_pass >= EXPIRY_PASS_SECONDS:
            self._last_expiry_pass = now
            for key in self._cameras:
                self._schedule_recompute(key)
        for sync in self._cameras.values():
            if (
                sync.dialect is Dialect.PARKINGCAM
                and sync.verified_at is not None
                and now - sync.verified_at >= READ_BACK_SECONDS
            ):
                sync.verify_due, sync.verify_rows = True, True
        for camera in self._registry:
            self.kick(camera.serialno)

    # -- the work -----------------------------------------------------------------

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.seconds(), tz=timezone.utc)

    def _rules(self, sync: CameraSync) -> CameraListRules:
        settings = self._settings[sync.serialno.casefold()]
        return CameraListRules(
            lane=settings.lane,
            # A ParkingCam list can only open.
            holds_blacklist=sync.dialect is not Dialect.PARKINGCAM,
            capacity=settings.capacity,
        )

    def _drain_soon(self) -> None:
        if self._draining:
            return
        self._draining = True
        Deferred.fromCoroutine(self._drain()).addErrback(
            lambda f: log.failure("Applying a plate list change to the cameras failed", f)
        )

    async def _drain(self) -> None:
        """Apply incoming changes to every camera's work, at most
        ``ROWS_PER_TURN`` rows a turn of the event loop, in order."""
        try:
            budget = ROWS_PER_TURN
            while self.running:
                ready = [
                    sync
                    for sync in self._cameras.values()
                    if sync.incoming and not sync.recomputing and not sync.stale
                ]
                if not ready:
                    return
                for sync in ready:
                    if budget <= 0:
                        break
                    budget -= self._apply_some(sync, budget)
                if budget <= 0:
                    await deferLater(self._clock, 0, lambda: None)
                    budget = ROWS_PER_TURN
        finally:
            self._draining = False

    def _apply_some(self, sync: CameraSync, budget: int) -> int:
        """Apply up to ``budget`` rows of the camera's first incoming change;
        returns how many."""
        incoming = sync.incoming[0]
        rules = self._rules(sync)
        now = self._now()
        batch = incoming.items[incoming.done : incoming.done + budget]
        changes: dict[str, RowChange] = {}
        for plate, entry in batch:
            changes[plate], why = row_change(entry, incoming.previous.get(plate), rules, now)
            if why is not None:
                self._warn_skipped(sync, ((plate, why),))
        incoming.done += len(batch)
        if incoming.done >= len(incoming.items):
            sync.incoming.popleft()
        if not sync.work.apply(changes):
            self._schedule_recompute(sync.serialno.casefold())
        else:
            self.kick(sync.serialno)
        return len(batch)

    def _warn_skipped(self, sync: CameraSync, skipped: Iterable[tuple[str, str]]) -> None:
        fresh = [(plate, why) for plate, why in skipped if plate not in sync.warned]
        if not fresh:
            return
        sync.warned.update(plate for plate, _ in fresh)
        by_reason: dict[str, list[str]] = {}
        for plate, why in fresh:
            by_reason.setdefault(why, []).append(plate)
        for why, plates in by_reason.items():
            log.warn(
                "{count} plates are not copied to camera {serialno} ({why}): {plates}",
                count=len(plates),
                serialno=sync.serialno,
                why=why,
                plates=", ".join(plates[:5]) + (f" and {len(plates) - 5} more" if len(plates) > 5 else ""),
            )

    def _reset(self, sync: CameraSync) -> None:
        sync.work.reset()
        sync.unsaved.clear()
        sync.unsaved_clear = True
        self._schedule_recompute(sync.serialno.casefold())

    async def _load(self, camera: Camera) -> None:
        key = camera.serialno.casefold()
        try:
            store = self._store()
            if store is None:
                return
            saved: CameraListState | None = await store.camera_list(key)
            charset = await store.kv_get(_CHARSET_KEY + key)
        except StoreError as error:
            # Closed while the gateway stops, or failing: the next kick tries again.
            if self.running:
                log.warn(
                    "Camera {serialno}'s list state could not be read: {reason}",
                    serialno=camera.serialno,
                    reason=str(error),
                )
            return
        finally:
            self._loading.discard(key)
        if camera.charset is None and charset:
            # The encoding its pushes showed before a restart: its list
            # commands are written in it before it shows it again.
            camera.charset = charset
        if key in self._cameras or camera.dialect is None:
            return
        parkingcam = camera.dialect is Dialect.PARKINGCAM
        work = CameraListWork(replace_on_change=parkingcam)
        if saved is not None and saved.known and saved.dialect == camera.dialect.value:
            work.has = dict(saved.rows)
            work.known = True
        sync = CameraSync(
            serialno=camera.serialno,
            dialect=camera.dialect,
            work=work,
            capacity=self._settings[key].capacity,
            # What a ParkingCam camera holds is checked after a restart too
            # (it may have been reset, or edited on its own page, meanwhile):
            # its count at once, every row at the daily read-back.
            verify_due=work.known and camera.dialect is Dialect.PARKINGCAM,
            verify_rows=False,
        )
        self._cameras[key] = sync
        self._schedule_recompute(key)

    # -- full recomputes, off the reactor ------------------------------------------

    def _schedule_recompute(self, key: str) -> None:
        sync = self._cameras.get(key)
        if sync is None:
            return
        sync.stale = True
        if key not in self._recompute_queue and not sync.recomputing:
            self._recompute_queue.append(key)
        if not self._recompute_running:
            self._recompute_running = True
            Deferred.fromCoroutine(self._run_recomputes()).addErrback(
                lambda f: log.failure("Recomputing camera whitelists failed", f)
            )

    async def _run_recomputes(self) -> None:
        # Full collections wait until every camera is recomputed; what the
        # cameras hold then lives for hours: out of the collector's full
        # passes (gateway/heap.py).
        try:
            with bulk("camera whitelists recomputed"):
                while self._recompute_queue and self.running:
                    keys, self._recompute_queue = self._recompute_queue, []
                    syncs = [self._cameras[key] for key in keys if key in self._cameras]
                    if syncs:
                        await self._recompute(syncs)
        finally:
            self._recompute_running = False

    async def _recompute(self, syncs: list[CameraSync]) -> None:
        """Recompute these cameras' work in one pass over a snapshot of the
        list, off the reactor."""
        for sync in syncs:
            sync.recomputing = True
            sync.stale = False
            sync.confirmed.clear()
            # The snapshot below holds every change that came so far.
            sync.incoming.clear()
        rules = [self._rules(sync) for sync in syncs]
        now = self._now()
        entries = self._snapshot()
        # What each camera holds is read by the thread as it is: nothing
        # changes it until the recompute lands (confirmations wait).
        fresh = [
            CameraListWork(
                has=sync.work.has,
                known=sync.work.known,
                replace_on_change=sync.work.replace_on_change,
            )
            for sync in syncs
        ]

        def compute() -> list[tuple[CameraListWork, DesiredList]]:
            lists = desired_lists(entries, rules, now)
            for work, desired in zip(fresh, lists, strict=True):
                work.replace(desired)
            return list(zip(fresh, lists, strict=True))

        try:
            results = await self._in_thread(compute)
        except Exception:
            for sync in syncs:
                sync.recomputing = False
                sync.stale = True
                self._take_confirmed(sync)
            raise
        for sync, rule, (computed, desired) in zip(syncs, rules, results, strict=True):
            self.recomputes += 1
            self._landed(sync, rule, computed, desired)

    def _take_confirmed(self, sync: CameraSync) -> set[str]:
        """Take in the confirmations that waited for a recompute; returns
        the plates they touched."""
        touched: set[str] = set()
        confirmed, sync.confirmed = sync.confirmed, []
        for clear, sent in confirmed:
            self._holds(sync, clear, sent)
            touched.update(row.plate if isinstance(row, CameraRow) else row for row in sent)
        return touched

    def _landed(
        self, sync: CameraSync, rules: CameraListRules, computed: CameraListWork, desired: DesiredList
    ) -> None:
        work = sync.work
        sync.recomputing = False
        if sync.stale:
            # Reset or asked again meanwhile: the result is already old.
            self._take_confirmed(sync)
            self._schedule_recompute(sync.serialno.casefold())
            return
        work.to_delete, work.to_add = computed.to_delete, computed.to_add
        work.size, work.wanted, work.capped = computed.size, computed.wanted, computed.capped
        work.cut = computed.cut
        # What the camera confirmed while the recompute ran.
        for plate in self._take_confirmed(sync):
            work.settle(plate, desired.rows.get(plate))
        self._warn_skipped(sync, desired.skipped)
        if work.capped and sync.capacity is not None:
            log.info(
                "Camera {serialno} holds {held} of the {wanted} plates of lane {lane} "
                "(its list takes {capacity}; see docs/whitelist.md for which go first)",
                serialno=sync.serialno,
                held=work.size,
                wanted=work.wanted,
                lane=rules.lane,
                capacity=sync.capacity,
            )
        self.kick(sync.serialno)
        # Changes that came while it ran.
        self._drain_soon()

    # -- sending --------------------------------------------------------------------

    def _advance(self, camera: Camera, sync: CameraSync) -> None:
        if sync.pending is not None or sync.recomputing or sync.stale:
            return
        if not camera.online or not self.running:
            return
        if camera.dialect is Dialect.PARKINGCAM:
            self._remember_charset(camera, sync)
            command, sent = self._parkingcam_step(sync, camera.charset)
        else:
            command, sent = self._vzenith_step(sync)
        if command is None:
            if sync.unsaved or sync.unsaved_clear:
                self._checkpoint(sync)
            return
        sync.pending, sync.sent = command, sent
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

    def _remember_charset(self, camera: Camera, sync: CameraSync) -> None:
        """Keep the encoding a ParkingCam camera's pushes showed, for after a restart."""
        if camera.charset is None or camera.charset == sync.saved_charset:
            return
        store = self._store()
        if store is None:
            return
        sync.saved_charset = camera.charset
        saving = Deferred.fromCoroutine(
            store.kv_set(_CHARSET_KEY + sync.serialno.casefold(), camera.charset)
        )
        saving.addErrback(
            lambda failure: log.failure(
                "Keeping camera {serialno}'s encoding failed", failure, serialno=camera.serialno
            )
        )

    def _unconfirmed(self, command: CameraCommand) -> None:
        if command.state is CommandState.DELIVERED:
            command.fail(CommandState.FAILED, "no confirmation from the camera")

    def _vzenith_step(self, sync: CameraSync) -> tuple[CameraCommand | None, tuple[Any, ...]]:
        expires = self._clock.seconds() + COMMAND_EXPIRY_SECONDS
        work = sync.work
        if not work.known:
            # An empty plate in a delete clears the camera's whole list.
            operation = WhitelistOperate("delete", (CameraWhitelistRow(plate=""),))
            return CameraWhitelistEdit(operation=operation, expires_at=expires), ("",)
        if work.to_delete:
            plates = list(itertools.islice(work.to_delete, VZENITH_ROWS_PER_REPLY))
            rows = tuple(CameraWhitelistRow(plate=plate) for plate in plates)
            command = CameraWhitelistEdit(operation=WhitelistOperate("delete", rows), expires_at=expires)
            return command, tuple(plates)
        if work.to_add:
            batch: list[CameraRow] = list(itertools.islice(work.to_add.values(), VZENITH_ROWS_PER_REPLY))
            operate = tuple(
                CameraWhitelistRow(
                    plate=row.plate,
                    enable=True,
                    blacklist=row.blacklist,
                    enable_time=self._local(row.valid_from),
                    overdue_time=self._local(row.valid_until),
                )
                for row in batch
            )
            command = CameraWhitelistEdit(operation=WhitelistOperate("add", operate), expires_at=expires)
            return command, tuple(batch)
        return None, ()

    def _parkingcam_step(
        self, sync: CameraSync, charset: str | None
    ) -> tuple[CameraCommand | None, tuple[Any, ...]]:
        # Plates are written in the encoding the camera's pushes come in (None: not
        # learnt yet, UTF-8).
        expires = self._clock.seconds() + COMMAND_EXPIRY_SECONDS
        work = sync.work
        if not work.known:
            command = ParkingCamWhitelistCommand(
                body=replies.parkingcam_delete_all_whitelist(),
                operation=WhitelistOperation.DELETE_ALL.value,
                expires_at=expires,
            )
            return command, ()
        if work.to_delete:
            plates = list(itertools.islice(work.to_delete, PARKINGCAM_DELETE_BATCH))
            command = ParkingCamWhitelistCommand(
                body=replies.parkingcam_delete_whitelist(plates, charset=charset),
                operation=WhitelistOperation.DELETE.value,
                expires_at=expires,
            )
            return command, tuple(plates)
        if work.to_add:
            batch: list[CameraRow] = list(itertools.islice(work.to_add.values(), PARKINGCAM_ADD_BATCH))
            command = ParkingCamWhitelistCommand(
                body=replies.parkingcam_add_whitelist(
                    [
                        (row.plate, self._local(row.valid_from), self._local(row.valid_until))
                        for row in batch
                    ],
                    charset=charset,
                ),
                operation=WhitelistOperation.ADD.value,
                expires_at=expires,
            )
            return command, tuple(batch)
        if sync.verify_due:
            # Everything confirmed: read the list back, a page at a time (or
            # only its count: a query for one row says how many it holds).
            command = ParkingCamWhitelistCommand(
                body=replies.parkingcam_query_whitelist(
                    PARKINGCAM_QUERY_PAGE if sync.verify_rows else 1,
                    position=len(sync.read_back),
                ),
                operation=WhitelistOperation.QUERY.value,
                expires_at=expires,
            )
            return command, ()
        return None, ()

    def _read_back(self, camera: Camera, sync: CameraSync, result: WhitelistResult) -> None:
        """A page of a ParkingCam camera's own list, as its whiteList query answered."""
        plates = {
            str(row.get("carnum", "")).strip().upper() for row in result.rows if row.get("carnum")
        }
        held = {plate.upper() for plate in sync.work.has}
        if not sync.verify_rows and result.total is not None:
            sync.verify_due, sync.verify_rows = False, True
            if result.total == len(held):
                sync.verified_at = self._clock.seconds()
                return
            log.warn(
                "Camera {serialno} holds {held} plates, not the {sent} sent to it: "
                "sending its list again",
                serialno=camera.serialno,
                held=result.total,
                sent=len(held),
            )
            sync.verified_at = None
            self._reset(sync)
            return
        sync.read_back |= plates
        total = result.total if result.total is not None else len(sync.read_back)
        if result.rows and len(sync.read_back) < total:
            return  # the next page goes with the next heartbeat
        sync.verify_due = False
        read, sync.read_back = sync.read_back, set()
        if read == held:
            sync.verified_at = self._clock.seconds()
            log.info(
                "Camera {serialno} holds the {count} plates sent to it (read back)",
                serialno=camera.serialno,
                count=len(read),
            )
            return
        sync.verified_at = None
        log.warn(
            "Camera {serialno} holds a list other than the one sent to it "
            "({missing} missing, {extra} it should not hold): sending it again",
            serialno=camera.serialno,
            missing=len(held - read),
            extra=len(read - held),
        )
        self._reset(sync)

    def _step_done(
        self, command: CameraCommand, camera: Camera, sync: CameraSync
    ) -> CameraCommand:
        self._step_finished(command, camera, sync)
        return command

    def _step_finished(self, command: CameraCommand, camera: Camera, sync: CameraSync) -> None:
        sent = sync.sent
        if sync.pending is command:
            sync.pending, sync.sent = None, ()
        # done fires at a final state: delivered (Vzenith rows ride in a
        # reply), completed (ParkingCam confirmed), expired or failed.
        if command.state in (CommandState.DELIVERED, CommandState.COMPLETED):
            if (
                isinstance(command, ParkingCamWhitelistCommand)
                and command.operation == WhitelistOperation.QUERY.value
            ):
                if isinstance(command.result, WhitelistResult):
                    self._read_back(camera, sync, command.result)
            else:
                self._applied(command, sync, sent)
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

    def _applied(self, command: CameraCommand, sync: CameraSync, sent: tuple[Any, ...]) -> None:
        """What the camera now holds after ``command``, which carried ``sent``."""
        clear = isinstance(command, CameraWhitelistEdit) and sent == ("",)
        clear = clear or (
            isinstance(command, ParkingCamWhitelistCommand)
            and command.operation == WhitelistOperation.DELETE_ALL.value
        )
        if sync.recomputing:
            # The recompute's thread reads what the camera holds: the
            # confirmation is taken in when it lands.
            sync.confirmed.append((clear, sent))
        else:
            self._holds(sync, clear, sent)
        if isinstance(command, CameraWhitelistEdit) and command.operation is not None:
            sync.largest_reply = max(sync.largest_reply, len(command.operation.rows))
            sync.rows_sent += len(command.operation.rows)
        now = self._clock.seconds()
        if sync.in_sync or now - sync.last_checkpoint >= CHECKPOINT_SECONDS:
            self._checkpoint(sync)

    @staticmethod
    def _holds(sync: CameraSync, clear: bool, sent: tuple[Any, ...]) -> None:
        """The camera confirmed a command that carried ``sent``."""
        work = sync.work
        if clear and sync.dialect is Dialect.PARKINGCAM:
            # A full sync: read the list back once it is all in. (Each later
            # change is confirmed by the camera; the list is read back again
            # after a restart and daily, which a change does not wait for.)
            sync.verified_at = None
            sync.verify_due, sync.verify_rows = True, True
            sync.read_back = set()
        if clear:
            work.cleared()
            sync.unsaved.clear()
            sync.unsaved_clear = True
        elif sent and isinstance(sent[0], CameraRow):
            work.added(sent)
            for row in sent:
                sync.unsaved[row.plate] = row
        else:
            work.deleted(sent)
            for plate in sent:
                sync.unsaved[plate] = None

    # -- checkpoints --------------------------------------------------------------

    def _checkpoint(self, sync: CameraSync) -> None:
        sync.last_checkpoint = self._clock.seconds()
        Deferred.fromCoroutine(self._save(sync)).addErrback(
            lambda f: log.failure(
                "Saving camera {serialno} whitelist state failed", f, serialno=sync.serialno
            )
        )

    async def _save(self, sync: CameraSync) -> None:
        store = self._store()
        if store is None or not (sync.unsaved or sync.unsaved_clear):
            return
        # One camera's checkpoint at a time: twenty cameras saving at once
        # would queue twenty transactions ahead of the next plate's commit.
        await self._saving.acquire()
        changes, cleared = sync.unsaved, sync.unsaved_clear
        sync.unsaved, sync.unsaved_clear = {}, False
        try:
            await store.save_camera_list(
                sync.serialno.casefold(),
                dialect=sync.dialect.value,
                known=sync.work.known,
                cleared=cleared,
                changes=changes,
            )
        except StoreError as error:
            # Put back what was not saved (newer changes win).
            changes.update(sync.unsaved)
            sync.unsaved = changes
            sync.unsaved_clear = sync.unsaved_clear or cleared
            log.warn(
                "Camera {serialno} whitelist state not saved: {reason}",
                serialno=sync.serialno,
                reason=str(error),
            )
        finally:
            self._saving.release()

    async def _checkpoint_all(self) -> None:
        for sync in self._cameras.values():
            await self._save(sync)

    def _local(self, value: datetime | None) -> datetime | None:
        """Camera clocks run on site local time, without a zone."""
        if value is None:
            return None
        return value.astimezone(self._tz).replace(tzinfo=None)
