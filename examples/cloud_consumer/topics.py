"""Which topics a cloud consumer subscribes to, which lots a partition owns, and what a message is.

Pure functions, no broker: the consumer (consumer.py) and the store (store.py) share them.
The topic layout is docs/mqtt.md's: everything under ``{prefix}/{lot}/``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Iterable, Literal

#: The topics a lot publishes that the cloud keeps. Every JSON one carries ``seq`` (one counter per lot
#: across all of them), so all of them are needed to see gaps; ``status`` is plain text without one.
#: Home Assistant's QoS 0 topics (``health``, ``lanes/+/event``, ``lanes/+/last_read``) are left out.
LOT_TOPICS = ("events/#", "occupancy", "lanes/+/gate", "reply/+", "status")

Mode = Literal["shared", "partitioned"]
Kind = Literal["event", "occupancy", "gate", "reply", "status", "other"]


def partition_of(lot: str, partitions: int) -> int:
    """The partition (0 .. partitions-1) that owns ``lot``: a stable hash, the same in every process."""
    if partitions < 1:
        raise ValueError(f"partitions must be at least 1, got {partitions}")
    digest = hashlib.sha256(lot.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % partitions


def owned_lots(lots: Iterable[str], *, partition: int, partitions: int) -> list[str]:
    """The lots of ``lots`` that ``partition`` consumes, sorted."""
    if not 0 <= partition < partitions:
        raise ValueError(f"partition {partition} is not in 0..{partitions - 1}")
    return sorted({lot for lot in lots if partition_of(lot, partitions) == partition})


def topic_filters(*, mode: Mode, prefix: str, group: str = "cloud", lots: Iterable[str] = ()) -> list[str]:
    """The subscriptions of one consumer.

    ``shared``: ``$share/{group}/{prefix}/+/...``: every lot, the broker spreads messages over the group.
    ``partitioned``: ``{prefix}/{lot}/...`` for each lot this consumer owns (non-shared, so a broker that
    does not keep shared subscriptions over a restart still queues for it).
    """
    prefix = prefix.strip("/")
    if mode == "shared":
        if not group or any(c in group for c in "/+#"):
            raise ValueError(f"bad share group name {group!r}")
        return [f"$share/{group}/{prefix}/+/{topic}" for topic in LOT_TOPICS]
    if mode == "partitioned":
        return [f"{prefix}/{lot}/{topic}" for lot in sorted(set(lots)) for topic in LOT_TOPICS]
    raise ValueError(f"unknown mode {mode!r} (shared or partitioned)")


@dataclass(frozen=True)
class Message:
    """One message as the cloud keeps it. ``seq``/``msg_id`` are None where the edge sends none."""

    lot: str
    topic: str  # relative to {prefix}/{lot}/
    kind: Kind
    payload: str
    msg_id: str | None
    seq: int | None
    body: dict[str, Any] | None


class Malformed(ValueError):
    """A message the consumer cannot read; it is kept aside, never dropped silently."""


def parse(topic: str, payload: bytes, *, prefix: str) -> Message:
    """Classify one received message; :class:`Malformed` when it is not what the contract says."""
    prefix = prefix.strip("/") + "/"
    if not topic.startswith(prefix):
        raise Malformed(f"topic {topic!r} is not under {prefix!r}")
    lot, _, relative = topic[len(prefix):].partition("/")
    if not lot or not relative:
        raise Malformed(f"topic {topic!r} names no lot and topic")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise Malformed("payload is not UTF-8") from None
    kind = _kind(relative)
    if kind == "status":
        return Message(lot=lot, topic=relative, kind=kind, payload=text, msg_id=None, seq=None, body=None)
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise Malformed(f"payload is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise Malformed(f"payload is a JSON {type(body).__name__}, not an object")
    msg_id, seq = body.get("id"), body.get("seq")
    if msg_id is not None and not isinstance(msg_id, str):
        raise Malformed(f"id is a {type(msg_id).__name__}, not a string")
    if seq is not None and (not isinstance(seq, int) or isinstance(seq, bool) or seq < 1):
        raise Malformed(f"seq {seq!r} is not a positive integer")
    if kind in ("event", "occupancy", "gate") and (msg_id is None or seq is None):
        raise Malformed(f"a {kind} message without id or seq")
    return Message(lot=lot, topic=relative, kind=kind, payload=text, msg_id=msg_id, seq=seq, body=body)


def _kind(relative: str) -> Kind:
    if relative.startswith("events/"):
        return "event"
    if relative == "occupancy":
        return "occupancy"
    if relative.startswith("lanes/") and relative.endswith("/gate"):
        return "gate"
    if relative.startswith("reply/"):
        return "reply"
    if relative == "status":
        return "status"
    return "other"
