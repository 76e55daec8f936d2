"""Simulated lots for the fleet tests and benchmarks/fleet.py: the REAL edge (Store + CloudSync over paho).

Each :class:`SimLot` has its own SQLite database, outbox and MQTT connection; several share a process.
Vehicles come and go through the store's own ``record_decision`` (session, event and occupancy message
in one commit), exactly as a lane records them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import sqlite3
from collections import deque
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from gatekeeper.config import MqttConfig, Settings, SiteConfig, StorageConfig
from gatekeeper.rules import Action, Decision, Reason
from gatekeeper.store import Store
from gatekeeper.sync import CloudSync

#: Benchmarks and tests derive each lot's HMAC secret from one master key (a cloud can do the same:
#: no table of a thousand secrets, and one lot's secret tells nothing about another's).
MASTER_KEY = b"fleet-test-master-key-not-for-production"


def lot_secret(lot: str, master: bytes = MASTER_KEY) -> str:
    return hmac.new(master, lot.encode("utf-8"), hashlib.sha256).hexdigest()


def lot_settings(*, lot: str, data_dir: Path, host: str, port: int, reconnect_min_s: float = 0.1,
                 reconnect_max_s: float = 0.5, **mqtt: Any) -> Settings:
    options: dict[str, Any] = {"host": host, "port": port, "client_id": f"gatekeeper-{lot}",
                               "reconnect_min_s": reconnect_min_s, "reconnect_max_s": reconnect_max_s,
                               "hmac_secret": SecretStr(lot_secret(lot))}
    options.update(mqtt)
    return Settings(site=SiteConfig(lot_id=lot, capacity=100_000), mqtt=MqttConfig(**options),
                    storage=StorageConfig(data_dir=data_dir))


class SimLot:
    """One lot: its store and its cloud sync; ``entry()``/``exit_oldest()`` record vehicles."""

    def __init__(self, *, lot: str, data_dir: Path, host: str, port: int, **mqtt: Any) -> None:
        self.lot = lot
        self.settings = lot_settings(lot=lot, data_dir=data_dir, host=host, port=port, **mqtt)
        self.store = Store.from_settings(self.settings)
        self.sync = CloudSync(self.settings, self.store)
        self.inside: deque[tuple[int, str]] = deque()
        self._n = 0

    def start(self) -> "SimLot":
        self.sync.start()
        return self

    def close(self) -> None:
        self.sync.close()
        self.store.close()

    def entry(self) -> int:
        self._n += 1
        plate = f"{self.lot[-6:].upper().replace('-', '')}{self._n}"
        decision = Decision(open=True, reason=Reason.ENTRY, message="Welcome", action=Action.START_SESSION,
                            plate=plate)
        recorded = self.store.record_decision(decision, lane="entry-1", direction="entry", plate_read=plate,
                                              confidence=0.97)
        assert recorded.session_id is not None
        self.inside.append((recorded.session_id, plate))
        self.sync.wake()
        return recorded.session_id

    def exit_oldest(self) -> bool:
        if not self.inside:
            return False
        session_id, plate = self.inside.popleft()
        decision = Decision(open=True, reason=Reason.PAID, message="Goodbye", action=Action.CLOSE_SESSION,
                            session_id=session_id, plate=plate)
        self.store.record_decision(decision, lane="exit-1", direction="exit", plate_read=plate, confidence=0.97)
        self.sync.wake()
        return True

    def step(self, rng: random.Random) -> None:
        """One vehicle: an entry, or (40 %, when someone is inside) the longest-parked one leaves."""
        if self.inside and rng.random() < 0.4:
            self.exit_oldest()
        else:
            self.entry()

    def pending(self) -> int:
        return int(self.store.outbox_stats()["pending"])


def published_messages(database: Path, *, sent_only: bool = False) -> list[tuple[int, str, str]]:
    """What a lot queued for the cloud, read from its database: ``(seq, id, relative topic)`` per outbox row
    (``sent_only``: only the rows whose PUBACK the lot has recorded)."""
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        where = " WHERE sent_at IS NOT NULL" if sent_only else ""
        rows = conn.execute(f"SELECT payload, topic FROM outbox{where} ORDER BY id").fetchall()
    finally:
        conn.close()
    out = []
    for payload, topic in rows:
        body = json.loads(payload)
        out.append((int(body["seq"]), str(body["id"]), topic))
    return out
