"""HMAC-SHA256 signatures on cloud commands, and the checks that come before acting on one.

The scheme (documented in docs/mqtt.md, "Signing"), version ``v2``:

* ``sig`` = ``"v2:"`` + lower-case hex HMAC-SHA256, keyed with the lot's secret (UTF-8 bytes), of

      b"gatekeeper-cmd-v2\\n" + lot_id + b"\\n" + command_name + b"\\n" + canonical_json(body without sig)

  where ``command_name`` is the last level of the topic (``payment``) and the canonical JSON is:
  keys sorted, separators ``,`` and ``:``, no whitespace, non-ASCII characters as UTF-8 (not escaped).
  In Python: ``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()``.
  The body carries ``id`` and ``ts``, so the signature binds the lot, the command, its id and its time:
  a command signed for another lot, or moved to another command topic, does not verify.
* ``v1`` (a bare hex HMAC over the canonical JSON alone, binding neither lot nor command) is refused
  unless ``mqtt.accept_v1_signatures`` is set, for a cloud that has not moved to v2 yet.
* ``ts`` (ISO 8601 with offset) must be within ``mqtt.max_clock_skew_s`` of the edge clock.

A signature in the body (rather than an MQTT 5 user property) works the same over
MQTT 3.1.1 and survives bridges that drop properties.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime
from typing import Any, Literal, Mapping

SIGNATURE_FIELD = "sig"
SCHEME = "v2"
_V2_PREFIX = "v2:"
_V2_DOMAIN = b"gatekeeper-cmd-v2\n"


class SignatureError(Exception):
    """The command is not authentic or not fresh; ``reason`` is a stable code for events."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def canonical_json(obj: Mapping[str, Any]) -> bytes:
    """The exact JSON bytes that are signed."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def signed_bytes(body: Mapping[str, Any], *, lot: str, command: str) -> bytes:
    """What a v2 signature covers: domain, lot id, command name, canonical JSON of the body without ``sig``."""
    unsigned = {k: v for k, v in body.items() if k != SIGNATURE_FIELD}
    return _V2_DOMAIN + lot.encode("utf-8") + b"\n" + command.encode("utf-8") + b"\n" + canonical_json(unsigned)


def _mac(secret: str | bytes, data: bytes) -> str:
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def signature(body: Mapping[str, Any], secret: str | bytes, *, lot: str, command: str,
              version: Literal["v1", "v2"] = "v2") -> str:
    """The ``sig`` value for ``body`` (any ``sig`` member is left out)."""
    if version == "v1":
        return _mac(secret, canonical_json({k: v for k, v in body.items() if k != SIGNATURE_FIELD}))
    return _V2_PREFIX + _mac(secret, signed_bytes(body, lot=lot, command=command))


def sign(body: Mapping[str, Any], secret: str | bytes, *, lot: str, command: str,
         version: Literal["v1", "v2"] = "v2") -> dict[str, Any]:
    """``body`` with its ``sig`` added (what the cloud does; used by tests and tools)."""
    sig = signature(body, secret, lot=lot, command=command, version=version)
    return {**{k: v for k, v in body.items() if k != SIGNATURE_FIELD}, SIGNATURE_FIELD: sig}


def verify_signature(body: Mapping[str, Any], secret: str | bytes | None, *, lot: str, command: str,
                     accept_v1: bool = False) -> None:
    """Raise :class:`SignatureError` unless ``body['sig']`` is right for ``secret``, this lot and this command."""
    if not secret:
        raise SignatureError("no_secret", "no HMAC secret is configured on this lane: signed commands are refused")
    given = body.get(SIGNATURE_FIELD)
    if given is None:
        raise SignatureError("unsigned", "command is not signed (no 'sig')")
    if not isinstance(given, str):
        raise SignatureError("bad_signature", "'sig' must be a string")
    if given.startswith(_V2_PREFIX):
        expected = signature(body, secret, lot=lot, command=command)
    elif not accept_v1 and _looks_v1(given):
        raise SignatureError("old_signature", "v1 signature (binds neither lot nor command) refused: sign with "
                                              "v2 (docs/mqtt.md, Signing)")
    elif accept_v1:
        expected = signature(body, secret, lot=lot, command=command, version="v1")
    else:
        raise SignatureError("bad_signature", "'sig' is neither a v2 nor a v1 signature")
    # compare_digest on ASCII bytes: constant time whatever the attacker sent.
    if not hmac.compare_digest(expected.encode("ascii"), given.encode("utf-8", "replace")):
        raise SignatureError("bad_signature", "signature does not match (lot, command, or any field)")


def _looks_v1(sig: str) -> bool:
    return len(sig) == 64 and all(c in "0123456789abcdef" for c in sig)


def check_fresh(ts: datetime, now: datetime, max_skew_s: float) -> None:
    """Raise :class:`SignatureError` when ``ts`` is further than ``max_skew_s`` from ``now``."""
    skew = abs((now - ts).total_seconds())
    if skew > max_skew_s:
        when = "old" if ts < now else "in the future"
        raise SignatureError("stale", f"timestamp {ts.isoformat()} is {skew:.0f}s {when} (limit {max_skew_s:.0f}s)")
