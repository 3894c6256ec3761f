"""The durable store: events and their images, the whitelist, the upstream
outbox and dead letters, in SQLite on one dedicated thread.

Use :class:`Store` (``await Store.open(reactor, state_dir, config)``) or
:class:`StoreService` in a service tree.
"""

from gateway.store.database import (
    EVENT_OVERHEAD_BYTES,
    StoreClosedError,
    StoreError,
    StoreOpenError,
    StoreWriteError,
)
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
    LogDamage,
    OutboxItem,
    OutboxTrim,
    PlateRow,
    PlateRowsWritten,
    QuarantinedRow,
    Replacement,
    RetentionResult,
    SalvagedPart,
    SalvageReport,
    StoreHealth,
    StoreStats,
)
from gateway.store.service import RETENTION_INTERVAL, OpenProblem, StoreService
from gateway.store.settings import StoreSettings
from gateway.store.store import HealthObserver, Store, StoreExecutor

__all__ = [
    "EVENT_OVERHEAD_BYTES",
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
    "LogDamage",
    "HealthObserver",
    "ImageState",
    "ImageUpload",
    "OutboxItem",
    "OutboxTrim",
    "QuarantinedRow",
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
    "Replacement",
    "SalvageReport",
    "SalvagedPart",
    "OpenProblem",
    "is_valid_event_id",
    "new_event_id",
    "plate_event_id",
]
