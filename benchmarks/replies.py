"""Command reply latency on loopback: a signed payment published by the cloud -> its reply received.

    python benchmarks/replies.py [--commands 300] [--no-nodelay]

A real mosquitto on a loopback port, a real SQLite file (WAL, synchronous=FULL), the sync as the
lot runs it: the command, its effect and its reply commit in one transaction, the reply goes up
through the outbox, then the command is acknowledged. One command at a time (the next is sent when
the reply is in), so each figure is one full round trip. ``--no-nodelay`` leaves Nagle's algorithm
on the edge's socket for comparison. Target: p50 <= 20 ms.
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gatekeeper.store import Store  # noqa: E402
from gatekeeper.sync import CloudSync  # noqa: E402
from gatekeeper.sync import paho_transport  # noqa: E402
from gatekeeper.sync.signing import sign  # noqa: E402
from tests.broker import LOT, SECRET, Mosquitto, Subscriber, sync_settings  # noqa: E402


def _nodelay(client, userdata, sock) -> None:  # type: ignore[no-untyped-def]
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def run(commands: int, nodelay: bool) -> list[float]:
    logging.basicConfig(level=logging.WARNING)
    if not nodelay:
        paho_transport._no_delay = lambda *a: None  # type: ignore[assignment]
    base = f"gatekeeper/{LOT}"
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        broker = Mosquitto(tmp / "mosquitto").start()
        try:
            settings = sync_settings(broker, tmp / "data")
            with Store.from_settings(settings) as store:
                at = datetime.now(UTC).isoformat()
                with store.transaction() as conn:
                    sessions = [conn.execute("INSERT INTO sessions(plate_read, plate, entry_lane, entry_at, status) "
                                             "VALUES (?,?,?,?,'open')", (f"B{i}", f"B{i}", "entry-1", at)).lastrowid
                                for i in range(commands)]
                cloud = Subscriber(broker, f"{base}/reply/#")
                # The cloud's side of the round trip is not ours to slow down: no Nagle there either.
                _nodelay(cloud.client, None, cloud.client.socket())
                sync = CloudSync(settings, store).start()
                try:
                    deadline = time.monotonic() + 30
                    while not sync.connected and time.monotonic() < deadline:
                        time.sleep(0.01)
                    time.sleep(0.5)
                    cloud.drain()
                    times: list[float] = []
                    for sid in sessions:
                        body = {"id": uuid.uuid4().hex, "ts": datetime.now(UTC).isoformat(), "session_id": sid,
                                "amount": 100, "reference": f"psp-{sid}"}
                        payload = json.dumps(sign(body, SECRET, lot=LOT, command="payment")).encode()
                        start = time.perf_counter()
                        cloud.client.publish(f"{base}/cmd/payment", payload, qos=1)
                        cloud.get(10, where=lambda m: json.loads(m.payload).get("id") == body["id"])
                        times.append((time.perf_counter() - start) * 1000)
                finally:
                    sync.close()
                    cloud.close()
        finally:
            broker.close()
    q = statistics.quantiles(times, n=100)
    print(f"reply latency over {commands} payments ({'TCP_NODELAY' if nodelay else 'Nagle on'}): "
          f"p50 {statistics.median(times):.1f} ms, p90 {q[89]:.1f} ms, p99 {q[98]:.1f} ms, max {max(times):.1f} ms "
          f"(target p50 <= 20 ms)")
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--commands", type=int, default=300)
    parser.add_argument("--no-nodelay", action="store_true", help="leave Nagle's algorithm on (comparison)")
    args = parser.parse_args()
    run(args.commands, not args.no_nodelay)
    return 0


if __name__ == "__main__":
    sys.exit(main())
