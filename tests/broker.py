"""A real mosquitto for tests: free loopback port, temp config, stop/restart on the same port.

By default it listens in plain text and lets anyone in; ``config`` replaces that with other listener
and authentication lines (a password file, an ACL, TLS listeners: see tests/identities.py), and
:class:`Login` gives a test client an identity.

The broker keeps its own persistence in a temp directory (saved on a clean stop) so that a
*subscriber's* persistent session survives a broker restart; that is what lets a test
subscriber notice a lost message instead of missing it because it was not connected.
It does not help the gatekeeper: a message the gatekeeper never got a PUBACK for is not in
the broker's database either.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Mosquitto:
    """One mosquitto process; ``stop()``/``start()`` keep the port and the persistence dir."""

    def __init__(self, workdir: Path, *, port: int | None = None, persistence: bool = True,
                 extra_config: tuple[str, ...] = (), config: Sequence[str] | None = None,
                 max_queued_messages: int = 0) -> None:
        """``config``: listener and authentication lines instead of an open plain listener on ``port``
        (which must then be one of its listeners: start() waits for it). ``max_queued_messages`` 0 is no
        limit, but mosquitto 2.0.11 then drops a client's connection after every publish its ACL refuses
        (eclipse-mosquitto/mosquitto#2579, #3244): tests with an ACL pass a finite limit."""
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.persistence = persistence
        self.extra_config = extra_config
        self.max_queued_messages = max_queued_messages
        self.config = list(config) if config is not None else [f"listener {self.port} 127.0.0.1",
                                                                "allow_anonymous true"]
        self.config_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._write_config()

    def _write_config(self) -> None:
        lines = [
            *self.config,
            # Queue without limit for offline persistent subscribers: a test must see every message.
            f"max_queued_messages {self.max_queued_messages}",
            "max_queued_bytes 0",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
        ]
        if os.geteuid() == 0:
            # Started as root, mosquitto would switch to its own user and could not write the temp dir.
            lines.append("user root")
        if self.persistence:
            store = self.workdir / "persist"
            store.mkdir(exist_ok=True)
            lines += ["persistence true", f"persistence_location {store}/", "autosave_interval 0"]
        else:
            lines.append("persistence false")
        lines += list(self.extra_config)
        self.config_path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _log_lines(self, ending: str) -> int:
        return sum(1 for line in self.log_text().splitlines() if line.endswith(ending))

    def start(self, timeout: float = 10.0) -> "Mosquitto":
        """Start and wait until the port accepts connections and mosquitto says it is running (its first
        listener accepts before the others are open and before its signal handlers are in place)."""
        if self.running:
            return self
        started = self._log_lines(" running")
        self._proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise RuntimeError(f"mosquitto exited with {self._proc.returncode}: {err} {self.log_text()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    pass
                if self._log_lines(" running") > started:
                    return self
            except OSError:
                pass
            time.sleep(0.02)  # polling a port that is not open yet; nothing to await
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout}s")

    def stop(self, timeout: float = 10.0) -> None:
        """Clean stop (SIGTERM): mosquitto saves its persistence file."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()

    def restart(self) -> "Mosquitto":
        self.stop()
        return self.start()

    def reload(self, timeout: float = 10.0) -> None:
        """SIGHUP: mosquitto reads its password file and ACL again; connected clients stay connected.
        Returns once it has logged the reload."""
        assert self._proc is not None and self.running
        before = self._log_lines("Reloading config.")
        self._proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while self._log_lines("Reloading config.") <= before:
            if time.monotonic() > deadline or not self.running:
                raise RuntimeError(f"mosquitto did not reload: {self.log_text()[-2000:]}")
            time.sleep(0.02)  # mosquitto says so only in its log

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> "Mosquitto":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Login:
    """A test client's identity: user name and password, TLS (CA, client certificate), another port."""

    username: str | None = None
    password: str | None = None
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    port: int | None = None

    def apply(self, client: mqtt.Client) -> None:
        if self.username:
            client.username_pw_set(self.username, self.password)
        if self.ca:
            client.tls_set(ca_certs=str(self.ca), certfile=str(self.cert) if self.cert else None,
                           keyfile=str(self.key) if self.key else None)


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


class Subscriber:
    """A test-side MQTT 5 client: collects what arrives on ``topic`` into a queue, can publish.

    ``persistent=True`` keeps a broker session (clean_start False, 1 h expiry) with QoS 1, so
    messages published while this client is away (or the broker restarts) are queued for it.
    """

    def __init__(self, broker: Mosquitto, topic: str, *, persistent: bool = False,
                 client_id: str | None = None, timeout: float = 10.0, login: Login | None = None) -> None:
        self.broker = broker
        self.topic = topic
        self.messages: queue.Queue[Received] = queue.Queue()
        self.history: list[Received] = []  # every message, in arrival order (get() skips)
        self._subscribed = threading.Event()
        self._acks: dict[int, threading.Event] = {}
        self.puback: dict[int, Any] = {}  # mid -> the broker's PUBACK reason code
        self.suback: list[Any] = []  # every SUBACK's reason codes, in order
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"test-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv5)
        self.client.enable_logger(logging.getLogger("tests.subscriber"))
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600 if persistent else 0
        login = login or Login()
        login.apply(self.client)
        self.client.connect_async(broker.host, login.port or broker.port, 30, clean_start=not persistent,
                                  properties=props)
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            self.close()
            raise TimeoutError(f"subscriber did not subscribe to {topic} within {timeout}s")

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if not reason.is_failure:
            client.subscribe(self.topic, qos=1)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[Any], props: Any) -> None:
        self.suback.append(list(reasons))
        self._subscribed.set()

    def subscribe(self, topic: str, *, timeout: float = 10.0) -> list[Any]:
        """Subscribe to one more filter; the SUBACK's reason codes."""
        done = len(self.suback)
        self.client.subscribe(topic, qos=1)
        deadline = time.monotonic() + timeout
        while len(self.suback) <= done:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no SUBACK for {topic}")
            self._subscribed.clear()
            self._subscribed.wait(0.05)
        return self.suback[done]

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        received = Received(msg.topic, bytes(msg.payload), bool(msg.retain))
        self.history.append(received)
        self.messages.put(received)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        with self._lock:
            self.puback[mid] = reason
            self._acks.setdefault(mid, threading.Event()).set()

    def publish(self, topic: str, payload: bytes | str, *, timeout: float = 10.0, retain: bool = False) -> Any:
        """Publish QoS 1 and wait for the broker's PUBACK; its reason code (MQTT 5: a failure when refused)."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise TimeoutError(f"no PUBACK for {topic}")
        with self._lock:
            return self.puback.get(info.mid)

    def get(self, timeout: float = 10.0, where: Callable[[Received], bool] | None = None) -> Received:
        """The next message (matching ``where``), or TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no matching message on {self.topic} within {timeout}s")
            try:
                msg = self.messages.get(timeout=left)
            except queue.Empty:
                continue
            if where is None or where(msg):
                return msg

    def drain(self) -> list[Received]:
        out = []
        while True:
            try:
                out.append(self.messages.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> "Subscriber":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _main() -> None:  # pragma: no cover - manual use: python tests/broker.py
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, Mosquitto(Path(tmp)) as broker:
        print(f"mosquitto on {broker.host}:{broker.port} (Ctrl-C to stop)", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass


# --------------------------------------------------------------------------- gatekeeper side

LOT = "lot-7"
SECRET = "test-hmac-secret-not-for-production"


def sync_settings(broker: Mosquitto, data_dir: Path, *, secret: str | None = SECRET, lot: str = LOT,
                  **mqtt: Any) -> Any:
    """Settings for a CloudSync of ``lot`` talking to ``broker`` (fast reconnects, a test HMAC secret)."""
    from pydantic import SecretStr

    from gatekeeper.config import MqttConfig, Settings, SiteConfig, StorageConfig

    options: dict[str, Any] = {"host": broker.host, "port": broker.port, "reconnect_min_s": 0.1,
                               "reconnect_max_s": 0.5, "client_id": f"gk-{uuid.uuid4().hex[:8]}"}
    if secret:
        options["hmac_secret"] = SecretStr(secret)
    options.update(mqtt)
    return Settings(site=SiteConfig(lot_id=lot, capacity=20), mqtt=MqttConfig(**options),
                    storage=StorageConfig(data_dir=data_dir))


if __name__ == "__main__":  # pragma: no cover
    _main()
