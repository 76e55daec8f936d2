"""Screening a command before it is trusted: strict JSON and values, and counting refusals.

Nothing here touches the store. :func:`load_json_object` reads the bytes (UTF-8, an object, no
duplicate keys, no NaN) and :func:`check_values` refuses what no command field may hold, naming the
field: lone surrogates, floats (``1e400``), integers beyond 2^53. :class:`RejectionLog` counts the
refusals and rate-limits the events about them.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

from pydantic import ValidationError

REJECT_EVENTS_PER_MINUTE = 60
#: A ``rejected_summary`` event at least this often while commands are being refused.
REJECT_SUMMARY_EVERY_S = 60.0
#: Integers in commands have at most this many digits (2**53 has 16).
MAX_INT_DIGITS = 16


class Rejected(Exception):
    """A command refused before or while acting on it; ``reason`` is a stable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class _BadNumber:
    """A JSON number commands never carry (a float, or an integer too long): reported with its field."""

    def __init__(self, text: str) -> None:
        self.text = text


def _parse_int(text: str) -> int | _BadNumber:
    return _BadNumber(text) if len(text.lstrip("-")) > MAX_INT_DIGITS else int(text)


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """Strict JSON: UTF-8, an object, no duplicate keys, no NaN, no floats, no huge integers, no lone
    surrogates; what was signed is what is read. :class:`Rejected` names the field at fault."""
    body = load_json_object(raw)
    check_values(body)
    return body


def load_json_object(raw: bytes) -> dict[str, Any]:
    """The JSON object in ``raw`` (UTF-8, no duplicate keys, no NaN); numbers commands never carry are
    left as markers for :func:`check_values`."""

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        for key, value in pairs:
            if key in obj:
                raise ValueError(f"duplicate key {key!r}")
            obj[key] = value
        return obj

    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        text = raw.decode("utf-8")
        body = json.loads(text, object_pairs_hook=no_duplicates, parse_constant=no_constants,
                          parse_float=_BadNumber, parse_int=_parse_int)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise Rejected("malformed", f"not valid JSON: {ascii(str(exc))[1:-1]}"[:300]) from None
    if not isinstance(body, dict):
        raise Rejected("malformed", f"expected a JSON object, got {type(body).__name__}")
    return body


def check_values(value: Any, path: str = "", depth: int = 0) -> None:
    """Refuse what no command field may hold, naming the field: lone surrogates, floats, huge integers."""
    where = path or "(body)"
    if depth > 16:
        raise Rejected("invalid", f"{where}: nested too deeply")
    if isinstance(value, str):
        if not _valid_unicode(value):
            raise Rejected("invalid", f"{where}: not valid Unicode (lone surrogate)")
    elif isinstance(value, _BadNumber):
        shown = value.text[:20] + ("..." if len(value.text) > 20 else "")
        problem = "out of range" if value.text.lstrip("-").isdigit() else "must be an integer"
        raise Rejected("invalid", f"{where}: number {shown} {problem}")
    elif isinstance(value, dict):
        for key, item in value.items():
            if not _valid_unicode(key):
                raise Rejected("invalid", f"{where}: a key is not valid Unicode (lone surrogate)")
            check_values(item, f"{path}.{key}" if path else key, depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_values(item, f"{where}[{i}]", depth + 1)


def _valid_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def short_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "(body)"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)[:500]


class RejectionLog:
    """Counts refusals; at most ``limit`` ``rejected`` events a minute (a flood must not fill the disk),
    and a summary at least every ``summary_every_s`` while refusals go on."""

    def __init__(self, limit: int = REJECT_EVENTS_PER_MINUTE, summary_every_s: float = REJECT_SUMMARY_EVERY_S) -> None:
        self.limit = limit
        self.summary_every_s = summary_every_s
        self.window_start = time.monotonic()
        self.count = 0
        self.suppressed = 0
        self.total = 0
        self._pending: Counter[str] = Counter()
        self._pending_since: float | None = None
        self._pending_suppressed = 0

    def allow(self, reason: str = "") -> tuple[bool, int]:
        """Count one refusal: (log it one by one?, suppressed count to report with it)."""
        now = time.monotonic()
        self.total += 1
        self._pending[reason] += 1
        if self._pending_since is None:
            self._pending_since = now
        if now - self.window_start >= 60:
            self.window_start, self.count = now, 0
        if self.count >= self.limit:
            self.suppressed += 1
            self._pending_suppressed += 1
            return False, 0
        self.count += 1
        suppressed, self.suppressed = self.suppressed, 0
        return True, suppressed

    def summary_due(self) -> dict[str, Any] | None:
        """The counts since the last summary once ``summary_every_s`` has passed since the first of them."""
        if self._pending_since is None or time.monotonic() - self._pending_since < self.summary_every_s:
            return None
        summary = {"count": sum(self._pending.values()), "by_reason": dict(self._pending),
                   "not_logged_one_by_one": self._pending_suppressed, "total_since_start": self.total,
                   "window_s": round(time.monotonic() - self._pending_since, 1)}
        self._pending, self._pending_since, self._pending_suppressed = Counter(), None, 0
        return summary
