"""Outbox drain to a local mosquitto: events/s, and the time to drain a backlog after an outage.

    python benchmarks/outbox.py [--events 10000] [--broker-inflight 20] [--outage-s 20] [--trials 3]

Two figures, both against a real mosquitto started here on a loopback port, a real SQLite
file (WAL, synchronous=FULL) and a persistent QoS 1 subscriber standing in for the cloud:

1. drain rate: the sync is connected; N events are committed at once; time from wake()
   until every row is acknowledged and marked sent (and until the subscriber has them all).
2. outage: the broker is down for ``--outage-s`` while N events are made; time from the broker's
   start until the sync is connected again (the jittered reconnect backoff, with the shipped
   defaults reconnect_min_s = 0.5 s, reconnect_max_s = 5 s) and until the outbox is empty.
   Repeated ``--trials`` times (the wait is random: full jitter); target: empty <= 10 s.

``--broker-inflight`` sets mosquitto's max_inflight_messages, which it announces as its
MQTT 5 Receive Maximum; the sync's window is min(mqtt.max_inflight, that - 4).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gatekeeper.store import Store  # noqa: E402
from gatekeeper.sync import CloudSync  # noqa: E402
from tests.broker import LOT, Mosquitto, Subscriber, sync_settings  # noqa: E402


def wait_for(check, timeout: float = 600.0) -> float:  # type: ignore[no-untyped-def]
    """Seconds until check() holds (polled every 5 ms: the figure's resolution)."""
    start = time.perf_counter()
    waiter = threading.Event()
    while not check():
        if time.perf_counter() - start > timeout:
            raise TimeoutError("benchmark did not finish")
        waiter.wait(0.005)
    return time.perf_counter() - start


def make_backlog(store: Store, n: int) -> None:
    with store.transaction():
        for i in range(n):
            store.record_event("alarm", lane="exit-1", reason=f"bench_{i}", plate="B AB 123",
                               data={"fee_due": 250, "currency": "EUR", "image": f"{LOT}/p{i}.jpg"})


def received_count(sub: Subscriber, seen: set[str]) -> int:
    for msg in sub.drain():
        if "/events/" in msg.topic:
            seen.add(msg.json()["id"])
    return len(seen)


def run(events: int, broker_inflight: int, max_inflight: int, *, outage_s: float = 20.0, trials: int = 3,
        reconnect_min_s: float = 0.5, reconnect_max_s: float = 5.0) -> dict[str, float]:
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        broker = Mosquitto(tmp / "mosquitto", extra_config=(f"max_inflight_messages {broker_inflight}",)).start()
        try:
            settings = sync_settings(broker, tmp / "data", max_inflight=max_inflight,
                                     reconnect_min_s=reconnect_min_s, reconnect_max_s=reconnect_max_s)
            with Store.from_settings(settings) as store:
                cloud = Subscriber(broker, f"gatekeeper/{LOT}/events/#", persistent=True, client_id="bench-cloud")
                sync = CloudSync(settings, store).start()
                try:
                    wait_for(lambda: sync.connected, 30)
                    window = sync.pump.window

                    # 1. drain rate, connected
                    make_backlog(store, events)
                    seen: set[str] = set()
                    start = time.perf_counter()
                    sync.wake()
                    acked_s = wait_for(lambda: not store.outbox_pending(limit=1))
                    got_s = wait_for(lambda: received_count(cloud, seen) >= events) + acked_s
                    rate = events / acked_s
                    print(f"drain (connected): {events} events marked sent in {acked_s:.2f} s = {rate:,.0f} events/s; "
                          f"subscriber had all after {time.perf_counter() - start:.2f} s (window {window})")

                    # 2. outage backlog, ``trials`` times
                    results = []
                    for trial in range(1, trials + 1):
                        broker.stop()
                        wait_for(lambda: not sync.connected, 30)
                        t_down = time.perf_counter()
                        for _ in range(events // 1000):
                            make_backlog(store, 1000)
                            sync.wake()
                        make_s = time.perf_counter() - t_down
                        waiter = threading.Event()
                        waiter.wait(max(0.0, outage_s - (time.perf_counter() - t_down)))  # the outage itself
                        seen = set()
                        broker.start()
                        start = time.perf_counter()
                        connected_s = wait_for(lambda: sync.connected)
                        drained_s = wait_for(lambda: not store.outbox_pending(limit=1)) + connected_s
                        all_s = wait_for(lambda: received_count(cloud, seen) >= events) + drained_s
                        results.append(drained_s)
                        print(f"outage {trial}: {events} events made during a {outage_s:.0f} s outage ({make_s:.2f} s "
                              f"to commit); broker back -> reconnected {connected_s:.2f} s, outbox empty "
                              f"{drained_s:.2f} s, subscriber complete {all_s:.2f} s")
                    print(f"outage: outbox empty after the broker returned: max {max(results):.2f} s over "
                          f"{trials} trials (target <= 10 s)")
                    return {"window": window, "rate": rate, "drain_s": acked_s, "outage_drain_s": max(results),
                            "subscriber_s": got_s}
                finally:
                    sync.close()
                    cloud.close()
        finally:
            broker.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--broker-inflight", type=int, default=20, help="mosquitto max_inflight_messages (its default: 20)")
    parser.add_argument("--max-inflight", type=int, default=100, help="mqtt.max_inflight")
    parser.add_argument("--outage-s", type=float, default=20.0, help="how long the broker is down")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--reconnect-min-s", type=float, default=0.5)
    parser.add_argument("--reconnect-max-s", type=float, default=5.0)
    args = parser.parse_args()
    run(args.events, args.broker_inflight, args.max_inflight, outage_s=args.outage_s, trials=args.trials,
        reconnect_min_s=args.reconnect_min_s, reconnect_max_s=args.reconnect_max_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
