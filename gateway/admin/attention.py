"""What calls for the booth's attention: ``/api/attention``.

:class:`AttentionFeed` watches the bus for the kinds of trouble an operator
must see (``[admin.attention]``): a blacklisted plate, a refused car, a camera
going offline, a display's serial port failing, the cloud link going down.
Each becomes an *alert*, published on the bus (topic ``attention``) for the
pages, which show a banner and play the kind's sound until an operator
acknowledges it (``POST /api/attention/{id}/acknowledge``, recorded in the
audit log); every page then clears it. The same trouble again (the same
camera still offline, the link still down) counts on the alert already
shown instead of adding one. Alerts are in memory and bounded: the oldest
go past :data:`MAX_ALERTS`.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from gateway.admin.access import Access, authorized
from gateway.admin.audit import note
from gateway.admin.auth import Principal
from gateway.admin.http import ApiError, admin_app, json_response
from gateway.admin.settings import OPERATOR, VIEWER, AttentionSettings
from gateway.bus import EventBus
from gateway.policy import decision as reasons

__all__ = ["MAX_ALERTS", "Alert", "AttentionFeed", "AttentionResource"]

log = Logger()

#: The most alerts waiting for an acknowledgement.
MAX_ALERTS = 100
# Reads that are refusals but need nobody: the barrier answered them already.
_NOT_REFUSALS = frozenset({reasons.DUPLICATE, reasons.OFFLINE_RECORD})
_FAULTY_PORT = frozenset({"missing", "error"})
_LINK_DOWN = frozenset({"backing_off", "down"})


@attrs.define
class Alert:
    """One thing to see: its ``kind``, what it is about (``subject``: a
    camera, a port, a plate read) and how many times it happened since."""

    id: str
    kind: str
    subject: str
    at: datetime
    lane: str | None = None
    plate: str | None = None
    reason: str | None = None
    event_id: str | None = None
    detail: str | None = None
    count: int = 1

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "subject": self.subject,
            "at": self.at.isoformat(),
            "lane": self.lane,
            "plate": self.plate,
            "reason": self.reason,
            "event_id": self.event_id,
            "detail": self.detail,
            "count": self.count,
        }


class AttentionFeed:
    """The alerts waiting for an acknowledgement, from the bus."""

    def __init__(self, *, clock: IReactorTime, bus: EventBus, settings: AttentionSettings) -> None:
        self._clock = clock
        self._bus = bus
        self.settings = settings
        self._alerts: OrderedDict[str, Alert] = OrderedDict()
        self._ids = itertools.count(1)
        self._link_down = False
        # Each start numbers alerts afresh: a page asks again after a restart.
        self._epoch = int(clock.seconds())
        bus.subscribe(self._published)

    def alerts(self) -> list[Alert]:
        """Waiting alerts, oldest first."""
        return list(self._alerts.values())

    def acknowledge(self, alert_id: str) -> Alert | None:
        """Clear an alert on every page; None when there is none by that id."""
        alert = self._alerts.pop(alert_id, None)
        if alert is not None:
            self._bus.publish("attention", {"acknowledged": alert.id})
        return alert

    # -- the bus ------------------------------------------------------------------

    def _published(self, topic: str, payload: Mapping[str, Any]) -> None:
        if topic == "event":
            self._event(payload)
        elif topic == "camera":
            if payload.get("online") is False:
                serialno = str(payload.get("serialno"))
                self._raise(
                    "camera_offline",
                    f"camera:{serialno}",
                    lane=_text(payload.get("lane")),
                    detail=serialno,
                )
        elif topic == "status":
            port = payload.get("serial_port")
            if isinstance(port, Mapping) and port.get("state") in _FAULTY_PORT:
                name = str(port.get("name"))
                self._raise(
                    "display_fault",
                    f"port:{name}",
                    detail=f"{name}: {port.get('state')}"
                    + (f" ({port.get('reason')})" if port.get("reason") else ""),
                )
            if "upstream" in payload:
                down = payload.get("upstream") in _LINK_DOWN
                if down and not self._link_down:
                    self._raise("cloud_down", "cloud", detail=_text(payload.get("last_error")))
                self._link_down = down

    def _event(self, summary: Mapping[str, Any]) -> None:
        if summary.get("type") != "plate" or summary.get("offline"):
            return
        decision = summary.get("decision")
        if not isinstance(decision, Mapping) or decision.get("open") is not False:
            return
        reason = _text(decision.get("reason"))
        if reason in _NOT_REFUSALS:
            return
        kind = "blacklist" if reason == reasons.BLACKLIST else "refused"
        event_id = _text(summary.get("id"))
        self._raise(
            kind,
            f"event:{event_id}",
            lane=_text(summary.get("lane")),
            plate=_text(summary.get("plate")) or _text(summary.get("license")),
            reason=reason,
            event_id=event_id,
        )

    def _raise(self, kind: str, subject: str, **fields: Any) -> None:
        if self.settings.sound(kind) == "off":
            return
        now = datetime.fromtimestamp(self._clock.seconds(), tz=timezone.utc)
        for alert in self._alerts.values():
            if alert.subject == subject and alert.kind == kind:
                # Still the same trouble: counted on the banner shown.
                alert.count += 1
                alert.at = now
                self._bus.publish("attention", {"alert": alert.to_json(), "again": True})
                return
        alert = Alert(
            id=f"{self._epoch:x}-{next(self._ids)}", kind=kind, subject=subject, at=now, **fields
        )
        self._alerts[alert.id] = alert
        while len(self._alerts) > MAX_ALERTS:
            _, dropped = self._alerts.popitem(last=False)
            self._bus.publish("attention", {"acknowledged": dropped.id, "dropped": True})
        self._bus.publish("attention", {"alert": alert.to_json(), "again": False})


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


class AttentionResource:
    """``GET /api/attention`` (viewers: the sounds and the waiting alerts)
    and ``POST /api/attention/{id}/acknowledge`` (operators)."""

    app = admin_app()

    def __init__(self, *, access: Access, feed: AttentionFeed) -> None:
        self.access = access
        self._feed = feed

    @authorized(app, "/api/attention", methods=["GET"], role=VIEWER)
    def attention(self, request: IRequest, who: Principal) -> bytes:
        return json_response(
            request,
            {
                "sounds": self._feed.settings.to_json(),
                "alerts": [alert.to_json() for alert in self._feed.alerts()],
            },
        )

    @authorized(app, "/api/attention/<alert_id>/acknowledge", methods=["POST"], role=OPERATOR)
    def acknowledge_alert(self, request: IRequest, who: Principal, alert_id: str) -> bytes:
        alert = self._feed.acknowledge(alert_id)
        if alert is None:
            raise ApiError(404, "no such alert waits (acknowledged already?)")
        note(request, target=alert.subject, kind=alert.kind)
        log.info(
            "{user} ({role}) acknowledged the {kind} alert about {subject}",
            user=who.name,
            role=who.role,
            kind=alert.kind,
            subject=alert.subject,
        )
        return json_response(request, {"acknowledged": alert.to_json(), "by": who.name})
