"""Values the store hands out and takes in: times as ISO text, ids, errors, row records."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Callable

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment!r}")
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def from_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def new_id() -> str:
    return uuid.uuid4().hex


class StoreError(Exception):
    """A request the store refuses; the message is for the person who asked."""


class UnknownSession(StoreError):
    pass


@dataclass(frozen=True)
class OutboxRow:
    id: int
    msg_id: str
    topic: str  # relative to {prefix}/{lot_id}/
    payload: str
    qos: int
    retain: bool
    created_at: str


@dataclass(frozen=True)
class Recorded:
    """What :meth:`Store.record_decision` made durable."""

    event_id: str
    session_id: int | None
