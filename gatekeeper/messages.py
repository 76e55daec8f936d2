"""Every MQTT message in both directions, as pydantic models: the contract with the cloud.

Outbound models (edge -> cloud) allow extra keys: the store may add data keys to an
event and an older cloud must not choke on them. Inbound commands (cloud -> edge)
forbid extra keys and are validated strictly (``"100"`` is not an amount): a command
that does not say exactly what it means is refused rather than guessed at.

``python -m gatekeeper.messages --write-schemas docs/schemas`` writes the JSON Schemas
that docs/mqtt.md and docs/asyncapi.yaml refer to; a test keeps them up to date.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping

from pydantic import (AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StrictInt, StringConstraints,
                      field_validator, model_validator)

from gatekeeper.schedules import MAX_RULES, START_PATTERN, TIME_PATTERN, window_from_wire

#: Relative topics (under ``{prefix}/{lot_id}/``).
STATUS_TOPIC = "status"
OCCUPANCY_TOPIC = "occupancy"
EVENT_TOPIC = "events/{kind}"
GATE_TOPIC = "lanes/{lane}/gate"
COMMAND_TOPIC = "cmd/{name}"
#: Only with ``homeassistant.enabled`` (see docs/mqtt.md, "Home Assistant"; payloads in :mod:`gatekeeper.ha_messages`):
HEALTH_TOPIC = "health"
LANE_EVENT_TOPIC = "lanes/{lane}/event"
LAST_READ_TOPIC = "lanes/{lane}/last_read"
OPEN_BUTTON_TOPIC = "lanes/{lane}/open"
REPLY_TOPIC = "reply/{name}"

ONLINE = "online"
OFFLINE = "offline"

MessageId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")]
Plate = Annotated[str, StringConstraints(min_length=1, max_length=32)]
ShortText = Annotated[str, StringConstraints(max_length=500)]


def _sane_moment(value: datetime) -> datetime:
    """Years 2000-2999 only: an absurd date is a mistake, and near year 1 or 9999 UTC conversion overflows."""
    if not 2000 <= value.year <= 2999:
        raise ValueError("year must be between 2000 and 2999")
    return value


#: A point in time in a command: ISO 8601 with an offset, within reason.
Moment = Annotated[AwareDatetime, AfterValidator(_sane_moment)]


# --------------------------------------------------------------------------- edge -> cloud


#: ``seq`` on every outgoing JSON message: see docs/mqtt.md, "Sequence numbers".
SEQ_DESCRIPTION = (
    "the lot's message counter: +1 for every message queued, on every topic, kept across restarts; "
    "a gap means a message was lost, a repeat is a re-delivery"
)
#: The largest integer every JSON library reads exactly (2**53 - 1).
MAX_JSON_INT = 9_007_199_254_740_991


class Outbound(BaseModel):
    """Base of what the edge publishes: unknown keys are kept, not refused."""

    model_config = ConfigDict(extra="allow")

    seq: int | None = Field(None, description=SEQ_DESCRIPTION)


class Event(Outbound):
    """``events/{kind}``: one line of the lane's append-only log. ``id`` is the idempotency key."""

    id: str = Field(description="unique event id; a re-delivered duplicate carries the same id")
    lot: str
    lane: str | None = Field(description="lane id, null for lot-wide events")
    kind: str = Field(
        description="entry, exit, denied, no_read, no_read_resolved, paid, edited, deleted, alarm, rejected, "
        "open (manual/remote), upload_failed, ... (the last topic level repeats it)"
    )
    at: datetime = Field(description="when it happened, ISO 8601 with offset (UTC)")
    plate: str = Field(description="normalised plate, '' when none was read")
    session_id: int | None
    reason: str = Field(description="stable reason code, e.g. unpaid, full, bad_signature")
    message: str = Field(description="human-readable text (what the lane display showed, or why)")


class LaneEvent(Event):
    """``events/entry``, ``events/exit``, ``events/denied``: a decision at a lane."""

    kind: Literal["entry", "exit", "denied"]
    direction: Literal["entry", "exit"]
    open: bool
    plate_read: str = Field(description="the plate as read, before normalisation")
    confidence: float | None
    fee_due: int = Field(description="minor units still owed at this moment")
    currency: str | None
    image: str | None = Field(description="photo reference, uploaded to {cloud.base_url}/photos/{id}")
    source: str = Field(description="camera, or operator (a plate typed in: gatekeeper arrive)")
    by: str | None = Field(None, description="who typed the plate, for source operator")
    candidates: list[str] | None = None
    match_distance: float | None = None
    reservation_id: str | None = None


class NoReadEvent(Event):
    """``events/no_read``: a vehicle at a lane of which nothing usable was read; the barrier stayed shut."""

    kind: Literal["no_read"]
    direction: Literal["entry", "exit"]
    image: str | None = Field(description="photo reference, as for lane events (null when none was kept)")
    photo: str | None = Field(None, description="the photo's path on the edge device")
    guesses: list[str] = Field(description="the reader's best guesses (partial or unlikely readings), best first")
    candidates: list[str] = Field(
        default_factory=list, description="sessions (exit) or allow-list/reservation plates (entry) close to the evidence"
    )


class NoReadResolvedEvent(Event):
    """``events/no_read_resolved``: a technician said which plate or session an unread vehicle was."""

    kind: Literal["no_read_resolved"]
    no_read_id: str = Field(description="the id of the no_read event resolved")
    by: str = Field(description="who resolved it")
    direction: Literal["entry", "exit"]


class PaidEvent(Event):
    """``events/paid``: a session was paid (by the cloud or a technician)."""

    kind: Literal["paid"]
    amount: int = Field(description="minor units")
    reference: str | None
    paid_at: datetime
    by: str


class RejectedEvent(Event):
    """``events/rejected``: a cloud command that was not acted on, and why."""

    kind: Literal["rejected"]
    command: str | None = Field(None, description="the command name (last topic level)")
    request_id: str | None = Field(None, description="the command's id, when it could be read")
    suppressed: int | None = Field(None, description="rejections not logged one by one (rate limit)")


class Occupancy(Outbound):
    """``occupancy``, retained: the vacancy the cloud shows on its map."""

    id: str
    lot: str
    at: datetime
    capacity: int
    occupied: int
    free: int


class GateState(Outbound):
    """``lanes/{lane}/gate``, retained: the barrier's last known state."""

    lot: str
    lane: str
    state: str = Field(description="e.g. open, closed, opening, closing, fault")
    at: datetime


#: The barrier's state names on the wire, by the barrier event that reports them.
GATE_STATE_BY_EVENT = {"opening": "opening", "opened": "open", "closing": "closing", "closed": "closed"}


def gate_state_message(*, lot: str, lane: str, state: str, at: datetime, detail: str = "") -> tuple[str, dict[str, Any]]:
    """``(topic, payload)`` of the retained ``lanes/{lane}/gate`` message (:class:`GateState` plus id and detail)."""
    if at.tzinfo is None:
        raise ValueError(f"gate state time must be timezone-aware, got {at!r}")
    payload: dict[str, Any] = {
        "id": uuid.uuid4().hex,
        "lot": lot,
        "lane": lane,
        "state": state,
        "at": at.isoformat(timespec="milliseconds"),
        "detail": detail,
    }
    return GATE_TOPIC.format(lane=lane), payload


class PaymentResult(BaseModel):
    """What a payment did: the result the first command with this reference got."""

    model_config = ConfigDict(extra="allow")

    session_id: int
    amount: int = Field(description="minor units applied by this payment")
    reference: str | None
    paid_at: datetime
    amount_paid: int = Field(description="the session's total paid, minor units, right after this payment")
    command_id: str | None = Field(None, description="the id of the command that applied it")


class Reply(BaseModel):
    """``reply/{name}``: the answer to one command (QoS 1, not retained)."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(description="the request's id; null when the request could not be read")
    status: Literal["ok", "error"]
    error: str | None = Field(None, description="why the command was refused; null when ok")
    command: str = Field(description="the command name")
    at: datetime
    session_id: int | None = Field(None, description="payment: the session that was paid")
    result: PaymentResult | None = Field(None, description="payment: what it applied (or, for a duplicate, "
                                         "what the first payment with this reference applied)")
    duplicate: bool = Field(False, description="payment: this reference was already applied to the session; "
                            "nothing was applied again, result is the first result")
    repeat: bool = Field(False, description="this command id was handled before: this is the stored reply, "
                         "the command was not carried out again")
    seq: int | None = Field(None, description=SEQ_DESCRIPTION + " (null on replies to unreadable or "
                            "unauthenticated requests, which are not queued)")


# --------------------------------------------------------------------------- cloud -> edge


class Command(BaseModel):
    """Base of every command: signed, timestamped, unique id (see docs/mqtt.md, "Signing")."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: MessageId = Field(description="unique per command; a second command with the same id is a replay")
    ts: Moment = Field(description="when the cloud sent it; refused outside mqtt.max_clock_skew_s")
    sig: Annotated[str, StringConstraints(pattern=r"^(v2:)?[0-9a-f]{64}$")] = Field(
        description="'v2:' + hex HMAC-SHA256 over the lot id, the command name and the canonical JSON of every "
        "other field (docs/mqtt.md, Signing); a bare hex v1 signature only with mqtt.accept_v1_signatures"
    )


class PaymentCommand(Command):
    """``cmd/payment``: a payment was confirmed; the session is paid and its exit grace starts at ``paid_at``."""

    session_id: StrictInt | None = Field(None, ge=1, le=MAX_JSON_INT, description="the session, or give plate")
    plate: Plate | None = Field(None, description="resolved to the one session inside with this plate")
    amount: StrictInt = Field(ge=0, le=100_000_000, description="minor units")
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] | None = None
    reference: Annotated[str, StringConstraints(max_length=200)] | None = None
    paid_at: Moment | None = Field(None, description="default: now")

    @model_validator(mode="after")
    def _session_or_plate(self) -> "PaymentCommand":
        if (self.session_id is None) == (self.plate is None):
            raise ValueError("give exactly one of session_id or plate")
        return self


class OpenCommand(Command):
    """``cmd/open``: open one barrier once (remote assistance)."""

    lane: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,32}$")]
    reason: ShortText = Field(description="why; logged with the open event")


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]  # schedules.DAY_NAMES (a test checks)


class ScheduleRuleModel(BaseModel):
    """One weekly window on the lot's wall clock (``site.timezone``); see docs/mqtt.md, "Weekly schedules"."""

    model_config = ConfigDict(extra="forbid", strict=True)

    days: list[Weekday] = Field(min_length=1, max_length=7, json_schema_extra={"uniqueItems": True})
    start: Annotated[str, StringConstraints(pattern=START_PATTERN)] = Field(description="HH:MM, 00:00-23:59")
    end: Annotated[str, StringConstraints(pattern=TIME_PATTERN)] = Field(
        description="HH:MM, or 24:00; at or before start: the window runs past midnight into the next day")

    @field_validator("days")
    @classmethod
    def _each_once(cls, days: list[str]) -> list[str]:
        if len(set(days)) != len(days):
            raise ValueError("each day at most once")
        return days

    @model_validator(mode="after")
    def _not_empty(self) -> "ScheduleRuleModel":
        window_from_wire(self.model_dump())  # ScheduleError (a ValueError): e.g. 07:00-07:00 is empty
        return self


#: Absent or null = always; never empty.
Schedule = Annotated[list[ScheduleRuleModel], Field(min_length=1, max_length=MAX_RULES)]
SCHEDULE_DESCRIPTION = "weekly windows in the lot's time zone; absent or null = always"


class ListEntryModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    plate: Plate
    valid_from: Moment | None = None
    valid_until: Moment | None = None
    schedule: Schedule | None = Field(None, description=SCHEDULE_DESCRIPTION + " (allow list only)")
    note: ShortText | None = None


class ListCommand(Command):
    """``cmd/lists``: add to, remove from, or replace the allow or deny list (entries are replaced whole)."""

    kind: Literal["allow", "deny"]
    op: Literal["add", "remove", "replace"]
    entries: list[ListEntryModel] = Field(max_length=10_000, description="for remove only plate is used")

    @model_validator(mode="after")
    def _schedules_allow_only(self) -> "ListCommand":
        for i, entry in enumerate(self.entries):
            if entry.schedule is not None and self.kind != "allow":
                raise ValueError(f"entries.{i}.schedule: only allow-list entries carry a schedule")
        return self


class ReservationCommand(Command):
    """``cmd/reservation``: create/replace or delete one reservation."""

    op: Literal["upsert", "delete"]
    reservation_id: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    plate: Plate | None = None
    valid_from: Moment | None = None
    valid_until: Moment | None = None
    schedule: Schedule | None = Field(None, description=SCHEDULE_DESCRIPTION + ", within valid_from..valid_until")
    note: ShortText | None = None

    @model_validator(mode="after")
    def _complete_upsert(self) -> "ReservationCommand":
        if self.op == "upsert" and (self.plate is None or self.valid_from is None or self.valid_until is None):
            raise ValueError("upsert needs plate, valid_from and valid_until")
        return self


class TariffModel(BaseModel):
    """The tariff, integer minor units (mirrors rules.Tariff)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    free_minutes: StrictInt = Field(ge=0, le=1440)
    interval_minutes: StrictInt = Field(ge=1, le=1440)
    rate: StrictInt = Field(ge=0, le=100_000_000)
    daily_max: StrictInt = Field(ge=0, le=100_000_000, description="0 = no cap")
    grace_minutes: StrictInt = Field(ge=0, le=1440)
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] | None = Field(None, description="default: unchanged")
    currency_digits: StrictInt | None = Field(None, ge=0, le=3)


class TariffCommand(Command):
    """``cmd/tariff``: replace the tariff; the daemon reloads its lanes."""

    tariff: TariffModel


#: Inbound command name (last topic level) -> model.
COMMANDS: dict[str, type[Command]] = {
    "payment": PaymentCommand,
    "open": OpenCommand,
    "lists": ListCommand,
    "reservation": ReservationCommand,
    "tariff": TariffCommand,
}

#: Event kind -> the most specific model that validates it.
EVENT_MODELS: dict[str, type[Event]] = {
    "entry": LaneEvent,
    "exit": LaneEvent,
    "denied": LaneEvent,
    "paid": PaidEvent,
    "rejected": RejectedEvent,
    "no_read": NoReadEvent,
    "no_read_resolved": NoReadResolvedEvent,
}


def event_model(kind: str) -> type[Event]:
    return EVENT_MODELS.get(kind, Event)


def validate_outbound(topic: str, payload: str | bytes) -> BaseModel:
    """Validate an outbox payload against the model of its relative topic (tests, tools)."""
    if topic.startswith("events/"):
        return event_model(topic.split("/", 1)[1]).model_validate_json(payload)
    if topic == OCCUPANCY_TOPIC:
        return Occupancy.model_validate_json(payload)
    if topic.startswith("lanes/") and topic.endswith("/gate"):
        return GateState.model_validate_json(payload)
    raise ValueError(f"no model for topic {topic!r}")


# --------------------------------------------------------------------------- outbound payloads
# The store hands typed values to these builders; nothing else makes an outgoing payload.


def encode(payload: Mapping[str, Any]) -> str:
    """The wire form of an outbound payload (compact JSON), as the outbox keeps it."""
    return json.dumps(payload, separators=(",", ":"))


def event_topic(kind: str) -> str:
    return EVENT_TOPIC.format(kind=kind)


def event_payload(
    *,
    event_id: str,
    lot: str,
    lane: str | None,
    kind: str,
    at: str,
    plate: str,
    session_id: int | None,
    reason: str,
    message: str,
    data: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An :class:`Event` (``events/{kind}``); ``data`` adds the kind's own keys."""
    return {
        "id": event_id,
        "lot": lot,
        "lane": lane,
        "kind": kind,
        "at": at,
        "plate": plate,
        "session_id": session_id,
        "reason": reason,
        "message": message,
        **(data or {}),
    }


def occupancy_payload(*, msg_id: str, lot: str, at: str, capacity: int, occupied: int) -> dict[str, Any]:
    """An :class:`Occupancy` (``occupancy``, retained)."""
    return {
        "id": msg_id,
        "lot": lot,
        "at": at,
        "capacity": capacity,
        "occupied": occupied,
        "free": max(0, capacity - occupied),
    }


# --------------------------------------------------------------------------- schemas

SCHEMA_FILES: dict[str, type[BaseModel]] = {
    "event.json": Event,
    "lane_event.json": LaneEvent,
    "paid_event.json": PaidEvent,
    "rejected_event.json": RejectedEvent,
    "no_read_event.json": NoReadEvent,
    "no_read_resolved_event.json": NoReadResolvedEvent,
    "occupancy.json": Occupancy,
    "gate_state.json": GateState,
    "reply.json": Reply,
    **{f"cmd_{name}.json": model for name, model in COMMANDS.items()},
}


def render_schemas() -> dict[str, str]:
    """File name -> JSON Schema text, exactly as written to docs/schemas."""
    out = {}
    for name, model in SCHEMA_FILES.items():
        schema: dict[str, Any] = model.model_json_schema()
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": name, **schema}
        out[name] = json.dumps(schema, indent=2, sort_keys=False) + "\n"
    return out


def write_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_schemas().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gatekeeper.messages", description=__doc__.split("\n")[0])
    parser.add_argument("--write-schemas", type=Path, metavar="DIR", help="write JSON Schemas into DIR")
    args = parser.parse_args(argv)
    if args.write_schemas is None:
        parser.print_help()
        return 2
    for path in write_schemas(args.write_schemas):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
