"""Cloud sync over MQTT: the outbox goes up in order, verified commands come down.

Three threads, none of which a lane ever waits for:

* paho's network thread (``loop_start``): connects, reconnects with backoff, and only
  hands things over: PUBACKs become row ids to mark sent, messages go onto a queue.
* the drain thread: publishes unsent outbox rows QoS 1 strictly in id order with at most
  ``window`` rows awaiting a PUBACK, and marks rows sent (in batches) only once their
  PUBACK arrived. It wakes on :meth:`CloudSync.wake`, on every PUBACK, and once a second.
* the command thread: parses, authenticates and carries out cloud commands, one at a
  time, and answers each on ``reply/{name}``.

Ordering across a reconnect: paho keeps every unacknowledged QoS 1 message and sends it
again, in order, right after the CONNACK; the drain thread publishes nothing new until
our SUBACK arrives (which paho processes only after that re-send), so rows still reach the
broker in id order. After a restart the drain starts again at the first unsent row. A row
may therefore arrive twice (its PUBACK was lost), always with the same id.
"""

from __future__ import annotations

import argparse
import json
import logging
import queue
import re
import signal
import socket
import sys
import threading
import time
from datetime import datetime, timedelta
from typing import Any, Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import ValidationError

from gatekeeper.config import Settings, load_settings, read_secret
from gatekeeper.messages import (
    COMMANDS,
    OFFLINE,
    ONLINE,
    Command,
    ListCommand,
    OpenCommand,
    PaymentCommand,
    Reply,
    ReservationCommand,
    TariffCommand,
)
from gatekeeper.rules import Tariff, match_session, normalise_plate
from gatekeeper.sync.signing import SignatureError, check_fresh, verify_signature
from gatekeeper.store import Store, StoreError, UnknownSession, from_iso, to_iso, utcnow
from gatekeeper.sync.uploads import PhotoUploader

log = logging.getLogger(__name__)

OpenHandler = Callable[[str, str, str], None]
#: Payments by plate accept look-alike confusions only (O/0, I/1, ...), never a different character:
#: a driver who typed the wrong plate must not pay for someone else's car.
PAYMENT_MAX_DISTANCE = 0.5
#: Broker receive-maximum slots left for replies and the status message.
RESERVED_INFLIGHT = 4
HOUSEKEEPING_EVERY_S = 10.0
PRUNE_EVERY_S = 3600.0
REJECT_EVENTS_PER_MINUTE = 60


class Rejected(Exception):
    """A command refused before or while acting on it; ``reason`` is a stable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def default_client_id(lot_id: str) -> str:
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:40] or "host"
    return f"gatekeeper-{lot_id}-{host}"


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


class CloudSync:
    """The lane's MQTT link. ``start()``, ``wake()`` after new outbox rows, ``close()``."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        open_handler: OpenHandler | None = None,
        on_config_change: Callable[[], None] | None = None,
        uploader: PhotoUploader | None = None,
        poll_interval_s: float = 1.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.cfg = settings.mqtt
        self.store = store
        self.open_handler = open_handler
        self.on_config_change = on_config_change
        self.poll_interval_s = poll_interval_s
        self.clock = clock
        self.base = f"{self.cfg.prefix.strip('/')}/{settings.site.lot_id}"
        self.client_id = self.cfg.client_id or default_client_id(settings.site.lot_id)
        self._secret = read_secret(self.cfg.hmac_secret, self.cfg.hmac_secret_file, "mqtt.hmac_secret")
        self._password = read_secret(self.cfg.password, self.cfg.password_file, "mqtt.password")
        if uploader is None and settings.cloud.enabled:
            uploader = PhotoUploader(settings, store, clock=clock)
        self.uploader = uploader

        self._lock = threading.Lock()
        self._inflight: dict[int, int | None] = {}  # mid -> outbox row id (None: reply/status)
        self._early: dict[int, ReasonCode] = {}  # PUBACKs that beat publish() returning
        self._acked: list[int] = []  # row ids acknowledged, not yet marked sent
        self._cursor = 0  # highest row id handed to paho
        self._rewind_to: int | None = None
        self._window = self.cfg.max_inflight
        self._sub_mid: int | None = None

        self._wake = threading.Event()
        self._stop = threading.Event()
        self._ready = threading.Event()  # connected, subscribed, paho's re-send done
        self._connected = False
        self._commands: queue.Queue[tuple[str, bytes, Any] | None] = queue.Queue(maxsize=10_000)
        self._threads: list[threading.Thread] = []
        self._client: mqtt.Client | None = None
        self._rejects = _RejectLog()
        self._outbox_alarm = False
        self._last_housekeeping = 0.0
        self._last_prune = 0.0
        self.last_ack_at: datetime | None = None
        self.last_error: str | None = None
        self.published = 0
        self.acknowledged = 0
        self.commands_ok = 0
        self.commands_rejected = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "CloudSync":
        if self._client is not None:
            return self
        if not self.cfg.enabled:
            log.info("mqtt.enabled is false: events stay in the outbox until sync is enabled")
            if self.uploader is not None:
                self.uploader.start()
            return self
        if not self._secret:
            log.warning("mqtt.hmac_secret is not configured: every cloud command (payment, open, lists, "
                        "reservation, tariff) will be rejected")
        self._client = self._make_client()
        self._threads = [
            threading.Thread(target=self._drain_loop, name="mqtt-drain", daemon=True),
            threading.Thread(target=self._command_loop, name="mqtt-commands", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        self._connect(self._client)
        self._client.loop_start()
        if self.uploader is not None:
            self.uploader.start()
        log.info("sync started: %s:%d as %s, topics under %s/", self.cfg.host, self.cfg.port, self.client_id, self.base)
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Say offline, stop the threads; unacknowledged rows stay in the outbox."""
        self._stop.set()
        self._wake.set()
        try:
            self._commands.put_nowait(None)
        except queue.Full:
            pass  # the command thread checks _stop after each command
        client, self._client = self._client, None
        if client is not None and self._connected:
            try:
                info = client.publish(f"{self.base}/status", OFFLINE, qos=1, retain=True)
                info.wait_for_publish(timeout=min(timeout, 2.0))
            except (RuntimeError, ValueError) as exc:
                log.debug("offline status not sent: %s", exc)
        for thread in self._threads:
            thread.join(timeout=timeout)
        self._threads = []
        if client is not None:
            client.disconnect()
            client.loop_stop()
        self._flush_acks()
        if self.uploader is not None:
            self.uploader.close()
        self._connected = False
        self._ready.clear()

    def __enter__(self) -> "CloudSync":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wake(self) -> None:
        """New outbox rows (and maybe photos): publish now rather than at the next poll."""
        self._wake.set()
        if self.uploader is not None:
            self.uploader.wake()

    @property
    def connected(self) -> bool:
        return self._connected

    def health(self) -> dict[str, Any]:
        stats = self.store.outbox_stats()
        with self._lock:
            inflight = sum(1 for row in self._inflight.values() if row is not None)
        report = {
            "connected": self._connected,
            "backlog": stats["pending"],
            "oldest_pending_at": stats["oldest_pending_at"],
            "inflight": inflight,
            "published": self.published,
            "acknowledged": self.acknowledged,
            "last_ack_at": to_iso(self.last_ack_at) if self.last_ack_at else None,
            "outbox_alarm": self._outbox_alarm,
            "commands_ok": self.commands_ok,
            "commands_rejected": self.commands_rejected,
            "last_error": self.last_error,
        }
        if self.uploader is not None:
            report["uploads"] = self.uploader.health()
        return report

    # ------------------------------------------------------------------ connection

    @property
    def _mqtt5(self) -> bool:
        return self.cfg.protocol == "5"

    def _make_client(self) -> mqtt.Client:
        cfg = self.cfg
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5 if self._mqtt5 else mqtt.MQTTv311,
            clean_session=None if self._mqtt5 else False,
        )
        paho_log = logging.getLogger(__name__ + ".paho")
        paho_log.addFilter(self._quiet_shutdown)
        client.enable_logger(paho_log)
        if cfg.username:
            client.username_pw_set(cfg.username, self._password)
        if cfg.tls:
            client.tls_set(
                ca_certs=str(cfg.ca_file) if cfg.ca_file else None,
                certfile=str(cfg.cert_file) if cfg.cert_file else None,
                keyfile=str(cfg.key_file) if cfg.key_file else None,
            )
        client.will_set(f"{self.base}/status", OFFLINE, qos=1, retain=True)
        client.reconnect_delay_set(cfg.reconnect_min_s, cfg.reconnect_max_s)  # type: ignore[arg-type]
        # Our own window bounds what is in flight; paho must never hold a message back
        # ("queued"), or a later publish could overtake it.
        client.max_inflight_messages_set(0)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    @staticmethod
    def _quiet_shutdown(record: logging.LogRecord) -> bool:
        """paho 2.2 logs an ERROR for every loop pass without a socket (after our disconnect(), between
        reconnect attempts); the disconnect itself is already logged once, as a warning."""
        return not str(record.msg).startswith("Client is not connected")

    def _connect(self, client: mqtt.Client) -> None:
        cfg = self.cfg
        if self._mqtt5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = cfg.session_expiry_s
            client.connect_async(cfg.host, cfg.port, cfg.keepalive_s, clean_start=False, properties=props)
        else:
            client.connect_async(cfg.host, cfg.port, cfg.keepalive_s)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        try:
            if reason.is_failure:
                self.last_error = f"broker refused connection: {reason}"
                log.error("MQTT broker %s:%d refused the connection: %s", self.cfg.host, self.cfg.port, reason)
                return
            window = self.cfg.max_inflight
            receive_max = getattr(props, "ReceiveMaximum", None) if props is not None else None
            if receive_max:
                window = max(1, min(window, receive_max - RESERVED_INFLIGHT))
            with self._lock:
                self._window = window
            self._connected = True
            log.info("MQTT connected to %s:%d (session present: %s, window %d)",
                     self.cfg.host, self.cfg.port, getattr(flags, "session_present", "?"), window)
            self._publish_untracked(client, f"{self.base}/status", ONLINE.encode(), retain=True)
            result, mid = client.subscribe(f"{self.base}/cmd/+", qos=1)
            with self._lock:
                self._sub_mid = mid
            if result != MQTTErrorCode.MQTT_ERR_SUCCESS:
                log.error("subscribe failed: %s", mqtt.error_string(result))
        except Exception:
            log.exception("on_connect failed")

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[ReasonCode], props: Any) -> None:
        try:
            with self._lock:
                ours = mid == self._sub_mid
            if not ours:
                return
            if any(r.is_failure for r in reasons):
                self.last_error = f"subscription to commands refused: {reasons}"
                log.error("broker refused our subscription to %s/cmd/+: %s", self.base, reasons)
            # paho processes this SUBACK only after re-sending the unacknowledged messages that
            # followed CONNACK: new rows may go out now without overtaking old ones.
            self._ready.set()
            self._wake.set()
        except Exception:
            log.exception("on_subscribe failed")

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        try:
            self._ready.clear()
            was = self._connected
            self._connected = False
            if not self._stop.is_set() and was:
                self.last_error = f"disconnected: {reason}"
                log.warning("MQTT disconnected (%s); the outbox keeps everything, reconnecting", reason)
        except Exception:
            log.exception("on_disconnect failed")

    # ------------------------------------------------------------------ publishing

    def _publish_untracked(self, client: mqtt.Client, topic: str, payload: bytes, *,
                           retain: bool = False, props: Properties | None = None) -> None:
        """Status and replies: QoS 1, not from the outbox, PUBACK only bookkept."""
        info = client.publish(topic, payload, qos=1, retain=retain, properties=props)
        if info.rc in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            self._register(info.mid, None)
        else:
            log.error("publish to %s failed: %s", topic, mqtt.error_string(info.rc))

    def _register(self, mid: int, row_id: int | None) -> None:
        with self._lock:
            early = self._early.pop(mid, None)
            if early is None:
                self._inflight[mid] = row_id
            else:
                self._settle(row_id, early)
            if row_id is not None:
                self._cursor = max(self._cursor, row_id)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode, props: Any) -> None:
        try:
            with self._lock:
                if mid not in self._inflight:
                    self._early[mid] = reason
                    return
                self._settle(self._inflight.pop(mid), reason)
            self._wake.set()
        except Exception:
            log.exception("on_publish failed")

    def _settle(self, row_id: int | None, reason: ReasonCode) -> None:
        """A PUBACK for ``row_id`` (lock held)."""
        if row_id is None:
            return
        if reason.is_failure:
            # The broker refused it (e.g. not authorised): keep it unsent and try again later.
            self.last_error = f"broker refused outbox row {row_id}: {reason}"
            log.error("broker refused outbox row %d: %s; will retry", row_id, reason)
            self._rewind_to = row_id if self._rewind_to is None else min(self._rewind_to, row_id)
            return
        self._acked.append(row_id)
        self.acknowledged += 1
        self.last_ack_at = self.clock()

    def _flush_acks(self) -> None:
        with self._lock:
            ids, self._acked = self._acked, []
        if not ids:
            return
        try:
            self.store.outbox_mark_sent(ids)
        except Exception:
            with self._lock:
                self._acked = ids + self._acked
            raise

    def _drain_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll_interval_s)
            self._wake.clear()
            try:
                self._flush_acks()
                self._housekeeping()
                if self._ready.is_set():
                    self._publish_backlog()
            except Exception as exc:  # SQLite busy, disk full...: log, wait, try again
                self.last_error = f"drain: {exc}"
                log.exception("outbox drain failed; retrying")
                self._stop.wait(1.0)
        try:
            self._flush_acks()
        except Exception:
            log.exception("could not mark the last acknowledged rows sent (they will be sent again)")

    def _publish_backlog(self) -> None:
        """Publish unsent rows in id order until the window is full or the outbox is empty."""
        client = self._client
        while client is not None and self._ready.is_set() and not self._stop.is_set():
            with self._lock:
                if self._rewind_to is not None:
                    self._cursor, self._rewind_to = self._rewind_to - 1, None
                room = self._window - sum(1 for r in self._inflight.values() if r is not None)
                cursor = self._cursor
            if room <= 0:
                return  # a PUBACK wakes us
            rows = self.store.outbox_pending(limit=min(room, 500), after_id=cursor)
            if not rows:
                return
            sent: list[int] = []
            for row in rows:
                if not self._ready.is_set():
                    break
                try:
                    info = client.publish(f"{self.base}/{row.topic}", row.payload.encode("utf-8"),
                                          qos=row.qos, retain=row.retain)
                except ValueError as exc:  # an invalid topic can never be sent: say so, keep it
                    log.error("outbox row %d (%s) cannot be published: %s", row.id, row.topic, exc)
                    with self._lock:
                        self._cursor = max(self._cursor, row.id)
                    continue
                if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
                    log.warning("publish of outbox row %d failed: %s", row.id, mqtt.error_string(info.rc))
                    return
                self._register(info.mid, row.id)
                self.published += 1
                sent.append(row.id)
            if sent:
                self.store.outbox_note_attempt(sent)
            self._flush_acks()

    # ------------------------------------------------------------------ housekeeping

    def _housekeeping(self) -> None:
        now_mono = time.monotonic()
        if now_mono - self._last_housekeeping < HOUSEKEEPING_EVERY_S:
            return
        self._last_housekeeping = now_mono
        self.check_outbox_bound()
        if now_mono - self._last_prune >= PRUNE_EVERY_S:
            self._last_prune = now_mono
            keep = timedelta(days=self.cfg.outbox_keep_sent_days)
            pruned = self.store.prune_outbox(sent_before=self.clock() - keep)
            if pruned:
                log.info("pruned %d acknowledged outbox rows older than %s", pruned, keep)

    def check_outbox_bound(self) -> bool:
        """Raise one alarm event when the backlog crosses mqtt.outbox_max_rows/_max_age_days.

        Nothing is deleted: the bound only makes the problem loud. The alarm re-arms once the
        backlog is back under 90 % of both limits. Returns whether the alarm is raised.
        """
        cfg = self.cfg
        stats = self.store.outbox_stats()
        pending = int(stats["pending"])
        oldest = from_iso(stats["oldest_pending_at"])
        age = self.clock() - oldest if oldest else timedelta(0)
        max_age = timedelta(days=cfg.outbox_max_age_days)
        over = pending >= cfg.outbox_max_rows or age >= max_age
        if over and not self._outbox_alarm:
            self._outbox_alarm = True
            which = "outbox_full" if pending >= cfg.outbox_max_rows else "outbox_too_old"
            message = (f"outbox backlog {pending} messages, oldest {age.days} days "
                       f"(limits {cfg.outbox_max_rows} messages, {cfg.outbox_max_age_days} days); nothing is deleted")
            log.error("ALARM %s: %s", which, message)
            self.store.record_event("alarm", reason=which, message=message, data={
                "pending": pending, "oldest_pending_at": stats["oldest_pending_at"],
                "max_rows": cfg.outbox_max_rows, "max_age_days": cfg.outbox_max_age_days,
            })
            self._wake.set()
        elif self._outbox_alarm and pending < 0.9 * cfg.outbox_max_rows and age < 0.9 * max_age:
            self._outbox_alarm = False
            log.info("outbox backlog back under its limits (%d messages)", pending)
            self.store.record_event("alarm_cleared", reason="outbox_ok",
                                    message=f"outbox backlog back under its limits ({pending} messages)",
                                    data={"pending": pending})
        return self._outbox_alarm

    # ------------------------------------------------------------------ commands in

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            self._commands.put_nowait((message.topic, bytes(message.payload), message.properties))
        except queue.Full:
            log.error("command queue full: dropping a message on %s (the cloud gets no reply)", message.topic)
        except Exception:
            log.exception("on_message failed")

    def _command_loop(self) -> None:
        while True:
            item = self._commands.get()
            if item is None or self._stop.is_set():
                return
            topic, payload, props = item
            try:
                self.handle_command(topic, payload, props)
            except Exception:  # the thread outlives any command
                log.exception("command on %s failed unexpectedly", topic)

    def handle_command(self, topic: str, payload: bytes, props: Any = None) -> Reply:
        """Authenticate and carry out one command, answer it, log a rejection. Never raises for bad input."""
        name = topic.rsplit("/", 1)[-1]
        request_id: str | None = None
        session_id: int | None = None
        try:
            if name not in COMMANDS:
                raise Rejected("unknown_command", f"unknown command {name!r} (known: {', '.join(COMMANDS)})")
            if len(payload) > self.cfg.max_payload_bytes:
                raise Rejected("oversize", f"payload of {len(payload)} bytes exceeds {self.cfg.max_payload_bytes}")
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
                check_fresh(command.ts, self.clock(), self.cfg.max_clock_skew_s)
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
        self._send_reply(name, reply, props)
        return reply

    def _send_reply(self, name: str, reply: Reply, request_props: Any) -> None:
        client = self._client
        if client is None:
            return
        props = None
        correlation = getattr(request_props, "CorrelationData", None) if request_props is not None else None
        if self._mqtt5 and correlation:
            props = Properties(PacketTypes.PUBLISH)
            props.CorrelationData = correlation
        try:
            self._publish_untracked(client, f"{self.base}/reply/{name}", reply.model_dump_json().encode(), props=props)
        except Exception:
            log.exception("could not send the reply to %s %s", name, reply.id)

    def _log_rejection(self, name: str, request_id: str | None, reason: str, message: str) -> None:
        allowed, suppressed = self._rejects.allow()
        if not allowed:
            return
        data: dict[str, Any] = {"command": name, "request_id": request_id}
        if suppressed:
            data["suppressed"] = suppressed
        try:
            self.store.record_event("rejected", reason=reason, message=message[:300], data=data)
            self._wake.set()
        except Exception:
            log.exception("could not record the rejected %s command", name)

    # -- the commands themselves

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
        if paid_at > now + timedelta(seconds=self.cfg.max_clock_skew_s):
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


# ---------------------------------------------------------------------- standalone


def _no_lanes(lane: str, reason: str, by: str) -> None:
    raise RuntimeError("the standalone sync process drives no barriers")


def main(argv: list[str] | None = None) -> int:
    """``python -m gatekeeper.sync --config PATH``: only the sync loop, until SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m gatekeeper.sync", description=main.__doc__)
    parser.add_argument("--config", help="config file (default: GATEKEEPER_CONFIG, ./config.toml)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger(__name__ + ".paho").setLevel(logging.INFO)
    settings = load_settings(args.config)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with Store.from_settings(settings) as store:
        sync = CloudSync(settings, store, open_handler=_no_lanes)
        sync.start()
        try:
            while not stop.wait(1.0):
                pass
        finally:
            sync.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
