"""Nothing is lost when the broker goes away or the sync process is killed.

The cloud side is a *persistent* QoS 1 subscriber (its broker session survives the broker
restart via mosquitto's persistence file), so it is queued everything the broker accepted
while it was away. What these tests check is the gatekeeper's half: every outbox row reaches
the broker, first copies in id order, duplicates only as byte-identical copies.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from gatekeeper.store import Store
from gatekeeper.sync import CloudSync
from tests.broker import LOT, SECRET, Mosquitto, Received, Subscriber, sync_settings

BASE = f"gatekeeper/{LOT}"
REPO = Path(__file__).resolve().parents[1]


def collect_events(sub: Subscriber, expected: set[str], timeout: float) -> list[Received]:
    """Receive event messages until every expected id has arrived at least once."""
    got: list[Received] = []
    missing = set(expected)
    deadline = datetime.now() + timedelta(seconds=timeout)
    while missing:
        left = (deadline - datetime.now()).total_seconds()
        if left <= 0:
            raise AssertionError(f"{len(missing)} of {len(expected)} events never arrived")
        msg = sub.get(left, where=lambda m: "/events/" in m.topic)
        got.append(msg)
        missing.discard(msg.json()["id"])
    return got


def check_delivery(received: list[Received], made: list[str]) -> int:
    """All made ids arrived, first copies in order, duplicates identical. Returns the duplicate count."""
    first: dict[str, bytes] = {}
    order: list[str] = []
    duplicates = 0
    for msg in received:
        event_id = msg.json()["id"]
        if event_id in first:
            assert msg.payload == first[event_id], "a duplicate must be the same message"
            duplicates += 1
        else:
            first[event_id] = msg.payload
            order.append(event_id)
    assert [i for i in order if i in set(made)] == made
    return duplicates


def wait_until(check: Any, what: str, timeout: float = 30.0) -> None:
    waiter = threading.Event()
    deadline = datetime.now() + timedelta(seconds=timeout)
    while not check():
        if datetime.now() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        waiter.wait(0.05)


def test_broker_outage_while_500_events_are_made(mosquitto: Mosquitto, tmp_path: Path) -> None:
    settings = sync_settings(mosquitto, tmp_path / "data")
    cloud = Subscriber(mosquitto, f"{BASE}/events/#", persistent=True, client_id="cloud-outage")
    with Store.from_settings(settings) as store, CloudSync(settings, store) as sync:
        try:
            wait_until(lambda: sync.connected, "first connection")
            made = []
            for i in range(100):
                made.append(store.record_event("alarm", lane="entry-1", reason=f"before_{i}"))
                sync.wake()
            mosquitto.stop()  # mid-drain: some rows are in flight, some not yet published
            wait_until(lambda: not sync.connected, "disconnect noticed")
            for i in range(400):
                made.append(store.record_event("alarm", lane="entry-1", reason=f"during_{i}"))
                sync.wake()
            assert store.outbox_stats()["pending"] >= 400
            mosquitto.start()

            received = collect_events(cloud, set(made), timeout=60)
            duplicates = check_delivery(received, made)
            print(f"outage: {len(made)} events, {len(received)} received, {duplicates} duplicates")
            wait_until(lambda: store.outbox_stats()["pending"] == 0, "outbox empty")
            assert duplicates < len(made)
        finally:
            cloud.close()


def _write_config(tmp_path: Path, broker: Mosquitto) -> Path:
    secret = tmp_path / "hmac-secret"
    secret.write_text(SECRET + "\n", encoding="utf-8")
    config = tmp_path / "config.toml"
    config.write_text(
        f"""
[site]
lot_id = "{LOT}"
capacity = 20

[mqtt]
host = "{broker.host}"
port = {broker.port}
client_id = "gk-sigkill"
reconnect_min_s = 0.1
reconnect_max_s = 0.5
hmac_secret_file = "{secret}"

[storage]
data_dir = "{tmp_path / 'data'}"
""",
        encoding="utf-8",
    )
    return config


def _start_sync(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEKEEPER_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.Popen([sys.executable, "-m", "gatekeeper.sync", "--config", str(config)],
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env, cwd=REPO)


def test_sigkill_mid_drain_then_restart_delivers_the_rest(mosquitto: Mosquitto, tmp_path: Path) -> None:
    config = _write_config(tmp_path, mosquitto)
    from gatekeeper.config import load_settings

    settings = load_settings(config)
    total = 20_000
    with Store.from_settings(settings) as store:
        with store.transaction():  # one commit: the backlog a long outage leaves behind
            made = [store.record_event("alarm", lane="exit-1", reason=f"backlog_{i}") for i in range(total)]
    cloud = Subscriber(mosquitto, f"{BASE}/events/#", persistent=True, client_id="cloud-sigkill")
    log = tmp_path / "sync.log"
    try:
        proc = _start_sync(config, log)
        received = [cloud.get(30, where=lambda m: "/events/" in m.topic) for _ in range(1000)]
        with Subscriber(mosquitto, f"{BASE}/status") as status:
            status.get(where=lambda m: m.payload == b"online")
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(10) == -signal.SIGKILL
            # It never said goodbye: the broker publishes its last will.
            assert status.get(where=lambda m: m.payload != b"online").payload == b"offline"
        with Store.from_settings(settings) as store:
            left = store.outbox_stats()["pending"]
        assert 0 < left < total, f"kill was not mid-drain ({left} left): retune the test"

        proc = _start_sync(config, log)
        try:
            received += collect_events(cloud, set(made) - {m.json()["id"] for m in received}, timeout=120)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0, log.read_text()
        duplicates = check_delivery(received, made)
        print(f"sigkill: {left} of {total} unsent at the kill, {len(received)} received, {duplicates} duplicates")
        with Store.from_settings(settings) as store:
            assert store.outbox_stats()["pending"] == 0
    finally:
        cloud.close()
    assert "Traceback" not in log.read_text()
