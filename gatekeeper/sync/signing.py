"""HMAC-SHA256 signatures on cloud commands, and the checks that come before acting on one.

The scheme (documented in docs/mqtt.md, "Signing"):

* The payload is a JSON object. Its ``sig`` member is the lower-case hex
  HMAC-SHA256, keyed with the lot's secret (UTF-8 bytes), of the *canonical JSON*
  of the object without ``sig``: keys sorted, separators ``,`` and ``:``, no
  whitespace, non-ASCII characters as UTF-8 (not escaped). In Python:
  ``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()``.
  Signed bodies carry no floats (money is integer minor units), so every JSON
  library produces the same bytes.
* ``ts`` (ISO 8601 with offset) must be within ``mqtt.max_clock_skew_s`` of the
  edge clock, and ``id`` must never have been seen before (the store remembers ids).

A signature in the body (rather than an MQTT 5 user property) works the same over
MQTT 3.1.1 and survives bridges that drop properties.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime
from typing import Any, Mapping

SIGNATURE_FIELD = "sig"


class SignatureError(Exception):
    """The command is not authentic or not fresh; ``reason`` is a stable code for events."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def canonical_json(obj: Mapping[str, Any]) -> bytes:
    """The exact bytes that are signed."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def signature(body: Mapping[str, Any], secret: str | bytes) -> str:
    """Hex HMAC-SHA256 of ``body`` (any ``sig`` member is left out)."""
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    unsigned = {k: v for k, v in body.items() if k != SIGNATURE_FIELD}
    return hmac.new(key, canonical_json(unsigned), hashlib.sha256).hexdigest()


def sign(body: Mapping[str, Any], secret: str | bytes) -> dict[str, Any]:
    """``body`` with its ``sig`` added (what the cloud does; used by tests and tools)."""
    return {**{k: v for k, v in body.items() if k != SIGNATURE_FIELD}, SIGNATURE_FIELD: signature(body, secret)}


def verify_signature(body: Mapping[str, Any], secret: str | bytes | None) -> None:
    """Raise :class:`SignatureError` unless ``body['sig']`` is right for ``secret``."""
    if not secret:
        raise SignatureError("no_secret", "no HMAC secret is configured on this lane: signed commands are refused")
    given = body.get(SIGNATURE_FIELD)
    if given is None:
        raise SignatureError("unsigned", "command is not signed (no 'sig')")
    if not isinstance(given, str):
        raise SignatureError("bad_signature", "'sig' must be a hex string")
    expected = signature(body, secret)
    # compare_digest on ASCII bytes: constant time whatever the attacker sent.
    if not hmac.compare_digest(expected.encode("ascii"), given.encode("utf-8", "replace")):
        raise SignatureError("bad_signature", "signature does not match")


def check_fresh(ts: datetime, now: datetime, max_skew_s: float) -> None:
    """Raise :class:`SignatureError` when ``ts`` is further than ``max_skew_s`` from ``now``."""
    skew = abs((now - ts).total_seconds())
    if skew > max_skew_s:
        when = "old" if ts < now else "in the future"
        raise SignatureError("stale", f"timestamp {ts.isoformat()} is {skew:.0f}s {when} (limit {max_skew_s:.0f}s)")
