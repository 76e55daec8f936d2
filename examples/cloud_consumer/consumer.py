"""One consumer process: an MQTT 5 persistent session that stores what the lots publish, then acks it.

* **Persistent session**: ``clean_start=False`` with a session expiry, a fixed client id per consumer
  (``{group}-p{i}`` or ``{group}-{n}``): while it is away (restart, deploy) the broker queues for it.
* **Manual acknowledgement**: a message is PUBACKed only after the batch it came in is committed to
  the store (one transaction per batch). A crash before that commit leaves it unacknowledged and the
  broker delivers it again; the store's keys make the second copy a counted duplicate.
* **Subscriptions on every connect**: ``shared`` (``$share/{group}/...``, the broker spreads the lots'
  messages over the group) or ``partitioned`` (this consumer's own lots, non-shared). See topics.py
  and docs/fleet.md for which one survives a restart of which broker.
* Acks of messages received on an earlier connection are never sent on a later one: the broker
  re-sends those (same packet id) and the re-sent copy is acked instead, so an old packet id can
  never acknowledge a different, newer message.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from examples.cloud_consumer.store import BatchResult, Received
from examples.cloud_consumer.topics import Malformed, Mode, parse, topic_filters

log = logging.getLogger(__name__)

#: Filters per SUBSCRIBE packet (a partitioned consumer of 500 lots has 2,500 of them).
SUBSCRIBE_CHUNK = 200


class BatchStore(Protocol):
    """Where a batch goes before it is acknowledged (store.ConsumerStore, or a cloud's own database)."""

    def save_batch(self, batch: Sequence[Received]) -> BatchResult: ...

    def note_subscribed(self, client_id: str, *, pid: int, filters: int) -> None: ...


@dataclass(frozen=True)
class ConsumerConfig:
    host: str
    port: int
    client_id: str
    mode: Mode = "partitioned"
    group: str = "cloud"
    prefix: str = "gatekeeper"
    lots: tuple[str, ...] = ()  # partitioned: the lots this consumer owns
    session_expiry_s: int = 7 * 86_400
    receive_maximum: int = 1000  # messages in flight to us (the broker's max_inflight_messages caps it too)
    batch_max: int = 500
    keepalive_s: int = 30
    reconnect_min_s: float = 0.1
    reconnect_max_s: float = 2.0
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None


@dataclass(frozen=True)
class _Delivery:
    topic: str
    payload: bytes
    retained: bool
    mid: int
    qos: int
    generation: int
    received_at: float


_STOP = object()
_SUBSCRIBED = object()


class Consumer:
    """``start()``, then messages flow into the store until ``close()``."""

    def __init__(self, cfg: ConsumerConfig, store: BatchStore) -> None:
        self.cfg = cfg
        self.store = store
        self.filters = topic_filters(mode=cfg.mode, prefix=cfg.prefix, group=cfg.group, lots=cfg.lots)
        if not self.filters:
            raise ValueError("a partitioned consumer needs at least one lot")
        self._queue: queue.Queue[Any] = queue.Queue()
        self._ack_lock = threading.Lock()
        self._generation = 0
        self._pending_subacks: set[int] = set()
        self._closing = threading.Event()
        self.subscribed = threading.Event()
        self.deliveries = 0
        self.acked = 0
        self.store_errors = 0
        self._writer = threading.Thread(target=self._write_loop, name=f"consumer-{cfg.client_id}", daemon=True)
        self._client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        cfg = self.cfg
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cfg.client_id, protocol=mqtt.MQTTv5,
                             manual_ack=True)
        if cfg.username:
            client.username_pw_set(cfg.username, cfg.password)
        if cfg.ca_file:
            client.tls_set(ca_certs=cfg.ca_file)
        client.reconnect_delay_set(cfg.reconnect_min_s, cfg.reconnect_max_s)  # type: ignore[arg-type]
        client.on_socket_open = tcp_no_delay
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> "Consumer":
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.cfg.session_expiry_s
        props.ReceiveMaximum = self.cfg.receive_maximum
        self._writer.start()
        self._client.connect_async(self.cfg.host, self.cfg.port, self.cfg.keepalive_s, clean_start=False,
                                   properties=props)
        self._client.loop_start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Store and acknowledge what has arrived, then disconnect (the session stays on the broker)."""
        self._closing.set()  # a store that keeps failing is not retried any more: nothing more is acked
        if self._writer.is_alive():
            self._queue.put(_STOP)
            self._writer.join(timeout)
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> "Consumer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- paho callbacks (network thread: hand over, never block) ----------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.error("broker refused consumer %s: %s", self.cfg.client_id, reason)
            return
        with self._ack_lock:
            self._generation += 1
        self.subscribed.clear()
        log.info("consumer %s connected (session present: %s), subscribing to %d filters",
                 self.cfg.client_id, flags.session_present, len(self.filters))
        # Retain handling 1: a retained copy only for a new subscription (not again on every reconnect).
        options = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
        with self._ack_lock:
            self._pending_subacks.clear()
            for start in range(0, len(self.filters), SUBSCRIBE_CHUNK):
                chunk = [(f, options) for f in self.filters[start:start + SUBSCRIBE_CHUNK]]
                result, mid = client.subscribe(chunk)
                if result == mqtt.MQTT_ERR_SUCCESS and mid is not None:
                    self._pending_subacks.add(mid)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[Any], props: Any) -> None:
        refused = [str(r) for r in reasons if r.is_failure]
        if refused:
            log.error("consumer %s: %d subscriptions refused (%s)", self.cfg.client_id, len(refused), refused[0])
        with self._ack_lock:
            self._pending_subacks.discard(mid)
            done = not self._pending_subacks
        if done:
            self._queue.put(_SUBSCRIBED)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if not self._closing.is_set():
            log.warning("consumer %s disconnected (%s); reconnecting", self.cfg.client_id, reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._queue.put(_Delivery(message.topic, bytes(message.payload), bool(message.retain), message.mid,
                                  message.qos, self._generation, time.time()))

    # -- the writer thread ------------------------------------------------------------------

    def _write_loop(self) -> None:
        stopping = False
        while not stopping:
            try:
                first = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            batch: list[_Delivery] = []
            for item in self._more(first):
                if item is _STOP:
                    stopping = True
                elif item is _SUBSCRIBED:
                    self._note_subscribed()
                else:
                    batch.append(item)
            if batch and not self._save(batch):
                return  # closing while the store fails: nothing acked, the broker delivers it again

    def _more(self, first: Any) -> list[Any]:
        items = [first]
        while len(items) < self.cfg.batch_max:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return items

    def _save(self, batch: list[_Delivery]) -> bool:
        received = [_parse(d, self.cfg.prefix) for d in batch]
        delay = 0.1
        while True:
            try:
                self.store.save_batch(received)
                break
            except (sqlite3.Error, OSError) as exc:  # a busy or full disk: retry, never ack unstored
                self.store_errors += 1
                log.error("consumer %s could not store %d messages (%s); retrying", self.cfg.client_id,
                          len(batch), exc)
                if self._closing.wait(delay):
                    return False
                delay = min(delay * 2, 5.0)
        self.deliveries += len(batch)
        with self._ack_lock:
            generation = self._generation
            for d in batch:
                if d.generation == generation and d.qos > 0:
                    self._client.ack(d.mid, d.qos)
                    self.acked += 1
        return True

    def _note_subscribed(self) -> None:
        try:
            self.store.note_subscribed(self.cfg.client_id, pid=os.getpid(), filters=len(self.filters))
        except (sqlite3.Error, OSError) as exc:
            log.warning("could not note the subscription: %s", exc)
        self.subscribed.set()
        log.info("consumer %s subscribed", self.cfg.client_id)


def _parse(d: _Delivery, prefix: str) -> Received:
    try:
        message = parse(d.topic, d.payload, prefix=prefix)
    except Malformed as exc:
        return Received(d.topic, d.payload, d.retained, d.received_at, error=str(exc))
    return Received(d.topic, d.payload, d.retained, d.received_at, message=message)


def tcp_no_delay(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        pass
