"""The :class:`~gatekeeper.sync.transport.Transport` the lot runs: paho-mqtt 2.x.

MQTT 5 with a persistent session (``clean_start=False``, session expiry) or 3.1.1 with
``clean_session=False``; a retained ``offline`` will on the status topic; paho's own
inflight and queue limits are off, because the outbox pump keeps its own window and paho
must never hold a message back (a later publish could overtake it).
"""

from __future__ import annotations

import logging
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gatekeeper.config import MqttConfig
from gatekeeper.sync.transport import PublishError, TransportListener

log = logging.getLogger(__name__)

#: The logger paho writes to.
PAHO_LOGGER = "gatekeeper.sync.paho"


class PahoTransport:
    """One paho client; its callbacks are passed on to a :class:`TransportListener`."""

    def __init__(
        self, cfg: MqttConfig, *, client_id: str, will_topic: str, will_payload: bytes, password: str | None
    ) -> None:
        self.cfg = cfg
        self.mqtt5 = cfg.protocol == "5"
        self._listener: TransportListener | None = None
        self._client = self._make_client(client_id, will_topic, will_payload, password)

    def _make_client(self, client_id: str, will_topic: str, will_payload: bytes, password: str | None) -> mqtt.Client:
        cfg = self.cfg
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5 if self.mqtt5 else mqtt.MQTTv311,
            clean_session=None if self.mqtt5 else False,
        )
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
            self._listener.on_message(message.topic, bytes(message.payload), correlation=correlation)
        except Exception:
            log.exception("on_message failed")


def _quiet_shutdown(record: logging.LogRecord) -> bool:
    """paho 2.2 logs an ERROR for every loop pass without a socket (after our disconnect(), between
    reconnect attempts); the disconnect itself is already logged once, as a warning."""
    return not str(record.msg).startswith("Client is not connected")
