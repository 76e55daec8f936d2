"""Values the store hands out and takes in: times as ISO text, ids, errors, row records."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Callable

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


class StorageFault(StoreError):
    """The disk refused a write (full, I/O error): nothing of the transaction was recorded."""


class PaymentAlreadyApplied(StoreError):
    """This payment reference was already applied to the session; ``first`` is what it did then."""

    def __init__(self, message: str, *, first: dict[str, Any]) -> None:
        super().__init__(message)
        self.first = first


@dataclass(frozen=True)
class OutboxRow:
    id: int
    msg_id: str
    topic: str  # relative to {prefix}/{lot_id}/
    payload: str
    qos: int
    retain: bool
    created_at: str
    correlation: bytes | None = None


@dataclass(frozen=True)
class Recorded:
    """What :meth:`Store.record_decision` made durable."""

    event_id: str
    session_id: int | None
