"""Money-safe commands across a SIGKILL: a burst of signed payments, the sync process killed mid-burst,
then restarted. Every payment is applied exactly once and answered (the broker redelivers what was
never acknowledged; what was committed has its reply in the outbox)."""

from __future__ import annotations

import json
import signal
import uuid
from datetime import UTC, datetime
from pathlib import Path

from gatekeeper.config import load_settings
from gatekeeper.messages import Reply
from gatekeeper.store import Store
from gatekeeper.sync.signing import sign
from tests.broker import LOT, SECRET, Mosquitto, Subscriber
from tests.test_sync_outage import _start_sync, _write_config, wait_until

BASE = f"gatekeeper/{LOT}"


def _payment(session_id: int, *, command_id: str, reference: str) -> bytes:
    body = {"id": command_id, "ts": datetime.now(UTC).isoformat(), "session_id": session_id, "amount": 100,
            "reference": reference}
    return json.dumps(sign(body, SECRET, lot=LOT, command="payment")).encode()


def _sessions(store: Store, n: int) -> list[int]:
    at = datetime.now(UTC).isoformat(timespec="milliseconds")
    with store.transaction() as conn:
        return [conn.execute("INSERT INTO sessions(plate_read, plate, entry_lane, entry_at, status) "
                             "VALUES (?,?,?,?,'open')", (f"K{i}", f"K{i}", "entry-1", at)).lastrowid
                for i in range(n)]


def test_sigkill_mid_burst_of_payments_applies_each_once_and_answers_all(mosquitto: Mosquitto,
                                                                           tmp_path: Path) -> None:
    config = _write_config(tmp_path, mosquitto)
    settings = load_settings(config)
    total = 1000
    with Store.from_settings(settings) as store:
        sessions = _sessions(store, total)
    ids = {f"pay-{uuid.uuid4().hex[:12]}": sid for sid in sessions}
    log = tmp_path / "sync.log"
    replies: dict[str, Reply] = {}

    def collect(cloud: Subscriber) -> int:
        for msg in cloud.drain():
            reply = Reply.model_validate_json(msg.payload)
            if reply.id in ids:
                replies.setdefault(reply.id, reply)
        return len(replies)

    with Subscriber(mosquitto, f"{BASE}/reply/#", persistent=True, client_id="cloud-crash") as cloud:
        proc = _start_sync(config, log)
        try:
            with Subscriber(mosquitto, f"{BASE}/status") as status:
                status.get(where=lambda m: m.payload == b"online")
            for command_id, sid in ids.items():
                cloud.client.publish(f"{BASE}/cmd/payment", _payment(sid, command_id=command_id,
                                                                     reference=f"psp-{sid}"), qos=1)
            wait_until(lambda: collect(cloud) >= total // 5, "the first replies", timeout=60)
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(10) == -signal.SIGKILL
            answered_at_kill = collect(cloud)
            assert answered_at_kill < total, "the kill came after the burst: retune the test"

            proc = _start_sync(config, log)
            wait_until(lambda: collect(cloud) == total, "a reply to every payment", timeout=180)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
    print(f"sigkill mid-burst: {answered_at_kill} of {total} answered at the kill, all {total} answered after")
    assert all(r.status == "ok" and r.session_id == ids[r.id] for r in replies.values())
    with Store.from_settings(settings) as store:
        paid = [store.session(sid)["amount_paid"] for sid in sessions]
        assert paid == [100] * total  # each applied exactly once
        assert len(store.events(kinds=["paid"])) == total
        inbound = store.db.execute("SELECT COUNT(*) FROM inbound WHERE reply IS NOT NULL").fetchone()[0]
        assert inbound == total
        assert store.outbox_stats()["pending"] == 0
    assert "Traceback" not in log.read_text()
