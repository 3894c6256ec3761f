"""The durable store: events and their images, the whitelist, the upstream
outbox and dead letters, in SQLite on one dedicated thread.

Use :class:`Store` (``await Store.open(reactor, state_dir, config)``) or
:class:`StoreService` in a service tree.
"""

from gateway.store.database import StoreClosedError, StoreError, StoreOpenError, StoreWriteError
from gateway.store.ids import is_valid_event_id, new_event_id, plate_event_id
from gateway.store.records import (
    IMAGE_KINDS,
    OPERATOR_EVENT_TYPES,
    AdminSessionRow,
    AuditRow,
    CachedCloudDecision,
    CameraListState,
    CommitResult,
    DeadLetter,
    EventRecord,
    EventRetentionTotals,
    EventType,
    ImageState,
    ImageUpload,
    Integrity,
    IntegrityState,
    LaneDayCounts,
    OutboxItem,
    OutboxTrim,
    PlateRow,
    PlateRowsWritten,
    RetentionResult,
    StoreHealth,
    StoreStats,
)
from gateway.store.service import RETENTION_INTERVAL, StoreService
from gateway.store.settings import StoreSettings
from gateway.store.store import HealthObserver, Store, StoreExecutor

__all__ = [
    "IMAGE_KINDS",
    "OPERATOR_EVENT_TYPES",
    "LaneDayCounts",
    "AdminSessionRow",
    "AuditRow",
    "RETENTION_INTERVAL",
    "CachedCloudDecision",
    "CommitResult",
    "DeadLetter",
    "EventRecord",
    "EventRetentionTotals",
    "EventType",
    "Integrity",
    "IntegrityState",
    "HealthObserver",
    "ImageState",
    "ImageUpload",
    "OutboxItem",
    "OutboxTrim",
    "RetentionResult",
    "Store",
    "StoreClosedError",
    "StoreSettings",
    "StoreError",
    "StoreExecutor",
    "StoreHealth",
    "StoreOpenError",
    "StoreService",
    "StoreStats",
    "StoreWriteError",
    "CameraListState",
    "PlateRow",
    "PlateRowsWritten",
    "is_valid_event_id",
    "new_event_id",
    "plate_event_id",
]
