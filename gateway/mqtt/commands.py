"""Commands from the broker, with ``[mqtt] commands = true`` (docs/mqtt.md).

``<prefix>/lane/<lane slug>/command`` takes ``{"action": "open" | "close" |
"snapshot" | "say", ...}`` and goes through :class:`CameraControl`, the path
the admin page's buttons take; ``<prefix>/whitelist/command`` takes ``add``
and ``remove`` with the admin API's fields and checks. Who may publish there
is the broker's ACL: the gateway trusts what the broker delivers, but checks
every payload (size, JSON shape, fields) and the rate of commands.

Every command gets one answer on ``<prefix>/command_result`` when it ends and
is recorded as a ``command_result`` event with ``origin`` ``mqtt`` (a camera
command by :class:`CameraControl` when it ends, anything refused before it
reached a camera here). A malformed payload gets a ``rejected`` answer and a
log line, never more.
"""

from __future__ import annotations

import collections
import itertools
import json
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timezone
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from gateway.camera.commands import CameraCommand
from gateway.camera.control import CameraControl, CommandFailed, CommandRefused
from gateway.mqtt.lanes import lane_topic
from gateway.mqtt.settings import lane_slug
from gateway.platelist import PlateList
from gateway.policy.codec import EntryCodec, EntryError
from gateway.policy.plates import is_no_plate, normalise_plate
from gateway.site import Lanes, LaneSettings
from gateway.store import EventRecord, StoreError
from gateway.upstream.events import command_result_record, dump_json

__all__ = [
    "MAX_COMMAND_BYTES",
    "MAX_COMMANDS_PER_MINUTE",
    "MqttCommands",
    "ORIGIN",
]

log = Logger()

ORIGIN = "mqtt"
MAX_COMMAND_BYTES = 4096
"""The largest command payload read; a larger one is rejected unread."""
MAX_COMMANDS_PER_MINUTE = 60
"""Commands taken in any minute; more are rejected (and logged once a minute)."""
MAX_TEXT = 200
"""The longest text a ``say`` command speaks (as the admin page's display test)."""
MAX_REQUEST_ID = 64

_LANE_ACTIONS: Mapping[str, frozenset[str]] = {
    "open": frozenset({"channel"}),
    "close": frozenset({"channel"}),
    "snapshot": frozenset(),
    "say": frozenset({"text"}),
}
_WHITELIST_ACTIONS = ("add", "remove")
_ids = itertools.count(1)


class _Rejected(Exception):
    """A command refused before it reached a camera; ``str()`` says why."""


class MqttCommands:
    """Reads the command topics and carries the commands out.

    ``send(topic, payload)`` publishes an answer (QoS 1, not retained);
    ``keep(record)`` records a result event (:meth:`StoreRecorder.keep`).
    """

    def __init__(
        self,
        *,
        prefix: str,
        lanes: Lanes,
        control: CameraControl,
        plate_list: PlateList,
        codec: EntryCodec,
        keep: Callable[[EventRecord], Awaitable[None]],
        send: Callable[[str, bytes], None],
        clock: IReactorTime,
        image_max_bytes: int,
        per_minute: int = MAX_COMMANDS_PER_MINUTE,
    ) -> None:
        self._prefix = prefix
        self._lanes = {lane_slug(lane.name): lane for lane in lanes}
        self._control = control
        self._plate_list = plate_list
        self._codec = codec
        self._keep = keep
        self._send = send
        self._clock = clock
        self._image_max_bytes = image_max_bytes
        self._per_minute = per_minute
        self._taken: collections.deque[float] = collections.deque()
        self._flood_logged_at: float | None = None
        self._flood_dropped = 0
        self.taken = 0  # commands carried out or refused since start
        self.rejected = 0  # of which refused before reaching a camera or the list

    @property
    def result_topic(self) -> str:
        return f"{self._prefix}/command_result"

    @property
    def filters(self) -> list[str]:
        """The topic filters to subscribe to."""
        return [f"{self._prefix}/lane/+/command", f"{self._prefix}/whitelist/command"]

    # -- a message ------------------------------------------------------------

    def handle(self, topic: str, payload: bytes) -> None:
        """A message on a command topic; never raises."""
        lane: LaneSettings | None = None
        if topic == f"{self._prefix}/whitelist/command":
            target = "whitelist"
        else:
            head, tail = f"{self._prefix}/lane/", "/command"
            if not (topic.startswith(head) and topic.endswith(tail)):
                return  # not a command topic
            slug = topic[len(head) : -len(tail)]
            target = "lane"
            lane = self._lanes.get(slug)
        if not self._admit():
            return
        self.taken += 1
        request: dict[str, Any] = {"id": None, "topic": topic, "action": None}
        if lane is not None:
            request["lane"] = lane.name
        try:
            body = self._parse(payload)
            request["id"] = self._request_id(body)
            action = body.get("action")
            request["action"] = action if isinstance(action, str) else None
            if target == "lane":
                if lane is None:
                    raise _Rejected(f"no lane has the topic name {topic.split('/')[-2]!r}")
                self._lane_command(request, lane, body)
            else:
                Deferred.fromCoroutine(self._whitelist_command(request, body)).addErrback(
                    self._crashed, request
                )
        except _Rejected as error:
            self._reject(request, str(error), lane)

    def _admit(self) -> bool:
        now = self._clock.seconds()
        while self._taken and self._taken[0] <= now - 60.0:
            self._taken.popleft()
        if len(self._taken) < self._per_minute:
            self._taken.append(now)
            return True
        self._flood_dropped += 1
        if self._flood_logged_at is None or now - self._flood_logged_at >= 60.0:
            log.warn(
                "MQTT: more than {limit} commands in a minute; {count} dropped unanswered "
                "(check who may publish on the command topics)",
                limit=self._per_minute,
                count=self._flood_dropped,
            )
            self._flood_logged_at = now
            self._flood_dropped = 0
        return False

    def _parse(self, payload: bytes) -> dict[str, Any]:
        if len(payload) > MAX_COMMAND_BYTES:
            raise _Rejected(f"the payload is larger than {MAX_COMMAND_BYTES} bytes")
        try:
            body = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise _Rejected("the payload is not JSON") from None
        if not isinstance(body, dict):
            raise _Rejected(f"the payload must be a JSON object, not {type(body).__name__}")
        return body

    def _request_id(self, body: Mapping[str, Any]) -> str | None:
        given = body.get("id")
        if given is None:
            return None
        if not isinstance(given, str) or not 1 <= len(given) <= MAX_REQUEST_ID or not given.isprintable():
            raise _Rejected(f"id must be text of 1 to {MAX_REQUEST_ID} printable characters")
        return given

    # -- lane commands ----------------------------------------------------------

    def _lane_command(self, request: dict[str, Any], lane: LaneSettings, body: dict[str, Any]) -> None:
        action = body.get("action")
        if not isinstance(action, str) or action not in _LANE_ACTIONS:
            raise _Rejected(f"action must be one of {', '.join(_LANE_ACTIONS)}")
        unknown = sorted(set(body) - {"action", "id"} - _LANE_ACTIONS[action])
        if unknown:
            raise _Rejected(f"unknown field {unknown[0]!r} for {action}")
        origin: dict[str, Any] = {"origin": ORIGIN}
        if request["id"] is not None:
            origin["command_id"] = request["id"]
        control, camera = self._control, lane.camera
        try:
            if action in ("open", "close"):
                channel = body.get("channel")
                if channel is not None and (
                    isinstance(channel, bool) or not isinstance(channel, int) or not 0 <= channel <= 3
                ):
                    raise _Rejected("channel must be 0-3")
                issue = control.open if action == "open" else control.close
                self._follow(request, lane, issue(camera, channel, **origin))
            elif action == "say":
                text = body.get("text")
                if not isinstance(text, str) or not text.strip():
                    raise _Rejected("text is required")
                if len(text) > MAX_TEXT:
                    raise _Rejected(f"text: at most {MAX_TEXT} characters")
                spoken = control.say(camera, text, **origin)
                if spoken is None:  # on the lane's display and voice board, at once
                    self._answer(request, "completed", "shown and spoken on the lane's display")
                    self._log(request, "completed")
                else:
                    self._follow(request, lane, spoken)
            else:
                taking = Deferred.fromCoroutine(control.snapshot(camera, **origin))
                taking.addCallbacks(
                    self._snapshot_taken,
                    self._snapshot_failed,
                    callbackArgs=(request, lane),
                    errbackArgs=(request, lane),
                )
        except CommandRefused as error:
            raise _Rejected(str(error)) from None

    def _follow(self, request: dict[str, Any], lane: LaneSettings, command: CameraCommand) -> None:
        request["command_id"] = command.id
        log.info(
            "MQTT: {action} asked for lane {lane} (command {command_id})",
            action=request["action"],
            lane=lane.name,
            command_id=command.id,
        )

        def ended(done: CameraCommand) -> CameraCommand:
            self._answer(request, done.state.value, done.reason)
            return done

        command.done.addCallback(ended)

    def _snapshot_taken(self, image: bytes, request: dict[str, Any], lane: LaneSettings) -> None:
        extra: dict[str, Any] = {"image_bytes": len(image)}
        if len(image) <= self._image_max_bytes:
            topic = lane_topic(self._prefix, lane.name, "snapshot")
            self._send(topic, image)
            extra["image_topic"] = topic
            detail = ""
        else:
            detail = f"the image is larger than [mqtt] image_max_bytes ({self._image_max_bytes})"
        self._answer(request, "completed", detail, **extra)
        self._log(request, "completed")

    def _snapshot_failed(self, failure: Failure, request: dict[str, Any], lane: LaneSettings) -> None:
        error = failure.value
        if isinstance(error, CommandFailed):
            request["command_id"] = error.command.id
            self._answer(request, error.command.state.value, error.command.reason)
            self._log(request, error.command.state.value, error.command.reason)
        elif isinstance(error, CommandRefused):
            self._reject(request, str(error), lane)
        else:
            self._crashed(failure, request)

    # -- plate list commands ------------------------------------------------------

    async def _whitelist_command(self, request: dict[str, Any], body: dict[str, Any]) -> None:
        try:
            plate = await self._change_list(request, body)
        except _Rejected as error:
            self._reject(request, str(error), None, plate=request.get("plate"))
            return
        self._answer(request, "completed", "")
        self._log(request, "completed")
        await self._record(request, "completed", "", None, plate=plate)

    async def _change_list(self, request: dict[str, Any], body: dict[str, Any]) -> str:
        action = body.get("action")
        if not isinstance(action, str) or action not in _WHITELIST_ACTIONS:
            raise _Rejected(f"action must be one of {', '.join(_WHITELIST_ACTIONS)}")
        if not self._plate_list.loaded:
            raise _Rejected("the plate list is still loading")
        fields = {key: value for key, value in body.items() if key not in ("action", "id")}
        plates = self._plate_list
        if action == "add":
            try:
                entry = self._codec.from_json(fields, ORIGIN)
            except EntryError as error:
                raise _Rejected(f"the entry is not valid ({error})") from None
            request["plate"] = entry.plate
            if plates.get(entry.plate) is not None:
                raise _Rejected(f"{entry.plate} is already listed")
            try:
                await plates.upsert([entry])
            except StoreError as error:
                raise _Rejected(f"the plate list could not be saved: {error}") from None
            request["entry"] = self._codec.to_json(entry)
            return entry.plate
        unknown = sorted(set(fields) - {"plate"})
        if unknown:
            raise _Rejected(f"unknown field {unknown[0]!r} for remove")
        given = fields.get("plate")
        if not isinstance(given, str) or not given.strip():
            raise _Rejected("plate is required")
        plate = normalise_plate(given)
        request["plate"] = plate
        if is_no_plate(plate) or plates.get(plate) is None:
            raise _Rejected(f"{given} is not on the list")
        try:
            await plates.delete([plate])
        except StoreError as error:
            raise _Rejected(f"the plate list could not be saved: {error}") from None
        return plate

    # -- answers and records ----------------------------------------------------

    def _reject(
        self,
        request: dict[str, Any],
        reason: str,
        lane: LaneSettings | None,
        plate: str | None = None,
    ) -> None:
        self.rejected += 1
        self._answer(request, "rejected", reason)
        self._log(request, "rejected", reason)
        Deferred.fromCoroutine(
            self._record(request, "rejected", reason, lane, plate=plate)
        ).addErrback(self._crashed, request)

    def _answer(self, request: Mapping[str, Any], outcome: str, detail: str, **extra: Any) -> None:
        answer = {
            "id": request["id"],
            "topic": request["topic"],
            "action": request["action"],
            "lane": request.get("lane"),
            "outcome": outcome,
            "detail": detail,
            "command_id": request.get("command_id"),
            **({"plate": request["plate"]} if "plate" in request else {}),
            **({"entry": request["entry"]} if "entry" in request else {}),
            **extra,
        }
        self._send(self.result_topic, dump_json(answer))

    def _log(self, request: Mapping[str, Any], outcome: str, reason: str = "") -> None:
        where = f"lane {request['lane']}" if request.get("lane") else request["topic"]
        if outcome == "rejected":
            log.warn(
                "MQTT: command on {topic} rejected: {reason}",
                topic=request["topic"],
                reason=reason,
                request_id=request["id"],
            )
        else:
            log.info(
                "MQTT: {action} for {where}: {outcome}{reason}",
                action=request["action"],
                where=where,
                outcome=outcome,
                reason=f" ({reason})" if reason else "",
                request_id=request["id"],
            )

    async def _record(
        self,
        request: Mapping[str, Any],
        outcome: str,
        detail: str,
        lane: LaneSettings | None,
        *,
        plate: str | None = None,
    ) -> None:
        action = request["action"]
        kind: str | None = None
        if request["topic"] == f"{self._prefix}/whitelist/command":
            kind = f"whitelist_{action}" if action in _WHITELIST_ACTIONS else None
        elif action in _LANE_ACTIONS:
            kind = action
        record = command_result_record(
            request["id"] or f"mqtt-{next(_ids)}",
            kind,
            lane.camera if lane is not None else None,
            outcome,
            received_at=datetime.fromtimestamp(self._clock.seconds(), tz=timezone.utc),
            lane=lane.name if lane is not None else None,
            detail=detail,
            origin=ORIGIN,
            extra={"plate": plate} if plate else None,
        )
        try:
            await self._keep(record)
        except Exception as error:
            log.warn(
                "MQTT: the result of a command on {topic} could not be kept: {reason}",
                topic=request["topic"],
                reason=str(error),
            )

    def _crashed(self, failure: Failure, request: Mapping[str, Any]) -> None:
        log.failure("MQTT: a command on {topic} failed", failure, topic=request["topic"])
