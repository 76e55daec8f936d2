"""The reference cloud consumer (examples/cloud_consumer) against a real mosquitto and the real edge sync:
dedupe, gap detection, acknowledgement only after the store committed, signed commands matched to their
replies, and two consumer processes sharing a fleet's load (also across a broker restart)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from examples.cloud_consumer import CommandSender, Consumer, ConsumerConfig, ConsumerStore, owned_lots, partition_of
from examples.cloud_consumer import gaps
from examples.cloud_consumer.store import BatchResult, Received
from examples.cloud_consumer.topics import Malformed, parse, topic_filters
from gatekeeper.config import load_settings
from gatekeeper.store import Store
from tests.broker import LOT, SECRET, Mosquitto, Subscriber
from tests.fleet import SimLot, published_messages
from tests.test_sync_outage import _start_sync, _write_config

REPO = Path(__file__).resolve().parents[1]


def wait_until(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)  # the store is written by another thread or process: poll it


def event(lot: str, seq: int, *, msg_id: str | None = None, kind: str = "alarm") -> bytes:
    return json.dumps({"id": msg_id or f"ev-{lot}-{seq}", "lot": lot, "lane": None, "kind": kind,
                       "at": "2026-05-04T08:00:00.000Z", "plate": "", "session_id": None, "reason": "test",
                       "message": "", "seq": seq}).encode()


def stored(store: ConsumerStore, lot: str | None = None) -> list[tuple[str, int, str]]:
    sql = "SELECT lot, seq, msg_id FROM messages WHERE seq IS NOT NULL"
    params: tuple[Any, ...] = ()
    if lot is not None:
        sql, params = sql + " AND lot=?", (lot,)
    return sorted(store.rows(sql + " ORDER BY lot, seq", params))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ConsumerStore]:
    with ConsumerStore(tmp_path / "cloud.db", consumer="test") as s:
        yield s


def consumer(broker: Mosquitto, store: Any, *, client_id: str = "cloud-p0", lots: Sequence[str] = (LOT,),
             mode: str = "partitioned") -> Consumer:
    cfg = ConsumerConfig(host=broker.host, port=broker.port, client_id=client_id, mode=mode,  # type: ignore[arg-type]
                         lots=tuple(lots))
    started = Consumer(cfg, store).start()
    assert started.subscribed.wait(10), "consumer did not subscribe"
    return started


# --------------------------------------------------------------------------- pure parts


@given(st.sets(st.integers(1, 60)), st.integers(0, 30))
def test_gap_detection_finds_exactly_the_missing_seqs(present: set[int], contiguous: int) -> None:
    new = gaps.advance(contiguous, present)
    assert all(s in present for s in range(contiguous + 1, new + 1)) and new + 1 not in present
    above = {s for s in present if s > contiguous}
    expected = [s for s in range(contiguous + 1, max(above, default=0)) if s not in above]
    assert gaps.missing(contiguous, present, limit=1000) == expected


def test_partitions_are_stable_and_cover_every_lot_once() -> None:
    lots = [f"lot-{i:04d}" for i in range(500)]
    parts = [owned_lots(lots, partition=i, partitions=3) for i in range(3)]
    assert sorted(sum(parts, [])) == sorted(lots)
    assert all(120 < len(p) < 215 for p in parts), [len(p) for p in parts]  # a hash, roughly even
    assert partition_of("lot-0007", 3) == partition_of("lot-0007", 3)
    assert topic_filters(mode="partitioned", prefix="gatekeeper", lots=["a"]) == [
        "gatekeeper/a/events/#", "gatekeeper/a/occupancy", "gatekeeper/a/lanes/+/gate", "gatekeeper/a/reply/+",
        "gatekeeper/a/status"]
    assert topic_filters(mode="shared", prefix="gatekeeper", group="g")[0] == "$share/g/gatekeeper/+/events/#"


@pytest.mark.parametrize("payload, error", [
    (b"\xff", "UTF-8"), (b"[1]", "not an object"), (b"{", "not JSON"),
    (b'{"id": "x", "seq": 0}', "positive"), (b'{"id": 5, "seq": 1}', "not a string"),
    (b'{"id": "x"}', "without id or seq"),
])
def test_unreadable_messages_are_named(payload: bytes, error: str) -> None:
    with pytest.raises(Malformed, match=error):
        parse("gatekeeper/lot-1/events/entry", payload, prefix="gatekeeper")


def test_a_repeated_reply_is_a_new_message_but_matches_its_command_once(store: ConsumerStore) -> None:
    store.record_command("pay-1", lot="lot-a", name="payment", fields={"session_id": 1, "amount": 5})

    def reply(seq: int, repeat: bool) -> Received:
        body = json.dumps({"id": "pay-1", "status": "ok", "error": None, "command": "payment", "repeat": repeat,
                           "seq": seq})
        msg = parse("gatekeeper/lot-a/reply/payment", body.encode(), prefix="gatekeeper")
        return Received("gatekeeper/lot-a/reply/payment", body.encode(), False, time.time(), message=msg)

    first = store.save_batch([reply(1, False), reply(1, False)])
    assert (first.stored, first.duplicates, first.replies_matched) == (1, 1, 1)
    again = store.save_batch([reply(2, True)])
    assert (again.stored, again.replies_matched) == (1, 0)
    record = store.command("pay-1")
    assert record is not None and record.reply is not None and record.reply["repeat"] is False
    assert store.gaps() == []


# --------------------------------------------------------------------------- against a real mosquitto


def test_duplicates_are_stored_once_and_counted(mosquitto: Mosquitto, store: ConsumerStore) -> None:
    base = f"gatekeeper/{LOT}"
    with Subscriber(mosquitto, "unused/#") as lot:
        c = consumer(mosquitto, store)
        try:
            for payload in (event(LOT, 1), event(LOT, 2), event(LOT, 1), event(LOT, 2), b"not json"):
                lot.publish(f"{base}/events/alarm", payload)
            wait_until(lambda: store.counters().get("test", {}).get("deliveries", 0) >= 5, "five deliveries")
        finally:
            c.close()
    assert stored(store) == [(LOT, 1, f"ev-{LOT}-1"), (LOT, 2, f"ev-{LOT}-2")]
    counts = store.counters()["test"]
    assert (counts["stored"], counts["duplicates"], counts["malformed"]) == (2, 2, 1)
    assert store.rows("SELECT payload, error LIKE 'payload is not JSON%' FROM malformed") == [(b"not json", 1)]


def test_a_gap_is_reported_until_the_missing_message_arrives(mosquitto: Mosquitto, store: ConsumerStore) -> None:
    base = f"gatekeeper/{LOT}"
    store.add_lots([LOT])
    with Subscriber(mosquitto, "unused/#") as lot:
        c = consumer(mosquitto, store)
        try:
            for seq in (1, 2, 4, 5):
                lot.publish(f"{base}/events/alarm", event(LOT, seq))
            wait_until(lambda: len(stored(store)) == 4, "four messages")
            [gap] = store.gaps()
            assert (gap.lot, gap.contiguous, gap.highest, gap.missing) == (LOT, 2, 5, [3])
            assert store.gaps(older_than_s=3600) == []  # open for less than that: not an alarm yet
            lot.publish(f"{base}/occupancy", json.dumps({"id": "occ-3", "lot": LOT, "seq": 3}).encode())
            wait_until(lambda: not store.gaps(), "the gap to close")
        finally:
            c.close()
    assert store.rows("SELECT contiguous, highest FROM lots WHERE lot=?", (LOT,)) == [(5, 5)]


class FailingStore:
    """A store whose disk refuses every write."""

    def __init__(self) -> None:
        self.attempts = 0

    def save_batch(self, batch: Sequence[Received]) -> BatchResult:
        self.attempts += 1
        raise OSError("disk full")

    def note_subscribed(self, client_id: str, *, pid: int, filters: int) -> None:
        pass


def test_nothing_is_acknowledged_before_it_is_stored(mosquitto: Mosquitto, store: ConsumerStore) -> None:
    failing = FailingStore()
    with Subscriber(mosquitto, "unused/#") as lot:
        c = consumer(mosquitto, failing)
        try:
            lot.publish(f"gatekeeper/{LOT}/events/alarm", event(LOT, 1))
            wait_until(lambda: failing.attempts >= 2, "the store to be tried")
        finally:
            c.close()
        assert c.acked == 0
        # The same session, now with a working store: the broker delivers the unacknowledged message again.
        c = consumer(mosquitto, store)
        try:
            wait_until(lambda: stored(store), "the redelivery")
        finally:
            c.close()
    assert stored(store) == [(LOT, 1, f"ev-{LOT}-1")]


def test_signed_commands_round_trip_with_a_real_edge_process(mosquitto: Mosquitto, tmp_path: Path,
                                                             store: ConsumerStore) -> None:
    config = _write_config(tmp_path, mosquitto)
    settings = load_settings(config)
    with Store.from_settings(settings) as edge:
        with edge.transaction() as conn:
            session = conn.execute("INSERT INTO sessions(plate_read, plate, entry_lane, entry_at, status) "
                                   "VALUES ('KA1', 'KA1', 'entry-1', ?, 'open')",
                                   (datetime.now(UTC).isoformat(),)).lastrowid
    store.add_lots([LOT])
    secrets = {LOT: SECRET}
    proc = _start_sync(config, tmp_path / "sync.log")
    c = consumer(mosquitto, store)
    try:
        # The lot's retained status reaches the cloud as well: send once the lot is online.
        wait_until(lambda: store.rows("SELECT status FROM lots WHERE lot=?", (LOT,)) == [("online",)], "lot online")
        with CommandSender(store, host=mosquitto.host, port=mosquitto.port, client_id="cloud-commands",
                           secret_for=secrets.__getitem__) as sender:
            paid = sender.send(LOT, "payment", {"session_id": session, "amount": 250, "reference": "psp-1"})
            record = sender.wait_reply(paid, timeout=30)
            assert record is not None and record.reply_status == "ok", record
            assert record.reply is not None and record.reply["result"]["amount_paid"] == 250
            # Sent again with the same id (a cloud that got no reply): the stored reply, not a second payment.
            assert sender.resend_unanswered(older_than_s=0) == 0  # it has its reply
            sender.resend(paid)
            wait_until(lambda: store.rows("SELECT COUNT(*) FROM messages WHERE kind='reply' AND msg_id=?",
                                          (paid,))[0][0] == 2, "the repeated reply")
            # Signed with the wrong secret: refused before authentication, the reply (seq null) still matches.
            secrets[LOT] = "not-the-lot-secret"
            forged = sender.send(LOT, "payment", {"session_id": session, "amount": 1, "reference": "psp-2"})
            refused = sender.wait_reply(forged, timeout=30)
            assert refused is not None and refused.reply_status == "error"
            assert refused.reply_error is not None and "signature" in refused.reply_error
    finally:
        c.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    events = [r[0] for r in store.rows("SELECT json_extract(payload, '$.kind') FROM messages WHERE kind='event'")]
    assert sorted(events) == ["paid", "rejected"]
    replies = store.rows("SELECT msg_id, seq IS NULL, json_extract(payload, '$.repeat') FROM messages "
                         "WHERE kind='reply' ORDER BY rowid")
    assert replies == [(paid, 0, 0), (paid, 0, 1), (forged, 1, 0)]  # the reply, its repeat, the refusal
    with Store.from_settings(settings) as edge:
        assert edge.session(session)["amount_paid"] == 250  # paid once
        truth = {(LOT, seq, msg_id) for seq, msg_id, _ in published_messages(edge.path)}
    assert truth == set(stored(store)) and store.gaps() == []


# --------------------------------------------------------------------------- consumer processes


def start_consumer_process(broker: Mosquitto, db: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log = db.with_name(f"consumer-{len(list(db.parent.glob('consumer-*.log')))}.log")
    return subprocess.Popen([sys.executable, "-m", "examples.cloud_consumer", "--db", str(db), "--host", broker.host,
                             "--port", str(broker.port), *args], stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            env=env, cwd=REPO)


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        assert proc.wait(20) == 0


def start_lots(broker: Mosquitto, tmp_path: Path, lots: Sequence[str]) -> list[SimLot]:
    return [SimLot(lot=lot, data_dir=tmp_path / lot, host=broker.host, port=broker.port).start() for lot in lots]


def traffic(sims: Sequence[SimLot], vehicles: int) -> None:
    rng = random.Random(7)
    for _ in range(vehicles):
        for sim in sims:
            sim.step(rng)


def ground_truth(sims: Sequence[SimLot]) -> set[tuple[str, int, str]]:
    return {(sim.lot, seq, msg_id) for sim in sims for seq, msg_id, _ in published_messages(sim.store.path)}


def test_two_consumer_processes_share_the_load_of_real_lots(mosquitto: Mosquitto, tmp_path: Path) -> None:
    lots = ["lot-north", "lot-south", "lot-east"]
    db = tmp_path / "cloud.db"
    (tmp_path / "lots.txt").write_text("\n".join(lots) + "\n", encoding="utf-8")
    procs = [start_consumer_process(mosquitto, db, "--mode", "shared", "--client-id", f"cloud-{i}",
                                    "--lots-file", str(tmp_path / "lots.txt")) for i in range(2)]
    sims: list[SimLot] = []
    try:
        with ConsumerStore(db, consumer="reader") as store:
            wait_until(lambda: len(store.subscribed()) == 2, "both consumers subscribed")
            sims = start_lots(mosquitto, tmp_path, lots)
            traffic(sims, 40)
            truth = ground_truth(sims)
            wait_until(lambda: set(stored(store)) == truth, "every message of every lot", timeout=60)
            by_consumer = dict(store.rows("SELECT consumer, COUNT(*) FROM messages GROUP BY consumer"))
            assert store.gaps() == []
            events = store.rows("SELECT COUNT(*), COUNT(DISTINCT msg_id) FROM messages WHERE kind='event'")[0]
            assert events == (120, 120)
    finally:
        for sim in sims:
            sim.close()
        stop(procs)
    print(f"messages per consumer process: {by_consumer}")
    assert set(by_consumer) == {"cloud-0", "cloud-1"} and min(by_consumer.values()) > len(truth) // 5


def test_partitioned_consumers_lose_nothing_when_the_broker_restarts_while_they_are_away(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    """The failure the issue measured: a broker restart while consumers are away. Non-shared persistent
    sessions (one per partition) are restored from mosquitto's persistence file and queue at once."""
    lots = ["lot-a", "lot-b", "lot-c", "lot-d"]
    assert {partition_of(lot, 2) for lot in lots} == {0, 1}
    db = tmp_path / "cloud.db"
    (tmp_path / "lots.txt").write_text("\n".join(lots) + "\n", encoding="utf-8")
    args = ("--mode", "partitioned", "--lots-file", str(tmp_path / "lots.txt"))
    procs = [start_consumer_process(mosquitto, db, *args, "--partition", f"{i}/2") for i in range(2)]
    sims: list[SimLot] = []
    try:
        with ConsumerStore(db, consumer="reader") as store:
            wait_until(lambda: len(store.subscribed()) == 2, "both partitions subscribed")
            sims = start_lots(mosquitto, tmp_path, lots)
            traffic(sims, 10)
            wait_until(lambda: set(stored(store)) == ground_truth(sims), "the first messages")
            stop(procs)
            mosquitto.restart()
            traffic(sims, 10)  # the lots reconnect and publish while no consumer is connected
            wait_until(lambda: all(sim.sync.connected and sim.pending() == 0 for sim in sims),
                       "the lots' outboxes acknowledged by the broker")
            procs = [start_consumer_process(mosquitto, db, *args, "--partition", f"{i}/2") for i in range(2)]
            truth = ground_truth(sims)
            wait_until(lambda: set(stored(store)) == truth, "every message after the restart", timeout=60)
            assert store.gaps() == []
    finally:
        for sim in sims:
            sim.close()
        stop(procs)
