"""Cloud commands: parse, authenticate, carry out, answer. No broker needed.

:meth:`CommandHandler.process` takes a command's topic and raw payload and returns an
:class:`Outcome`: the :class:`~gatekeeper.messages.Reply` and whether it was queued in the
outbox. An authenticated command, its effect, the remembered id with its reply, and the reply's
outbox row commit in ONE transaction; only then may the transport acknowledge the command to the
broker (a crash before that commit means the broker delivers it again). A command id seen before
gets its stored reply again, never a second effect; a payment reference already applied to a
session is not applied again.

A request refused before it is authenticated (not strict JSON, bad unicode or numbers, bad
signature, invalid fields, stale) changes nothing: its reply is published directly, not stored.
Refusals are counted; a ``rejected`` event is logged for at most 60 a minute, and a
``rejected_summary`` event with the counts at least once a minute while they go on.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable

from pydantic import ValidationError

from gatekeeper.config import Settings
from gatekeeper.messages import (
    COMMANDS,
    REPLY_TOPIC,
    Command,
    ListCommand,
    OpenCommand,
    PaymentCommand,
    PaymentResult,
    Reply,
    ReservationCommand,
    TariffCommand,
)
from gatekeeper.rules import Tariff, match_session, normalise_plate
from gatekeeper.store import Store, StoreError, UnknownSession
from gatekeeper.store.records import PaymentAlreadyApplied, StorageFault
from gatekeeper.sync.screening import (
    REJECT_EVENTS_PER_MINUTE,
    Rejected,
    RejectionLog,
    check_values,
    load_json_object,
    parse_json_object,
    short_validation_error,
)
from gatekeeper.sync.signing import SignatureError, check_fresh, verify_signature

__all__ = ["REJECT_EVENTS_PER_MINUTE", "CommandHandler", "OpenHandler", "Outcome", "Rejected", "RejectionLog",
           "parse_json_object"]

log = logging.getLogger(__name__)

OpenHandler = Callable[[str, str, str], None]
#: Payments by plate accept look-alike confusions only (O/0, I/1, ...), never a different character:
#: a driver who typed the wrong plate must not pay for someone else's car.
PAYMENT_MAX_DISTANCE = 0.5
_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


@dataclass(frozen=True)
class Outcome:
    """A command's reply, and whether it is in the outbox (else: publish it directly, best effort)."""

    reply: Reply
    queued: bool


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
        rejections: RejectionLog | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.open_handler = open_handler
        self.on_config_change = on_config_change
        self.lot_id = settings.site.lot_id
        self._secret = secret
        self._wake = wake
        self._rejects = rejections or RejectionLog()
        self.commands_ok = 0
        self.commands_rejected = 0

    @property
    def rejections_total(self) -> int:
        return self._rejects.total

    def handle(self, topic: str, payload: bytes, correlation: bytes | None = None) -> Reply:
        """:meth:`process`, for callers that only want the reply."""
        return self.process(topic, payload, correlation=correlation).reply

    def process(self, topic: str, payload: bytes, *, correlation: bytes | None = None) -> Outcome:
        """Authenticate and carry out one command. Never raises for bad input.

        When ``queued`` is True the reply, the effect and the command's id are committed: the
        command may be acknowledged to the broker. When False nothing was changed (refused
        before authentication, or the store could not commit): publish the reply directly.
        """
        name = topic.rsplit("/", 1)[-1]
        request_id: str | None = None
        try:
            if name not in COMMANDS:
                raise Rejected("unknown_command", f"unknown command {name!r} (known: {', '.join(COMMANDS)})")
            if len(payload) > self.settings.mqtt.max_payload_bytes:
                raise Rejected("oversize", f"payload of {len(payload)} bytes exceeds {self.settings.mqtt.max_payload_bytes}")
            body = load_json_object(payload)
            raw_id = body.get("id")
            if isinstance(raw_id, str) and _ID_PATTERN.match(raw_id):
                request_id = raw_id
            check_values(body)
            command = self._authenticate(name, body, payload)
        except Rejected as exc:
            return Outcome(self._refused(name, request_id, exc), queued=False)
        try:
            reply = self._carry_out(name, command, correlation)
        except StorageFault as exc:
            error = Rejected("unavailable", f"{exc}: nothing was applied, retry with the same id")
            return Outcome(self._refused(name, request_id, error), queued=False)
        except Exception as exc:  # a bug: say so without a traceback to the cloud
            log.exception("%s command %s failed", name, request_id)
            error = Rejected("failed", f"internal error: {type(exc).__name__}; nothing was applied")
            return Outcome(self._refused(name, request_id, error), queued=False)
        self._wake()
        if reply.status == "ok" and isinstance(command, TariffCommand) and not reply.repeat:
            self._config_changed()
        return Outcome(reply, queued=True)

    # -- before anything is stored --------------------------------------------------------

    def _authenticate(self, name: str, body: dict[str, Any], payload: bytes) -> Command:
        try:
            verify_signature(body, self._secret, lot=self.lot_id, command=name,
                             accept_v1=self.settings.mqtt.accept_v1_signatures)
        except SignatureError as exc:
            raise Rejected(exc.reason, str(exc)) from None
        try:
            command = COMMANDS[name].model_validate_json(payload)
        except ValidationError as exc:
            raise Rejected("invalid", short_validation_error(exc)) from None
        try:
            check_fresh(command.ts, self.clock(), self.settings.mqtt.max_clock_skew_s)
        except SignatureError as exc:
            raise Rejected(exc.reason, str(exc)) from None
        return command

    def _refused(self, name: str, request_id: str | None, exc: Rejected) -> Reply:
        """An error reply that is not stored (nothing changed), and the refusal logged."""
        self.commands_rejected += 1
        log.warning("rejected %s command %s: %s (%s)", name, request_id or "(no id)", exc, exc.reason)
        reply = Reply(id=request_id, status="error", error=str(exc), command=name, at=self.clock())
        try:
            self._log_rejection(name, request_id, exc.reason, str(exc))
        except StoreError as store_exc:
            log.error("could not record the rejected %s command: %s", name, store_exc)
        return reply

    def _log_rejection(self, name: str, request_id: str | None, reason: str, message: str) -> None:
        """Count it; record a ``rejected`` event unless the rate limit says no (joins a caller's transaction)."""
        allowed, suppressed = self._rejects.allow(reason)
        if not allowed:
            return
        data: dict[str, Any] = {"command": name, "request_id": request_id}
        if suppressed:
            data["suppressed"] = suppressed
        self.store.record_event("rejected", reason=reason, message=message[:300], data=data)
        self._wake()

    def summarise_rejections(self) -> bool:
        """Record the ``rejected_summary`` event when one is due; True when one was recorded."""
        summary = self._rejects.summary_due()
        if summary is None:
            return False
        message = f"{summary['count']} command(s) refused in the last {summary['window_s']:.0f} s"
        log.warning("%s: %s", message, summary["by_reason"])
        self.store.record_event("rejected_summary", reason="commands_refused", message=message, data=summary)
        self._wake()
        return True

    # -- stored: effect, id, reply and its outbox row in one transaction ---------------------

    def _carry_out(self, name: str, command: Command, correlation: bytes | None) -> Reply:
        if isinstance(command, OpenCommand):
            return self._carry_out_open(command, correlation)
        inbound = self.store.inbound
        with self.store.transaction() as conn:
            seen, stored = inbound.lookup(conn, command.id)
            if seen:
                return self._repeat(name, command, stored, correlation)
            conn.execute("SAVEPOINT command")
            try:
                reply = self._apply(name, command)
                conn.execute("RELEASE command")
            except (Rejected, StoreError, ValueError) as exc:
                if isinstance(exc, StorageFault):
                    raise
                conn.execute("ROLLBACK TO command")
                conn.execute("RELEASE command")
                reply = self._error_reply(name, command, exc)
            self._finish(name, command, reply, correlation)
        return reply

    def _carry_out_open(self, command: OpenCommand, correlation: bytes | None) -> Reply:
        """Open: at most once. The id is committed as under way before the relay moves; the reply after."""
        with self.store.transaction() as conn:
            seen, stored = self.store.inbound.lookup(conn, command.id)
            if seen:
                return self._repeat("open", command, stored, correlation)
            self.store.inbound.store(conn, command.id, "open", None, now=self.clock())
        try:
            if self.open_handler is None:
                raise Rejected("unsupported", "this process drives no barriers")
            try:
                self.open_handler(command.lane, command.reason, "cloud")
            except Exception as exc:
                raise Rejected("open_failed", f"lane {command.lane}: {exc}") from None
            reply = Reply(id=command.id, status="ok", command="open", at=self.clock())
        except Rejected as exc:
            reply = self._error_reply("open", command, exc)
        with self.store.transaction():
            self._finish("open", command, reply, correlation)
        return reply

    def _finish(self, name: str, command: Command, reply: Reply, correlation: bytes | None) -> None:
        """Remember the id with its reply and queue the reply (inside the caller's transaction)."""
        with self.store.transaction() as conn:
            self.store.inbound.store(conn, command.id, name, reply.model_dump_json(), now=self.clock())
            self._queue_reply(reply, correlation)
        if reply.status == "ok":
            self.commands_ok += 1
            log.info("%s command %s done%s", name, command.id, " (duplicate payment)" if reply.duplicate else "")

    def _error_reply(self, name: str, command: Command, exc: Exception) -> Reply:
        if isinstance(exc, Rejected):
            rejected = exc
        else:
            reason = "unknown_session" if isinstance(exc, UnknownSession) else "refused"
            rejected = Rejected(reason, str(exc))
        self.commands_rejected += 1
        log.warning("refused %s command %s: %s (%s)", name, command.id, rejected, rejected.reason)
        self._log_rejection(name, command.id, rejected.reason, str(rejected))
        return Reply(id=command.id, status="error", error=str(rejected), command=name, at=self.clock())

    def _repeat(self, name: str, command: Command, stored: str | None, correlation: bytes | None) -> Reply:
        """A command id seen before: its stored reply again (queued again), nothing carried out."""
        if stored is not None:
            reply = Reply.model_validate_json(stored).model_copy(update={"repeat": True, "seq": None})
            log.info("%s command %s seen before: stored reply sent again", name, command.id)
            self._queue_reply(reply, correlation)
            return reply
        # Only an open is stored without a reply: it was under way when the process stopped.
        reply = Reply(id=command.id, status="error", command=name, at=self.clock(), repeat=True,
                      error="this open was under way when the edge restarted; it is not repeated "
                            "(the barrier may have opened: see the events)")
        with self.store.transaction() as conn:
            self.store.inbound.store(conn, command.id, name, reply.model_dump_json(), now=self.clock())
            self._queue_reply(reply, correlation)
        return reply

    def _queue_reply(self, reply: Reply, correlation: bytes | None) -> None:
        payload = reply.model_dump(mode="json", exclude={"seq"})
        self.store.enqueue(REPLY_TOPIC.format(name=reply.command), payload, correlation=correlation)

    def _config_changed(self) -> None:
        if self.on_config_change is None:
            return
        try:
            self.on_config_change()
        except Exception:
            log.exception("on_config_change failed after a tariff update (the new tariff is stored)")

    def _apply(self, name: str, command: Command) -> Reply:
        if isinstance(command, PaymentCommand):
            return self._do_payment(command)
        if isinstance(command, ListCommand):
            self._do_lists(command)
        elif isinstance(command, ReservationCommand):
            self._do_reservation(command)
        elif isinstance(command, TariffCommand):
            self._do_tariff(command)
        return Reply(id=command.id, status="ok", command=name, at=self.clock())

    def _do_payment(self, command: PaymentCommand) -> Reply:
        now = self.clock()
        tariff = self.store.tariff()
        if command.currency and command.currency != tariff.currency:
            raise Rejected("currency_mismatch", f"payment in {command.currency}, the lot charges {tariff.currency}")
        paid_at = command.paid_at or now
        if paid_at > now + timedelta(seconds=self.settings.mqtt.max_clock_skew_s):
            raise Rejected("invalid", f"paid_at {paid_at.isoformat()} is in the future")
        session_id = command.session_id if command.session_id is not None else self._session_for_plate(command.plate or "")
        try:
            row = self.store.pay_session(session_id, amount=command.amount, reference=command.reference,
                                         paid_at=paid_at, by="cloud", now=now, command_id=command.id)
        except PaymentAlreadyApplied as exc:
            return Reply(id=command.id, status="ok", command="payment", at=now, session_id=session_id,
                         duplicate=True, result=PaymentResult.model_validate(exc.first),
                         error=None)
        result = PaymentResult(session_id=session_id, amount=command.amount, reference=command.reference,
                               paid_at=paid_at, amount_paid=row["amount_paid"], command_id=command.id)
        return Reply(id=command.id, status="ok", command="payment", at=now, session_id=session_id, result=result)

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
        schedule = None if command.schedule is None else [rule.model_dump() for rule in command.schedule]
        self.store.upsert_reservation(command.reservation_id, command.plate, command.valid_from,
                                      command.valid_until, command.note, schedule)

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
