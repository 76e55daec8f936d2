"""Cloud sync over MQTT: the outbox goes up in order, verified commands come down.

Three threads, none of which a lane ever waits for:

* paho's network thread (``loop_start``): connects, reconnects with backoff, and only
  hands things over: PUBACKs become row ids to mark sent, messages go onto a queue.
* the drain thread: publishes unsent outbox rows QoS 1 strictly in id order with at most
  ``window`` rows awaiting a PUBACK, and marks rows sent (in batches) only once their
  PUBACK arrived. It wakes on :meth:`CloudSync.wake`, on every PUBACK, and once a second.
* the command thread (:class:`~gatekeeper.sync.inbox.CommandInbox`): parses, authenticates and
  carries out cloud commands, one at a time, in arrival order. The command, its effect and its
  reply (an outbox row) commit in one transaction; only then is the command acknowledged to the
  broker (manual PUBACK). A crash before that commit leaves the command unacknowledged and the
  broker delivers it again.

Ordering across a reconnect: paho keeps every unacknowledged QoS 1 message and sends it
again, in order, right after the CONNACK; the drain thread publishes nothing new until
our SUBACK arrives (which paho processes only after that re-send), so rows still reach the
broker in id order. After a restart the drain starts again at the first unsent row. A row
may therefore arrive twice (its PUBACK was lost), always with the same id.

:class:`CloudSync` only coordinates: the broker is behind a
:class:`~gatekeeper.sync.transport.Transport` (paho in :mod:`~gatekeeper.sync.paho_transport`),
the rows go out through :class:`~gatekeeper.sync.outbox.OutboxPump`, commands are queued and
acknowledged by :class:`~gatekeeper.sync.inbox.CommandInbox` and carried out by
:class:`~gatekeeper.sync.commands.CommandHandler`.
"""

from __future__ import annotations

import argparse
import logging
import re
import signal
import socket
import sys
import threading
from datetime import datetime
from typing import Any, Callable

from gatekeeper.config import Settings, load_settings, read_secret
from gatekeeper.messages import OFFLINE, ONLINE, STATUS_TOPIC, Reply
from gatekeeper.store import Store, to_iso, utcnow
from gatekeeper.sync.commands import REJECT_EVENTS_PER_MINUTE, CommandHandler, OpenHandler
from gatekeeper.sync.homeassistant import HomeAssistantBridge, LaneHealth
from gatekeeper.sync.inbox import CommandInbox
from gatekeeper.sync.outbox import OutboxPump, OutboxWatch
from gatekeeper.sync.paho_transport import PAHO_LOGGER, PahoTransport
from gatekeeper.sync.refusals import Refusals, identity_warnings, refused_wait
from gatekeeper.sync.subscriptions import Subscriptions
from gatekeeper.sync.transport import Transport
from gatekeeper.sync.uploads import PhotoUploader

log = logging.getLogger(__name__)

__all__ = ["REJECT_EVENTS_PER_MINUTE", "CloudSync", "default_client_id", "main"]

#: Broker receive-maximum slots left for replies and the status message.
RESERVED_INFLIGHT = 4

TransportFactory = Callable[["CloudSync"], Transport]


def default_client_id(lot_id: str) -> str:
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:40] or "host"
    return f"gatekeeper-{lot_id}-{host}"


def paho_transport(sync: "CloudSync") -> Transport:
    """The transport the lot runs: paho, with a retained ``offline`` will."""
    return PahoTransport(
        sync.cfg,
        client_id=sync.client_id,
        will_topic=sync.topic(STATUS_TOPIC),
        will_payload=OFFLINE.encode(),
        password=sync._password,
    )


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
        transport_factory: TransportFactory = paho_transport,
        lane_health: LaneHealth | None = None,
    ) -> None:
        self.settings = settings
        self.cfg = settings.mqtt
        self.store = store
        self.poll_interval_s = poll_interval_s
        self.clock = clock
        self.base = f"{self.cfg.prefix.strip('/')}/{settings.site.lot_id}"
        self.client_id = self.cfg.client_id or default_client_id(settings.site.lot_id)
        self._secret = read_secret(self.cfg.hmac_secret, self.cfg.hmac_secret_file, "mqtt.hmac_secret")
        self._password = read_secret(self.cfg.password, self.cfg.password_file, "mqtt.password")
        if uploader is None and settings.cloud.enabled:
            uploader = PhotoUploader(settings, store, clock=clock)
        self.uploader = uploader
        self._transport_factory = transport_factory

        self._wake = threading.Event()
        self._stop = threading.Event()
        self._ready = threading.Event()  # connected, subscribed, the transport's re-send done
        self._connected = False
        self.refusals = Refusals(clock=clock)
        self.subscriptions = Subscriptions(refusals=self.refusals, retry_wait=self._refused_wait)
        self._last_failure: str | None = None
        self._threads: list[threading.Thread] = []
        self._transport: Transport | None = None
        self.pump = OutboxPump(store, base=self.base, window=self.cfg.max_inflight, clock=clock,
                               on_error=self._note_error, refusals=self.refusals, retry_wait=self._refused_wait)
        self.watch = OutboxWatch(store, self.cfg, clock=clock, wake=self._wake.set)
        self.commands = CommandHandler(settings, store, secret=self._secret, clock=clock, open_handler=open_handler,
                                       on_config_change=on_config_change, wake=self._wake.set)
        self.last_error: str | None = None
        self.ha: HomeAssistantBridge | None = None
        if settings.homeassistant.enabled:
            self.ha = HomeAssistantBridge(settings, store, base=self.base, lane_health=lane_health,
                                          open_handler=open_handler, clock=clock)
            self.pump.on_published = self.ha.on_outbox_row
        self.inbox = CommandInbox(commands=self.commands, ha=self.ha, base=self.base, transport=lambda: self._transport,
                                  publish=self.pump.publish_untracked, wake=self._wake.set)

    def topic(self, relative: str) -> str:
        return f"{self.base}/{relative}"

    def _note_error(self, error: str) -> None:
        self.last_error = error

    def _refused_wait(self) -> float:
        return refused_wait(self.cfg.refused_retry_s)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "CloudSync":
        if self._transport is not None:
            return self
        if not self.cfg.enabled:
            log.info("mqtt.enabled is false: events stay in the outbox until sync is enabled")
            if self.uploader is not None:
                self.uploader.start()
            return self
        if not self._secret:
            log.warning("mqtt.hmac_secret is not configured: every cloud command (payment, open, lists, "
                        "reservation, tariff) will be rejected")
        for warning in identity_warnings(self.cfg, self.settings.site.lot_id):
            log.warning("%s", warning)
        self._transport = self._transport_factory(self)
        self._threads = [
            threading.Thread(target=self._drain_loop, name="mqtt-drain", daemon=True),
            threading.Thread(target=self.inbox.run, name="mqtt-commands", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        self._transport.connect(self)
        if self.uploader is not None:
            self.uploader.start()
        log.info("sync started: %s:%d as %s, topics under %s/", self.cfg.host, self.cfg.port, self.client_id, self.base)
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Say offline, stop the threads; unacknowledged rows stay in the outbox."""
        self._stop.set()
        self._wake.set()
        self.inbox.stop()
        transport, self._transport = self._transport, None
        if transport is not None and self._connected:
            try:
                transport.publish_and_wait(self.topic(STATUS_TOPIC), OFFLINE.encode(), retain=True,
                                           timeout=min(timeout, 2.0))
            except (RuntimeError, ValueError) as exc:
                log.debug("offline status not sent: %s", exc)
        for thread in self._threads:
            thread.join(timeout=timeout)
        self._threads = []
        if transport is not None:
            transport.disconnect()
        self.pump.flush_acks()
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

    @property
    def refusal(self) -> str | None:
        """What the broker refuses us right now (connection, subscription, an outbox row), or None."""
        return self.refusals.summary()

    @property
    def link(self) -> str:
        """``connected``, ``refused`` (the broker said no to our connection) or ``offline``."""
        if self._connected:
            return "connected"
        return "refused" if self.refusals.get("connect") is not None else "offline"

    def check_outbox_bound(self) -> bool:
        """Raise one alarm event when the backlog crosses its bounds (see :meth:`OutboxWatch.check_bound`)."""
        return self.watch.check_bound()

    def health(self) -> dict[str, Any]:
        stats = self.store.outbox_stats()
        report = {
            "connected": self._connected,
            "link": self.link,
            "refused": self.refusals.health(),
            "backlog": stats["pending"],
            "oldest_pending_at": stats["oldest_pending_at"],
            "inflight": self.pump.inflight_rows(),
            "published": self.pump.published,
            "acknowledged": self.pump.acknowledged,
            "last_ack_at": to_iso(self.pump.last_ack_at) if self.pump.last_ack_at else None,
            "outbox_alarm": self.watch.alarm,
            "commands_ok": self.commands.commands_ok,
            "commands_rejected": self.commands.commands_rejected,
            "rejections_total": self.commands.rejections_total,
            "storage_fault": self.store.storage_fault,
            "last_error": self.last_error,
        }
        if self.uploader is not None:
            report["uploads"] = self.uploader.health()
        return report

    # ------------------------------------------------------------------ TransportListener

    def on_connected(self, *, session_present: object, receive_maximum: int | None) -> None:
        window = self.cfg.max_inflight
        if receive_maximum:
            window = max(1, min(window, receive_maximum - RESERVED_INFLIGHT))
        self.pump.set_window(window)
        self._connected = True
        log.info("MQTT connected to %s:%d (session present: %s, window %d)",
                 self.cfg.host, self.cfg.port, session_present, window)
        transport = self._transport
        if transport is None:
            return
        self.refusals.cleared("connect")
        self._last_failure = None
        self.pump.publish_untracked(transport, self.topic(STATUS_TOPIC), ONLINE.encode(), retain=True)
        self.subscriptions.clear_retries()
        self.subscriptions.subscribe(transport, self.topic("cmd/+"), qos=1,
                                     purpose="cloud commands do not reach this lot")
        if self.ha is not None:
            mid = self.ha.on_connected(transport, lambda topic, payload: self.pump.publish_untracked(
                transport, topic, payload, retain=True))
            if mid is not None:
                self.subscriptions.expect(mid, self.ha.open_filter(), qos=0,
                                          purpose="Home Assistant's open buttons do nothing")

    def on_connect_refused(self, reason: str) -> None:
        self.last_error = f"broker refused the connection: {reason}"
        user = f" as {self.cfg.username}" if self.cfg.username else ""
        retry = self.cfg.refused_retry_s
        self.refusals.refused("connect", reason, detail=self.cfg.url + user,
                              hint=f"trying again in {retry / 2:g}-{retry:g} s (mqtt.refused_retry_s); check "
                              "mqtt.username and the password, or the client certificate (docs/security.md)")

    def on_connect_failed(self, reason: str) -> None:
        self.last_error = reason
        if reason != self._last_failure:  # once per kind of failure, not once per attempt
            self._last_failure = reason
            log.warning("MQTT %s; the outbox keeps everything, retrying", reason)

    def on_subscribed(self, mid: int, *, error: str | None) -> None:
        topic = self.subscriptions.on_suback(mid, error)
        if topic is not None and error is not None:
            self.last_error = f"subscription to {topic} refused: {error}"
        if topic != self.topic("cmd/+"):
            return
        # The transport delivers this SUBACK only after re-sending the unacknowledged messages that
        # followed CONNACK: new rows may go out now without overtaking old ones.
        self._ready.set()
        self._wake.set()

    def on_disconnected(self, reason: str) -> None:
        self._ready.clear()
        was = self._connected
        self._connected = False
        if not self._stop.is_set() and was:
            self.last_error = f"disconnected: {reason}"
            log.warning("MQTT disconnected (%s); the outbox keeps everything, reconnecting", reason)

    def on_acked(self, mid: int, *, error: str | None) -> None:
        if self.pump.on_acked(mid, error):
            self._wake.set()

    def on_message(self, topic: str, payload: bytes, *, correlation: bytes | None, mid: int = 0, qos: int = 0,
                   retain: bool = False) -> None:
        self.inbox.put(topic, payload, correlation=correlation, mid=mid, qos=qos, retain=retain)

    # ------------------------------------------------------------------ threads

    def _drain_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll_interval_s)
            self._wake.clear()
            try:
                self.pump.flush_acks()
                self.watch.housekeeping()
                self._storage_and_rejections()
                if self.refusals.record_alarms(self.store):
                    self._wake.set()
                transport = self._transport
                if self._ready.is_set() and transport is not None:
                    self.subscriptions.retry_due(transport)
                    self.pump.publish_backlog(
                        transport, go_on=lambda: self._ready.is_set() and not self._stop.is_set()
                    )
                    if self.ha is not None:
                        self.ha.tick(transport)
            except Exception as exc:  # SQLite busy, disk full...: log, wait, try again
                self.last_error = f"drain: {exc}"
                log.exception("outbox drain failed; retrying")
                self._stop.wait(1.0)
        try:
            self.pump.flush_acks()
        except Exception:
            log.exception("could not mark the last acknowledged rows sent (they will be sent again)")

    def _storage_and_rejections(self) -> None:
        """During a storage fault, probe the disk (recovery records the alarm); summarise refused commands."""
        if self.store.storage_fault is not None and self.store.check_storage():
            self._wake.set()
        try:
            self.commands.summarise_rejections()
        except Exception as exc:  # a full disk: the counts stay pending and go in the next summary
            log.error("could not record the rejected-commands summary: %s", exc)

    def handle_command(self, topic: str, payload: bytes, correlation: bytes | None = None) -> Reply:
        """Carry out one command now (see :meth:`CommandInbox.handle`)."""
        return self.inbox.handle(topic, payload, correlation)


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
    logging.getLogger(PAHO_LOGGER).setLevel(logging.INFO)
    settings = load_settings(args.config)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with Store.from_settings(settings) as store:
        if store.created:
            log.warning("NEW LOT %r: created an empty database at %s", settings.site.lot_id, store.path)
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
