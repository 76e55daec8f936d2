"""Sending signed commands to lots, and finding their replies by command id.

A command is written to the store first (id, lot, fields), then signed with the lot's secret
(scheme v2, :func:`gatekeeper.sync.signing.sign`) and published QoS 1 on ``{prefix}/{lot}/cmd/{name}``
with the id as MQTT 5 Correlation Data. The reply comes back on ``reply/{name}`` through the consumer
group (whichever consumer gets it matches it to the stored command by id), so the sender only reads
the store. A command without a reply is sent again **with the same id** (a fresh ``ts`` and
signature): the edge carries out an id at most once and answers a repeat with the stored reply.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any, Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from examples.cloud_consumer.consumer import tcp_no_delay
from examples.cloud_consumer.store import CommandRecord, ConsumerStore
from gatekeeper.sync.signing import sign

log = logging.getLogger(__name__)

#: The lot's HMAC secret (docs/mqtt.md, "Signing"): one per lot.
SecretFor = Callable[[str], str]


class CommandSender:
    """Signs, records and publishes commands; replies are found in the store."""

    def __init__(self, store: ConsumerStore, *, host: str, port: int, client_id: str, secret_for: SecretFor,
                 prefix: str = "gatekeeper", username: str | None = None, password: str | None = None,
                 ca_file: str | None = None) -> None:
        self.store = store
        self.prefix = prefix.strip("/")
        self.secret_for = secret_for
        self._connected = threading.Event()
        self.sent = 0
        self.resent = 0
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if username:
            self._client.username_pw_set(username, password)
        if ca_file:
            self._client.tls_set(ca_certs=ca_file)
        self._client.reconnect_delay_set(0.1, 2.0)  # type: ignore[arg-type]
        self._client.on_socket_open = tcp_no_delay
        self._client.on_connect = lambda c, u, f, reason, p: (None if reason.is_failure else self._connected.set())
        self._client.on_disconnect = lambda *a: self._connected.clear()
        self._host, self._port = host, port

    def start(self, timeout: float = 10.0) -> "CommandSender":
        self._client.connect_async(self._host, self._port, 30)
        self._client.loop_start()
        if not self._connected.wait(timeout):
            log.warning("command sender not connected yet; commands are queued until it is")
        return self

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> "CommandSender":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, lot: str, name: str, fields: dict[str, Any], *, command_id: str | None = None) -> str:
        """Record, sign and publish one command; its id."""
        command_id = command_id or f"{name[:4]}-{uuid.uuid4().hex[:20]}"
        self.store.record_command(command_id, lot=lot, name=name, fields=fields)
        self._publish(lot, name, command_id, fields)
        self.sent += 1
        return command_id

    def resend(self, command_id: str) -> None:
        """Send a recorded command again: the same id, a fresh ``ts`` and signature."""
        record = self.store.command(command_id)
        if record is None:
            raise KeyError(f"no command {command_id!r} was sent")
        self._publish(record.lot, record.name, record.id, record.fields)
        self.resent += 1

    def resend_unanswered(self, *, older_than_s: float) -> int:
        """:meth:`resend` every command without a reply whose last attempt is older than ``older_than_s``."""
        due = self.store.unanswered(older_than_s=older_than_s)
        for record in due:
            self._publish(record.lot, record.name, record.id, record.fields)
            self.resent += 1
        return len(due)

    def wait_reply(self, command_id: str, *, timeout: float) -> CommandRecord | None:
        """The command with its reply once one is stored, or None after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            record = self.store.command(command_id)
            if record is not None and record.reply_at is not None:
                return record
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.01)  # the reply is written by a consumer (maybe another process): poll the store

    def _publish(self, lot: str, name: str, command_id: str, fields: dict[str, Any]) -> None:
        body = {**fields, "id": command_id, "ts": datetime.now(UTC).isoformat(timespec="milliseconds")}
        signed = sign(body, self.secret_for(lot), lot=lot, command=name)
        props = Properties(PacketTypes.PUBLISH)
        props.CorrelationData = command_id.encode()
        self.store.note_attempt(command_id)
        # Not connected: paho keeps the QoS 1 message and sends it after the reconnect.
        self._client.publish(f"{self.prefix}/{lot}/cmd/{name}", json.dumps(signed).encode(), qos=1,
                             properties=props)
