"""The broker seam: what the sync needs from an MQTT client, and what it hears back.

:class:`~gatekeeper.sync.paho_transport.PahoTransport` is the implementation the lot runs;
anything that keeps these promises can stand in for it:

* ``publish`` hands one QoS 1 message over and returns its message id at once; the
  broker's acknowledgement arrives later through :meth:`TransportListener.on_acked`
  (possibly before ``publish`` returned, from another thread).
* unacknowledged messages survive a reconnect and are sent again, in order, before the
  acknowledgement of a subscription made after that reconnect.
* received messages are acknowledged only by :meth:`Transport.ack` (manual acknowledgement).
"""

from __future__ import annotations

from typing import Protocol


class PublishError(Exception):
    """The client refused a message outright (not queued, nothing will be acknowledged)."""


class TransportListener(Protocol):
    """What the transport reports, from its own network thread. None of these may block."""

    def on_connected(self, *, session_present: object, receive_maximum: int | None) -> None: ...

    def on_connect_refused(self, reason: str) -> None:
        """The broker refused us: a CONNACK failure (bad credentials, not authorised), a TLS identity it or we
        do not accept, or it closed the connection before answering, again. The next try waits
        ``mqtt.refused_retry_s`` (half to all of it), not the reconnect backoff."""

    def on_connect_failed(self, reason: str) -> None:
        """A connection attempt failed below MQTT (no route, nobody listening, reset): ordinary backoff."""

    def on_disconnected(self, reason: str) -> None: ...

    def on_acked(self, mid: int, *, error: str | None) -> None:
        """The broker's PUBACK for message ``mid``; ``error`` when it refused the message."""

    def on_subscribed(self, mid: int, *, error: str | None) -> None: ...

    def on_message(self, topic: str, payload: bytes, *, correlation: bytes | None, mid: int, qos: int,
                   retain: bool = False) -> None:
        """A command (or, with Home Assistant's open buttons on, a button press; ``retain``: a retained copy). It is not acknowledged to the broker until :meth:`Transport.ack` is called with
        ``mid`` and ``qos``: a message never acked is delivered again after a reconnect."""


class Transport(Protocol):
    """An MQTT connection that reconnects on its own."""

    def connect(self, listener: TransportListener) -> None:
        """Start connecting in the background; keep reconnecting until :meth:`disconnect`."""

    def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False, correlation: bytes | None = None
    ) -> int:
        """Queue one message; its id. :class:`PublishError` when refused, ``ValueError`` for a bad topic."""

    def publish_and_wait(self, topic: str, payload: bytes, *, retain: bool, timeout: float) -> None:
        """Publish and wait up to ``timeout`` for it to leave (the last message before a disconnect)."""

    def ack(self, mid: int, qos: int) -> None:
        """Acknowledge a received message (PUBACK) once what it asked for is durable."""

    def subscribe(self, topic: str, *, qos: int = 1) -> int:
        """Subscribe; the acknowledgement comes through :meth:`TransportListener.on_subscribed`."""

    def disconnect(self) -> None:
        """Disconnect cleanly and stop the network thread."""
