"""Cloud commands: parse, authenticate, carry out, answer. No broker needed.

:meth:`CommandHandler.handle` takes a command's topic and raw payload and returns the
:class:`~gatekeeper.messages.Reply` to publish. A command is refused (an ``error`` reply and
a ``rejected`` event, at a bounded rate) when it is not strict JSON, not signed with the
lot's secret, stale, replayed, invalid, or cannot be carried out. Remembering a command's id
and acting on it commit together.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timedelta
from typing import Any, Callable

from pydantic import ValidationError

from gatekeeper.config import Settings
from gatekeeper.messages import (
    COMMANDS,
    Command,
    ListCommand,
    OpenCommand,
    PaymentCommand,
    Reply,
    ReservationCommand,
    TariffCommand,
)
from gatekeeper.rules import Tariff, match_session, normalise_plate
from gatekeeper.store import Store, StoreError, UnknownSession
from gatekeeper.sync.signing import SignatureError, check_fresh, verify_signature

log = logging.getLogger(__name__)

OpenHandler = Callable[[str, str, str], None]
#: Payments by plate accept look-alike confusions only (O/0, I/1, ...), never a different character:
#: a driver who typed the wrong plate must not pay for someone else's car.
PAYMENT_MAX_DISTANCE = 0.5
REJECT_EVENTS_PER_MINUTE = 60


class Rejected(Exception):
    """A command refused before or while acting on it; ``reason`` is a stable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """Strict JSON: UTF-8, an object, no duplicate keys, no NaN (what was signed is what is read)."""

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
        body = json.loads(text, object_pairs_hook=no_duplicates, parse_constant=no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise Rejected("malformed", f"not valid JSON: {exc}"[:300]) from None
    if not isinstance(body, dict):
        raise Rejected("malformed", f"expected a JSON object, got {type(body).__name__}")
    return body


def _short_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "(body)"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)[:500]


class _RejectLog:
    """At most ``limit`` rejected-command events a minute: a flood must not fill the disk."""

    def __init__(self, limit: int = REJECT_EVENTS_PER_MINUTE) -> None:
        self.limit = limit
        self.window_start = time.monotonic()
        self.count = 0
        self.suppressed = 0

    def allow(self) -> tuple[bool, int]:
        """(log this one?, suppressed count to report with it)."""
        now = time.monotonic()
        if now - self.window_start >= 60:
            self.window_start, self.count = now, 0
        if self.count >= self.limit:
            self.suppressed += 1
            return False, 0
        self.count += 1
        suppressed, self.suppressed = self.suppressed, 0
        return True, suppressed


class CommandHandler:
    """Carries out verified cloud commands against the store (and the lanes, for ``open``)."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        secret: str | None,
        clock: Callable[[], datetime],
        open_handler: OpenHandler | None = None,
        on_config_change: Callable[[], None] | None = None,
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.open_handler = open_handler
        self.on_config_change = on_config_change
        self._secret = secret
        self._wake = wake
        self._rejects = _RejectLog()
        self.commands_ok = 0
        self.commands_rejected = 0

    def handle(self, topic: str, payload: bytes) -> Reply:
        """Authenticate and carry out one command, log a rejection; the reply to send. Never raises for bad input."""
        name = topic.rsplit("/", 1)[-1]
        request_id: str | None = None
        session_id: int | None = None
        try:
            if name not in COMMANDS:
                raise Rejected("unknown_command", f"unknown command {name!r} (known: {', '.join(COMMANDS)})")
            if len(payload) > self.settings.mqtt.max_payload_bytes:
                raise Rejected("oversize", f"payload of {len(payload)} bytes exceeds {self.settings.mqtt.max_payload_bytes}")
            body = parse_json_object(payload)
            raw_id = body.get("id")
            if isinstance(raw_id, str) and 0 < len(raw_id) <= 128:
                request_id = raw_id
            try:
                verify_signature(body, self._secret)
            except SignatureError as exc:
                raise Rejected(exc.reason, str(exc)) from None
            try:
                command = COMMANDS[name].model_validate_json(payload)
            except ValidationError as exc:
                raise Rejected("invalid", _short_validation_error(exc)) from None
            try:
                check_fresh(command.ts, self.clock(), self.settings.mqtt.max_clock_skew_s)
            except SignatureError as exc:
                raise Rejected(exc.reason, str(exc)) from None
            session_id = self._dispatch(name, command)
        except Rejected as exc:
            self.commands_rejected += 1
            log.warning("rejected %s command %s: %s (%s)", name, request_id or "(no id)", exc, exc.reason)
            reply = Reply(id=request_id, status="error", error=str(exc), command=name, at=self.clock())
            self._log_rejection(name, request_id, exc.reason, str(exc))
        except Exception as exc:
            self.commands_rejected += 1
            log.exception("%s command %s failed", name, request_id)
            reply = Reply(id=request_id, status="error", error=f"internal error: {type(exc).__name__}",
                          command=name, at=self.clock())
            self._log_rejection(name, request_id, "failed", f"{type(exc).__name__}: {exc}")
        else:
            self.commands_ok += 1
            log.info("%s command %s done", name, request_id)
            reply = Reply(id=request_id, status="ok", command=name, at=self.clock(), session_id=session_id)
        return reply

    def _log_rejection(self, name: str, request_id: str | None, reason: str, message: str) -> None:
        allowed, suppressed = self._rejects.allow()
        if not allowed:
            return
        data: dict[str, Any] = {"command": name, "request_id": request_id}
        if suppressed:
            data["suppressed"] = suppressed
        try:
            self.store.record_event("rejected", reason=reason, message=message[:300], data=data)
            self._wake()
        except Exception:
            log.exception("could not record the rejected %s command", name)

    def _dispatch(self, name: str, command: Command) -> int | None:
        if isinstance(command, OpenCommand):
            return self._do_open(command)
        try:
            with self.store.transaction():
                # Remembering the id and acting commit together: a crash leaves neither.
                if not self.store.remember_inbound(command.id, name):
                    raise Rejected("replay", f"command id {command.id} was already used")
                if isinstance(command, PaymentCommand):
                    return self._do_payment(command)
                if isinstance(command, ListCommand):
                    self._do_lists(command)
                elif isinstance(command, ReservationCommand):
                    self._do_reservation(command)
                elif isinstance(command, TariffCommand):
                    self._do_tariff(command)
        except (Rejected, StoreError, ValueError) as exc:
            if not (isinstance(exc, Rejected) and exc.reason == "replay"):
                # A refused command still uses up its id: a captured copy must not work later.
                self.store.remember_inbound(command.id, name)
            if isinstance(exc, Rejected):
                raise
            reason = "unknown_session" if isinstance(exc, UnknownSession) else "refused"
            raise Rejected(reason, str(exc)) from None
        if isinstance(command, TariffCommand) and self.on_config_change is not None:
            try:
                self.on_config_change()
            except Exception:
                log.exception("on_config_change failed after a tariff update (the new tariff is stored)")
        return None

    def _do_payment(self, command: PaymentCommand) -> int:
        now = self.clock()
        tariff = self.store.tariff()
        if command.currency and command.currency != tariff.currency:
            raise Rejected("currency_mismatch", f"payment in {command.currency}, the lot charges {tariff.currency}")
        paid_at = command.paid_at or now
        if paid_at > now + timedelta(seconds=self.settings.mqtt.max_clock_skew_s):
            raise Rejected("invalid", f"paid_at {paid_at.isoformat()} is in the future")
        session_id = command.session_id if command.session_id is not None else self._session_for_plate(command.plate or "")
        self.store.pay_session(session_id, amount=command.amount, reference=command.reference,
                               paid_at=paid_at, by="cloud", now=now)
        return session_id

    def _session_for_plate(self, plate: str) -> int:
        key = normalise_plate(plate)
        if not key:
            raise Rejected("invalid", f"plate {plate!r} has no letters or digits")
        max_distance = min(self.settings.rules.match_max_distance, PAYMENT_MAX_DISTANCE)
        match, candidates = match_session(key, self.store.inside_sessions(), max_distance=max_distance)
        if match is not None:
            return match.session.id
        if candidates:
            listed = ", ".join(f"#{c.session.id} {c.session.plate}" for c in candidates)
            raise Rejected("ambiguous", f"plate {key} matches several sessions ({listed}); pay by session_id")
        raise Rejected("unknown_session", f"no vehicle inside with plate {key}")

    def _do_lists(self, command: ListCommand) -> None:
        if command.op == "remove":
            self.store.remove_list_entries(command.kind, [e.plate for e in command.entries])
        else:
            entries = [e.model_dump(exclude_none=True) for e in command.entries]
            self.store.set_list_entries(command.kind, entries, replace=command.op == "replace")

    def _do_reservation(self, command: ReservationCommand) -> None:
        if command.op == "delete":
            self.store.delete_reservation(command.reservation_id)  # deleting twice is fine
            return
        assert command.plate and command.valid_from and command.valid_until  # checked by the model
        self.store.upsert_reservation(command.reservation_id, command.plate, command.valid_from,
                                      command.valid_until, command.note)

    def _do_tariff(self, command: TariffCommand) -> None:
        current = self.store.tariff()
        t = command.tariff
        tariff = Tariff(
            free_minutes=t.free_minutes,
            interval_minutes=t.interval_minutes,
            rate=t.rate,
            daily_max=t.daily_max,
            grace_minutes=t.grace_minutes,
            currency=t.currency or current.currency,
            currency_digits=t.currency_digits if t.currency_digits is not None else current.currency_digits,
        )
        self.store.set_tariff(tariff, by="cloud")

    def _do_open(self, command: OpenCommand) -> None:
        if not self.store.remember_inbound(command.id, "open"):
            raise Rejected("replay", f"command id {command.id} was already used")
        if self.open_handler is None:
            raise Rejected("unsupported", "this process drives no barriers")
        try:
            self.open_handler(command.lane, command.reason, "cloud")
        except Exception as exc:
            raise Rejected("open_failed", f"lane {command.lane}: {exc}") from None
        return None
