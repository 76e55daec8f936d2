"""The :class:`~gatekeeper.sync.transport.Transport` the lot runs: paho-mqtt 2.x.

MQTT 5 with a persistent session (``clean_start=False``, session expiry) or 3.1.1 with
``clean_session=False``; a retained ``offline`` will on the status topic; paho's own
inflight and queue limits are off, because the outbox pump keeps its own window and paho
must never hold a message back (a later publish could overtake it).

Received commands are acknowledged by hand (``manual_ack``): :meth:`PahoTransport.ack` once
the command, its effect and its reply are committed. Reconnects wait a random time up to a
capped exponential bound (full jitter, so a fleet of lots does not come back in lockstep); the
wait ends early when the route to the broker comes back after being gone. The socket has
TCP_NODELAY: a reply is one small packet, Nagle's algorithm would hold it for the last ACK.
"""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
from typing import Any, Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, _ConnectionState
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gatekeeper.config import MqttConfig
from gatekeeper.sync.transport import PublishError, TransportListener

log = logging.getLogger(__name__)

#: The logger paho writes to.
PAHO_LOGGER = "gatekeeper.sync.paho"


class Backoff:
    """Full-jitter exponential backoff: wait ``uniform(0, min(cap, base * 2**n))`` before attempt n+1."""

    def __init__(self, *, base: float, cap: float, rng: Callable[[], float] = random.random) -> None:
        self.base = base
        self.cap = max(cap, base)
        self._rng = rng
        self.attempt = 0

    def next(self) -> float:
        bound = min(self.cap, self.base * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return self._rng() * bound

    def reset(self) -> None:
        self.attempt = 0


def route_up(host: str, port: int) -> bool:
    """Whether the kernel has a route to the broker (a UDP connect sends nothing)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except OSError:
        return False
    for family, kind, proto, _, address in infos:
        try:
            with socket.socket(family, kind, proto) as probe:
                probe.connect(address)
                return True
        except OSError:
            continue
    return False


class _Client(mqtt.Client):
    """paho's client with our reconnect wait (paho's own doubles without jitter)."""

    backoff: Backoff
    kick: threading.Event
    broker: tuple[str, int]

    def _reconnect_wait(self) -> None:
        delay = self.backoff.next()
        deadline = time.monotonic() + delay
        net_down = not route_up(*self.broker)
        next_route_check = time.monotonic() + 1.0
        while (self._state not in (_ConnectionState.MQTT_CS_DISCONNECTING,
                                   _ConnectionState.MQTT_CS_DISCONNECTED)
               and not self._thread_terminate):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.kick.wait(min(remaining, 0.25)):
                break
            if net_down and time.monotonic() >= next_route_check:
                next_route_check = time.monotonic() + 1.0
                if route_up(*self.broker):
                    log.info("network route to the broker is back: reconnecting now")
                    break
        self.kick.clear()

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        rc = super().loop_read(max_packets)
        _quick_ack(self._sock)
        return rc


def _quick_ack(sock: Any) -> None:
    """Linux: ACK what was just read at once instead of up to 40 ms later. The broker's Nagle (stock
    mosquitto has ``set_tcp_nodelay false``) holds its next packet to us, e.g. a command, until that
    ACK; the kernel drops back to delayed ACKs on its own, so it is set again after every read."""
    if sock is None or not _QUICKACK:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
    except (OSError, AttributeError):
        pass


_QUICKACK = getattr(socket, "TCP_QUICKACK", 0)


def _no_delay(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError) as exc:  # a websocket or proxy wrapper: not worth failing over
        log.debug("TCP_NODELAY not set: %s", exc)


class PahoTransport:
    """One paho client; its callbacks are passed on to a :class:`TransportListener`."""

    def __init__(
        self, cfg: MqttConfig, *, client_id: str, will_topic: str, will_payload: bytes, password: str | None
    ) -> None:
        self.cfg = cfg
        self.mqtt5 = cfg.protocol == "5"
        self._listener: TransportListener | None = None
        self.backoff = Backoff(base=cfg.reconnect_min_s, cap=cfg.reconnect_max_s)
        self._kick = threading.Event()
        self._client = self._make_client(client_id, will_topic, will_payload, password)

    def _make_client(self, client_id: str, will_topic: str, will_payload: bytes, password: str | None) -> mqtt.Client:
        cfg = self.cfg
        client = _Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5 if self.mqtt5 else mqtt.MQTTv311,
            clean_session=None if self.mqtt5 else False,
            manual_ack=True,
        )
        client.backoff = self.backoff
        client.kick = self._kick
        client.broker = (cfg.host, cfg.port)
        client.on_socket_open = _no_delay
        paho_log = logging.getLogger(PAHO_LOGGER)
        paho_log.addFilter(_quiet_shutdown)
        client.enable_logger(paho_log)
        if cfg.username:
            client.username_pw_set(cfg.username, password)
        if cfg.tls:
            client.tls_set(
                ca_certs=str(cfg.ca_file) if cfg.ca_file else None,
                certfile=str(cfg.cert_file) if cfg.cert_file else None,
                keyfile=str(cfg.key_file) if cfg.key_file else None,
            )
        client.will_set(will_topic, will_payload, qos=1, retain=True)
        client.reconnect_delay_set(cfg.reconnect_min_s, cfg.reconnect_max_s)  # type: ignore[arg-type]
        client.max_inflight_messages_set(0)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    # -- Transport --------------------------------------------------------------------

    def connect(self, listener: TransportListener) -> None:
        self._listener = listener
        cfg = self.cfg
        if self.mqtt5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = cfg.session_expiry_s
            self._client.connect_async(cfg.host, cfg.port, cfg.keepalive_s, clean_start=False, properties=props)
        else:
            self._client.connect_async(cfg.host, cfg.port, cfg.keepalive_s)
        self._client.loop_start()

    def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False, correlation: bytes | None = None
    ) -> int:
        props = None
        if self.mqtt5 and correlation:
            props = Properties(PacketTypes.PUBLISH)
            props.CorrelationData = correlation
        info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        # NO_CONN: paho keeps the QoS 1 message and sends it after the reconnect.
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise PublishError(mqtt.error_string(info.rc))
        return info.mid

    def publish_and_wait(self, topic: str, payload: bytes, *, retain: bool, timeout: float) -> None:
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(timeout=timeout)

    def ack(self, mid: int, qos: int) -> None:
        if qos > 0:
            self._client.ack(mid, qos)

    def reconnect_now(self) -> None:
        """End a reconnect wait now (e.g. the network is known to be back)."""
        self._kick.set()

    def subscribe(self, topic: str, *, qos: int = 1) -> int:
        result, mid = self._client.subscribe(topic, qos=qos)
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS:
            log.error("subscribe failed: %s", mqtt.error_string(result))
        return mid

    def disconnect(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    # -- paho callbacks (paho's network thread) ------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        try:
            assert self._listener is not None
            if reason.is_failure:
                self._listener.on_connect_refused(str(reason))
                return
            self.backoff.reset()
            receive_max = getattr(props, "ReceiveMaximum", None) if props is not None else None
            self._listener.on_connected(
                session_present=getattr(flags, "session_present", "?"), receive_maximum=receive_max
            )
        except Exception:
            log.exception("on_connect failed")

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[ReasonCode], props: Any) -> None:
        try:
            assert self._listener is not None
            error = f"{reasons}" if any(r.is_failure for r in reasons) else None
            self._listener.on_subscribed(mid, error=error)
        except Exception:
            log.exception("on_subscribe failed")

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        try:
            assert self._listener is not None
            self._listener.on_disconnected(str(reason))
        except Exception:
            log.exception("on_disconnect failed")

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode, props: Any) -> None:
        try:
            assert self._listener is not None
            self._listener.on_acked(mid, error=str(reason) if reason.is_failure else None)
        except Exception:
            log.exception("on_publish failed")

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            assert self._listener is not None
            props = message.properties
            correlation = getattr(props, "CorrelationData", None) if props is not None else None
            self._listener.on_message(message.topic, bytes(message.payload), correlation=correlation,
                                      mid=message.mid, qos=message.qos, retain=bool(message.retain))
        except Exception:
            log.exception("on_message failed")


def _quiet_shutdown(record: logging.LogRecord) -> bool:
    """paho 2.2 logs an ERROR for every loop pass without a socket (after our disconnect(), between
    reconnect attempts); the disconnect itself is already logged once, as a warning."""
    return not str(record.msg).startswith("Client is not connected")
