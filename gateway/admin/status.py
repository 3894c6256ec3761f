"""Is everything working: ``/api/status`` (the store, the cloud link, the
MQTT link, the serial ports, the cameras), sending a dead letter to the cloud again
(``/api/dead-letters/{id}/replay``, admins only), and ``/metrics`` for
Prometheus (public when ``metrics_public`` is set)."""

from __future__ import annotations

import inspect
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from gateway import __version__
from gateway.admin.access import Access, authorized
from gateway.admin.audit import note
from gateway.admin.auth import Principal
from gateway.admin.events import event_id_ok, open_store
from gateway.admin.http import ApiError, admin_app, iso, json_response
from gateway.admin.metrics import CONTENT_TYPE_LATEST
from gateway.admin.settings import ADMIN, VIEWER
from gateway.camera.registry import CameraRegistry
from gateway.site import SiteSettings
from gateway.store import LogDamage, OpenProblem, Replacement, Store, StoreError
from gateway.store.settings import StoreSettings

__all__ = ["MetricsResource", "Metrics", "StatusResource", "StatusSource", "StoreState"]

log = Logger()

#: A link as the status view shows it: the cloud's ``state`` and
#: ``last_error``; MQTT's :meth:`gateway.mqtt.service.MqttStatus.to_json`.
LinkStatus = Mapping[str, object] | None
#: Where a link's status comes from (an awaitable is awaited); None for a
#: gateway without that link.
StatusSource = Callable[[], LinkStatus | Awaitable[LinkStatus]]
#: The serial ports, one JSON object each.
SerialStatus = Callable[[], Iterable[Mapping[str, object]]]


class StoreState(Protocol):
    """What the status view shows of the store beyond its statistics, and
    the acknowledgement of a replaced database
    (:class:`~gateway.store.StoreService`)."""

    @property
    def problem(self) -> OpenProblem | None: ...

    async def acknowledge_damage(self) -> bool: ...


def replacement_json(replacement: Replacement | None) -> dict[str, object] | None:
    """A replaced database as the status view shows it."""
    if replacement is None:
        return None
    salvage = replacement.salvage
    return {
        "at": iso(replacement.at),
        "moved_to": replacement.moved_to,
        "reason": replacement.reason,
        "salvage": {
            "finished": salvage.finished,
            "error": salvage.error,
            "lost_anything": salvage.lost_anything,
            "parts": {name: part.to_json() for name, part in salvage.parts.items()},
        },
    }


def log_damage_json(damage: LogDamage | None) -> dict[str, object] | None:
    """A damaged write-ahead log as the status view shows it."""
    if damage is None:
        return None
    return {"at": iso(damage.at), "dropped_commits": damage.dropped_commits, "copy": damage.copy}


def open_problem_json(problem: OpenProblem | None) -> dict[str, object] | None:
    """Why the store cannot open, as the status view shows it."""
    if problem is None:
        return None
    return {
        "reason": problem.reason,
        "since": iso(problem.since),
        "attempts": problem.attempts,
        "retry_seconds": problem.retry_in,
    }


class Metrics(Protocol):
    """The Prometheus metrics (:class:`~gateway.admin.metrics.GatewayMetrics`)."""

    async def render(self) -> bytes: ...


def _free_disk(path: str) -> int | None:
    try:
        usage = os.statvfs(path)
    except OSError:
        return None
    return usage.f_bavail * usage.f_frsize


class StatusResource:
    """The status view. ``upstream_status()`` gives the cloud link and
    ``mqtt_status()`` the MQTT link (see :data:`StatusSource`); ``serial_status()`` lists the serial ports;
    ``on_replay()`` is called after a dead letter is queued again (to wake
    the outbox)."""

    app = admin_app()

    def __init__(
        self,
        *,
        access: Access,
        clock: IReactorTime,
        site: SiteSettings,
        store_settings: StoreSettings,
        store: Callable[[], Store | None],
        registry: CameraRegistry,
        upstream_status: StatusSource | None = None,
        mqtt_status: StatusSource | None = None,
        serial_status: SerialStatus | None = None,
        on_replay: Callable[[], object] | None = None,
        store_state: StoreState | None = None,
    ) -> None:
        self.access = access
        self._store_state = store_state
        self._clock = clock
        self._site = site
        self._store_settings = store_settings
        self._store = store
        self._registry = registry
        self._upstream_status = upstream_status
        self._mqtt_status = mqtt_status
        self._serial_status = serial_status
        self._on_replay = on_replay
        self._started = clock.seconds()

    @authorized(app, "/api/status", methods=["GET"], role=VIEWER)
    async def status(self, request: IRequest, who: Principal) -> bytes:
        store = self._store()
        cameras = list(self._registry)
        store_json: dict[str, object] = {
            "open": store is not None,
            "db_bytes": None,
            "image_bytes": None,
            "image_files": None,
            "images_lost": None,
            "events": None,
            "free_disk_bytes": _free_disk(self._site.state_dir),
            "degraded": False,
            "reason": None if store is not None else "the event store is not open yet",
            "image_retention_days": self._store_settings.image_retention_days,
            "image_max_bytes": self._store_settings.image_max_bytes,
            "event_retention_days": self._store_settings.event_retention_days,
            "max_db_bytes": self._store_settings.max_db_bytes,
            "db_live_bytes": None,
            "events_expired": None,
            "events_dropped": None,
            "events_dropped_unsent": None,
            "integrity": None,
            "replaced": replacement_json(store.replacement) if store is not None else None,
            "log_damaged": log_damage_json(store.log_damage) if store is not None else None,
            "open_problem": None,
            "quarantined": None,
        }
        problem = self._store_state.problem if self._store_state is not None else None
        if store is None and problem is not None:
            store_json["open_problem"] = open_problem_json(problem)
            store_json["reason"] = f"the event store cannot open: {problem.reason}"
        if store is not None:
            integrity = store.integrity
            store_json["integrity"] = {
                "state": integrity.state.value,
                "detail": integrity.detail,
                "at": iso(integrity.at) if integrity.at is not None else None,
            }
        outbox_depth = dead_count = dropped = None
        dead_letters: list[dict[str, object]] = []
        if store is not None:
            try:
                stats = await store.stats()
                dropped = (await store.outbox_dropped()).total
                dead_letters = [
                    {
                        "event_id": letter.event_id,
                        "camera": letter.camera,
                        "status": letter.status,
                        "body": letter.body,
                        "at": iso(letter.at),
                        "attempts": letter.attempts,
                    }
                    for letter in await store.dead_letters(limit=100)
                ]
            except StoreError as error:
                store_json["reason"] = f"the event store cannot answer: {error}"
            else:
                store_json.update(
                    db_bytes=stats.db_bytes,
                    image_bytes=stats.image_bytes,
                    image_files=stats.image_files,
                    images_lost=stats.images_lost,
                    events=stats.events,
                    degraded=stats.health.degraded,
                    reason=stats.health.reason,
                    db_live_bytes=stats.db_live_bytes,
                )
                latest = stats.latest_quarantined
                store_json["quarantined"] = {
                    "rows": stats.quarantined_rows,
                    "latest": None
                    if latest is None
                    else {
                        "event_id": latest.event_id,
                        "event_seq": latest.event_seq,
                        "reason": latest.reason,
                        "at": iso(latest.at),
                        "queued": latest.queued,
                    },
                }
                if stats.integrity is not None:
                    integrity = stats.integrity
                    store_json["integrity"] = {
                        "state": integrity.state.value,
                        "detail": integrity.detail,
                        "at": iso(integrity.at) if integrity.at is not None else None,
                    }
                if stats.retention is not None:
                    store_json.update(
                        events_expired=stats.retention.expired,
                        events_dropped=stats.retention.dropped,
                        events_dropped_unsent=stats.retention.dropped_unsent,
                    )
                outbox_depth, dead_count = stats.outbox_depth, stats.dead_letters
        link = await self._read(self._upstream_status)
        mqtt = await self._read(self._mqtt_status)
        return json_response(
            request,
            {
                "version": __version__,
                "gateway": self._site.id,
                "uptime_seconds": round(self._clock.seconds() - self._started, 1),
                "store": store_json,
                "upstream": {
                    "configured": link is not None,
                    "state": link.get("state") if link is not None else None,
                    "last_error": link.get("last_error") if link is not None else None,
                    "outbox_depth": outbox_depth,
                    "dead_letters": dead_count,
                    "dropped": dropped,
                },
                "mqtt": {"configured": mqtt is not None, **(mqtt or {})},
                "dead_letters": dead_letters,
                "serial_ports": (
                    [dict(port) for port in self._serial_status()] if self._serial_status else []
                ),
                "cameras": {
                    "known": len(cameras),
                    "online": sum(1 for camera in cameras if camera.online),
                    "comet_polls_held": self._registry.held_polls(),
                },
            },
        )

    async def _read(self, source: StatusSource | None) -> LinkStatus:
        if source is None:
            return None
        value = source()
        if inspect.isawaitable(value):
            return await value
        return value

    @authorized(app, "/api/store/damage/acknowledge", methods=["POST"], role=ADMIN)
    async def acknowledge_damage(self, request: IRequest, who: Principal) -> bytes:
        """An admin has seen that the database was replaced (and what the
        salvage kept) or its log found damaged: the status page and systemd
        stop saying so."""
        store = open_store(self._store)
        replacement, damage = store.replacement, store.log_damage
        if (replacement is None and damage is None) or self._store_state is None:
            raise ApiError(404, "no storage damage to acknowledge")
        try:
            await self._store_state.acknowledge_damage()
        except StoreError as error:
            raise ApiError(503, f"the event store cannot answer: {error}") from None
        # The old file's name as the target (the full path is in the detail).
        target = (
            os.path.basename(replacement.moved_to) if replacement is not None else "write-ahead log"
        )
        note(
            request,
            target=target,
            moved_to=replacement.moved_to if replacement is not None else None,
            replaced_at=iso(replacement.at) if replacement is not None else None,
            log_damaged_at=iso(damage.at) if damage is not None else None,
        )
        log.info(
            "{user} ({role}) acknowledged the storage damage ({target})",
            user=who.name,
            role=who.role,
            target=target,
        )
        return json_response(
            request,
            {
                "acknowledged": True,
                "replaced": replacement is not None,
                "log_damaged": damage is not None,
            },
        )

    @authorized(app, "/api/dead-letters/<event_id>/replay", methods=["POST"], role=ADMIN)
    async def replay_dead_letter(self, request: IRequest, who: Principal, event_id: str) -> bytes:
        if not event_id_ok(event_id):
            raise ApiError(404, "no such dead letter")
        try:
            queued = await open_store(self._store).replay_dead_letter(event_id)
        except StoreError as error:
            raise ApiError(503, f"the event store cannot answer: {error}") from None
        if not queued:
            raise ApiError(404, "no such dead letter")
        log.info(
            "{user} ({role}) queued dead letter {event_id} for the cloud again",
            user=who.name,
            role=who.role,
            event_id=event_id,
        )
        if self._on_replay is not None:
            self._on_replay()
        return json_response(request, {"event_id": event_id, "queued": True}, 202)


class MetricsResource:
    """``/metrics``: the Prometheus text format, for viewers, or for anyone
    when ``public`` (``[admin] metrics_public``). Without ``metrics``, 404."""

    app = admin_app()

    def __init__(self, *, access: Access, metrics: Metrics | None, public: bool) -> None:
        self.access = access
        self._metrics = metrics
        self.public = public

    def _public(self) -> bool:
        return self.public

    @authorized(app, "/metrics", methods=["GET"], role=VIEWER, public_if=_public)
    async def metrics(self, request: IRequest, who: Principal) -> bytes:
        if self._metrics is None:
            raise ApiError(404, "metrics are not collected")
        body = await self._metrics.render()
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        request.setHeader(b"Cache-Control", b"no-store")
        return body
