"""Command reply latency on loopback: a signed payment published by the cloud -> its reply received.

    python benchmarks/replies.py [--commands 300] [--no-nodelay] [--broker stock|nodelay|both]

A real mosquitto on a loopback port, a real SQLite file (WAL, synchronous=FULL), the sync as the
lot runs it: the command, its effect and its reply commit in one transaction, the reply goes up
through the outbox, then the command is acknowledged. One command at a time (the next is sent when
the reply is in), so each figure is one full round trip. ``--no-nodelay`` leaves Nagle's algorithm
on the edge's socket for comparison. Target: p50 <= 20 ms.

The broker's own sockets matter as much as the edge's: stock mosquitto leaves Nagle's algorithm on
its side (``set_tcp_nodelay false``), so its PUBACK to the cloud holds the reply that follows it
until the cloud's delayed ACK (~40 ms): the edge cannot remove that leg; the broker
(``set_tcp_nodelay true``) or the cloud client (TCP_QUICKACK after each read, as the edge does for
the broker's packets to it) can. ``--broker both`` (default) measures stock mosquitto with a plain
and with a quick-ACKing cloud client, and mosquitto with ``set_tcp_nodelay true``.
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


def run(commands: int, nodelay: bool, broker_config: tuple[str, ...] = (), cloud_quickack: bool = False) -> list[float]:
    logging.basicConfig(level=logging.WARNING)
    if not nodelay:
        paho_transport._no_delay = lambda *a: None  # type: ignore[assignment]
    base = f"gatekeeper/{LOT}"
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        broker = Mosquitto(tmp / "mosquitto", extra_config=broker_config).start()
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
                if cloud_quickack:  # and it ACKs at once what it read (as the edge does)
                    plain_read = cloud.client.loop_read

                    def quick_read(max_packets: int = 1):  # type: ignore[no-untyped-def]
                        rc = plain_read(max_packets)
                        paho_transport._quick_ack(cloud.client.socket())
                        return rc

                    cloud.client.loop_read = quick_read  # type: ignore[method-assign]
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
    broker_name = "mosquitto set_tcp_nodelay true" if "set_tcp_nodelay true" in broker_config else "stock mosquitto"
    cloud_name = "cloud client with TCP_QUICKACK" if cloud_quickack else "plain paho cloud client"
    print(f"reply latency over {commands} payments (edge {'TCP_NODELAY' if nodelay else 'Nagle on'}, {broker_name}, "
          f"{cloud_name}): "
          f"p50 {statistics.median(times):.1f} ms, p90 {q[89]:.1f} ms, p99 {q[98]:.1f} ms, max {max(times):.1f} ms "
          f"(target p50 <= 20 ms)")
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--commands", type=int, default=300)
    parser.add_argument("--no-nodelay", action="store_true", help="leave Nagle's algorithm on (comparison)")
    parser.add_argument("--broker", choices=("stock", "nodelay", "both"), default="both")
    args = parser.parse_args()
    if args.broker in ("stock", "both"):
        run(args.commands, not args.no_nodelay)
        run(args.commands, not args.no_nodelay, cloud_quickack=True)
    if args.broker in ("nodelay", "both"):
        run(args.commands, not args.no_nodelay, ("set_tcp_nodelay true",))
    return 0


if __name__ == "__main__":
    sys.exit(main())
