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

When the broker refuses us (a CONNACK failure such as "Not authorized", a TLS identity that one
side does not accept, or the connection closed before any CONNACK, twice in a row) the listener
hears :meth:`~gatekeeper.sync.transport.TransportListener.on_connect_refused` and the next attempt
waits :func:`~gatekeeper.sync.refusals.refused_wait` instead of the backoff: credentials do not
fix themselves within seconds, and a fleet of refused lots must not hammer the broker.
"""

from __future__ import annotations

import logging
import random
import socket
import ssl
import threading
import time
from typing import Any, Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, _ConnectionState
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gatekeeper.config import ConfigError, MqttConfig
from gatekeeper.sync.refusals import refused_wait
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


def configure_identity(client: mqtt.Client, cfg: MqttConfig, password: str | None) -> None:
    """The lot's broker identity on a paho client: user name and password, TLS with the CA and the client
    certificate. Unreadable or mismatched files are a :class:`ConfigError` naming the key."""
    if cfg.username:
        client.username_pw_set(cfg.username, password)
    if not cfg.tls:
        return
    try:
        client.tls_set(
            ca_certs=str(cfg.ca_file) if cfg.ca_file else None,
            certfile=str(cfg.cert_file) if cfg.cert_file else None,
            keyfile=str(cfg.key_file) if cfg.key_file else None,
        )
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        keys = "mqtt.ca_file" if not cfg.cert_file else "mqtt.ca_file, mqtt.cert_file or mqtt.key_file"
        raise ConfigError(f"{keys}: cannot use for TLS: {describe_tls_file_error(exc)} "
                          f"(ca_file={cfg.ca_file}, cert_file={cfg.cert_file}, key_file={cfg.key_file})") from None


def describe_tls_file_error(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or str(exc)
        if reason == "KEY_VALUES_MISMATCH":
            return "the private key does not belong to the certificate"
        return f"not a usable PEM file ({reason})"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc)


def classify_connect_error(exc: OSError, where: str) -> tuple[str, bool]:
    """What to tell people about a failed connection attempt, and whether it is a refusal (TLS trust or
    identity: retrying within seconds changes nothing) rather than the network."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"TLS: the broker's certificate is not trusted ({exc.verify_message or exc.reason}); "
                "check mqtt.ca_file and that mqtt.host is a name in the broker's certificate", True)
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or str(exc)
        if "ALERT" in reason:
            return (f"TLS: the broker refused the handshake ({reason}); check mqtt.cert_file/key_file "
                    "against the broker's CA", True)
        if reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"):
            return f"TLS: {where} does not speak TLS ({reason}); is mqtt.port the broker's TLS listener?", True
        return f"TLS: {reason}", False
    return f"cannot connect to {where}: {exc.strerror or exc}", False


class _Client(mqtt.Client):
    """paho's client with our reconnect wait (paho's own doubles without jitter) and a word on every
    failed attempt."""

    backoff: Backoff
    kick: threading.Event
    broker: tuple[str, int]
    #: Set after a refusal: the next wait is ``refused_wait()`` instead of the backoff.
    refused: bool = False
    refused_wait: Callable[[], float]
    on_attempt: Callable[[bool], None]
    on_attempt_error: Callable[[OSError], None]

    def reconnect(self) -> MQTTErrorCode:
        self.on_attempt(False)
        try:
            rc = super().reconnect()
        except OSError as exc:  # paho retries after _reconnect_wait; say why first
            self.on_attempt_error(exc)
            raise
        self.on_attempt(True)  # CONNECT sent (this is paho's own thread: its CONNACK is handled later)
        return rc

    def _reconnect_wait(self) -> None:
        if self.refused:
            self.refused = False
            delay = self.refused_wait()
        else:
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
        self._awaiting_connack = False
        self._closed_early = 0  # connections in a row the broker closed before its CONNACK
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
        client.refused_wait = lambda: refused_wait(cfg.refused_retry_s)
        client.on_attempt = self._on_attempt
        client.on_attempt_error = self._on_attempt_error
        client.on_socket_open = _no_delay
        paho_log = logging.getLogger(PAHO_LOGGER)
        paho_log.addFilter(_quiet_shutdown)
        client.enable_logger(paho_log)
        configure_identity(client, cfg, password)
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

    def _on_attempt(self, connect_sent: bool) -> None:
        self._awaiting_connack = connect_sent

    def _on_attempt_error(self, exc: OSError) -> None:
        """paho's thread: a connection attempt failed before MQTT (socket, TLS handshake)."""
        try:
            assert self._listener is not None
            self._closed_early = 0
            text, refused = classify_connect_error(exc, self.cfg.url)
            if refused:
                self._client.refused = True
                self._listener.on_connect_refused(text)
            else:
                self._listener.on_connect_failed(text)
        except Exception:
            log.exception("reporting a failed connection attempt failed")

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        try:
            assert self._listener is not None
            self._awaiting_connack = False
            self._closed_early = 0
            if reason.is_failure:
                self._client.refused = True
                code = f" (CONNACK {reason.value:#04x})" if self.mqtt5 else ""  # paho maps 3.1.1's codes
                self._listener.on_connect_refused(f"{reason}{code}")
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
            refused = [f"{r} (SUBACK {r.value:#04x})" for r in reasons if r.is_failure]
            error = ", ".join(refused) if refused else None
            self._listener.on_subscribed(mid, error=error)
        except Exception:
            log.exception("on_subscribe failed")

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        try:
            assert self._listener is not None
            if self._awaiting_connack:
                # Closed between our CONNECT and any CONNACK: with TLS the usual cause is a client certificate
                # the broker does not accept (TLS 1.3 reports that only now), or plain MQTT to a TLS port.
                self._awaiting_connack = False
                self._closed_early += 1
                text = (f"{self.cfg.url} closed the connection before answering our CONNECT; "
                        + ("does the broker accept our client certificate (mqtt.cert_file, its CA)?"
                           if self.cfg.tls else "is mqtt.port a TLS listener (then set mqtt.tls = true)?"))
                if self._closed_early >= 2:
                    self._client.refused = True
                    self._listener.on_connect_refused(text)
                else:
                    self._listener.on_connect_failed(text)
                return
            self._listener.on_disconnected(str(reason))
        except Exception:
            log.exception("on_disconnect failed")

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode, props: Any) -> None:
        try:
            assert self._listener is not None
            error = f"{reason} (PUBACK {reason.value:#04x})" if reason.is_failure else None
            self._listener.on_acked(mid, error=error)
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
