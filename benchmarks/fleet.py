"""A fleet of lots against one mosquitto, with the reference cloud consumer (docs/fleet.md).

    PYTHONPATH=. python benchmarks/fleet.py --lots 500 --restart-at 30      # the target run
    PYTHONPATH=. python benchmarks/fleet.py --lots 50 --duration 30 --restart-at 15 --mode shared

* mosquitto with examples/cloud_consumer/mosquitto.conf (persistence in a temp dir);
* N lots, each the REAL edge (own SQLite database, outbox, paho connection, shipped reconnect
  settings), ``--lots-per-process`` of them per process (benchmarks/fleet_lots.py);
* ``--consumers`` consumer processes (``python -m examples.cloud_consumer``) sharing one store,
  ``partitioned`` (non-shared persistent sessions, lots split by hash) or ``shared`` ($share group);
* a command sender paying open sessions (``--commands-per-s``), resending unanswered ones (same id);
* ``--restart-at S``: the broker is stopped (SIGTERM: it saves its database) and started again
  ``--restart-down-s`` later, S seconds into the traffic.

After the traffic, it waits until every lot's outbox is acknowledged and the store holds what the lots
sent, then compares the store with every lot's outbox (the ground truth: the edge keeps sent rows for a
day): lost, duplicated after dedupe, and whether gap detection saw exactly the lost ones.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from examples.cloud_consumer import CommandSender, ConsumerStore  # noqa: E402
from tests.broker import Mosquitto  # noqa: E402
from tests.fleet import lot_secret, published_messages  # noqa: E402

BROKER_CONF = REPO / "examples" / "cloud_consumer" / "mosquitto.conf"


class FleetBroker(Mosquitto):
    """mosquitto with the documented fleet settings; only the listener, log and persistence dir are ours."""

    def _write_config(self) -> None:
        documented = [line for line in BROKER_CONF.read_text(encoding="utf-8").splitlines()
                      if line.strip() and not line.lstrip().startswith("#")
                      and not line.startswith("persistence_location")]
        store = self.workdir / "persist"
        store.mkdir(exist_ok=True)
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", f"persistence_location {store}/",
                 f"log_dest file {self.log_path}", "log_type error", "log_type warning", "log_type notice",
                 *documented]
        if os.geteuid() == 0:
            lines.append("user root")
        self.config_path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _popen(cmd: list[str], log: Path, **kw: Any) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env, cwd=REPO, **kw)


class Commander(threading.Thread):
    """Pays open sessions of random lots at a steady rate; resends what got no reply (same id)."""

    def __init__(self, store: ConsumerStore, sender: CommandSender, *, rate: float, seed: int) -> None:
        super().__init__(daemon=True)
        self.store, self.sender, self.rate = store, sender, rate
        self.rng = random.Random(seed)
        self.inside: dict[str, dict[int, None]] = {}
        self._cursor = 0
        self.stop = threading.Event()

    def _follow(self) -> None:
        rows = self.store.rows("SELECT rowid, lot, topic, json_extract(payload, '$.session_id') FROM messages "
                               "WHERE rowid > ? AND kind = 'event' ORDER BY rowid", (self._cursor,))
        for rowid, lot, topic, session in rows:
            self._cursor = rowid
            if topic == "events/entry":
                self.inside.setdefault(lot, {})[session] = None
            elif topic == "events/exit":
                self.inside.get(lot, {}).pop(session, None)

    def run(self) -> None:
        next_send, next_resend = time.monotonic(), time.monotonic() + 5
        while not self.stop.wait(max(0.0, next_send - time.monotonic())):
            next_send += 1.0 / self.rate
            self._follow()
            lots = [lot for lot, sessions in self.inside.items() if sessions]
            if lots:
                lot = self.rng.choice(lots)
                session = next(reversed(self.inside[lot]))  # the newest: the lot lets the oldest leave first
                self.sender.send(lot, "payment", {"session_id": session, "amount": 100,
                                                  "reference": f"bench-{self.sender.sent}"})
            if time.monotonic() >= next_resend:
                next_resend = time.monotonic() + 5
                self.sender.resend_unanswered(older_than_s=10)


class Fleet:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args, self.work = args, work
        self.lots = [f"lot-{i:04d}" for i in range(args.lots)]
        self.broker = FleetBroker(work / "mosquitto")
        self.db = work / "cloud.db"
        self.consumers: list[subprocess.Popen[bytes]] = []
        self.workers: list[subprocess.Popen[bytes]] = []
        self.marks: dict[str, float] = {}

    # -- processes -------------------------------------------------------------------------

    def start(self) -> None:
        self.broker.start()
        lots_file = self.work / "lots.txt"
        lots_file.write_text("\n".join(self.lots) + "\n", encoding="utf-8")
        for i in range(self.args.consumers):
            who = (["--partition", f"{i}/{self.args.consumers}"] if self.args.mode == "partitioned"
                   else ["--client-id", f"cloud-{i}"])
            self.consumers.append(_popen(
                [sys.executable, "-m", "examples.cloud_consumer", "--db", str(self.db), "--host", self.broker.host,
                 "--port", str(self.broker.port), "--mode", self.args.mode, "--lots-file", str(lots_file), *who],
                self.work / f"consumer-{i}.log"))
        per = self.args.lots_per_process
        for index, start in enumerate(range(0, len(self.lots), per)):
            self.workers.append(_popen(
                [sys.executable, str(REPO / "benchmarks" / "fleet_lots.py"), "--dir", str(self.work), "--index",
                 str(index), "--host", self.broker.host, "--port", str(self.broker.port), "--lots",
                 ",".join(self.lots[start:start + per]), "--rate", str(self.args.rate), "--duration",
                 str(self.args.duration), "--seed", str(index)],
                self.work / f"lots-{index}.log", stdin=subprocess.PIPE))

    def status(self) -> list[dict[str, Any]]:
        out = []
        for index in range(len(self.workers)):
            try:
                out.append(json.loads((self.work / f"status-{index}.json").read_text(encoding="utf-8")))
            except (OSError, ValueError):
                out.append({"lots": 0, "connected": 0, "pending": -1, "vehicles": 0, "errors": 0})
        return out

    def connected(self) -> int:
        return sum(s["connected"] for s in self.status())

    def tell(self, line: str) -> None:
        for worker in self.workers:
            if worker.stdin is not None and worker.poll() is None:
                worker.stdin.write(line.encode() + b"\n")
                worker.stdin.flush()

    def stop(self) -> None:
        try:
            self.tell("stop")
        except (BrokenPipeError, OSError):
            pass  # a worker that died already: its log says why
        for worker in self.workers:
            try:
                worker.wait(120)
            except subprocess.TimeoutExpired:
                worker.kill()
        for consumer in self.consumers:
            consumer.send_signal(signal.SIGTERM)
        for consumer in self.consumers:
            try:
                consumer.wait(60)
            except subprocess.TimeoutExpired:
                consumer.kill()
        self.broker.close()

    # -- the run ---------------------------------------------------------------------------

    def wait_for(self, check: Any, what: str, timeout: float) -> float:
        start = time.monotonic()
        while not check():
            if time.monotonic() - start > timeout:
                raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(0.2)
        return time.monotonic() - start

    def run(self) -> dict[str, Any]:
        args = self.args
        self.start()
        with ConsumerStore(self.db, consumer="benchmark") as store:
            self.wait_for(lambda: len(store.subscribed()) == args.consumers, "the consumers", 120)
            took = self.wait_for(lambda: self.connected() == len(self.lots), "every lot connected", 300)
            print(f"{len(self.lots)} lots in {len(self.workers)} processes connected in {took:.1f} s; "
                  f"{args.consumers} {args.mode} consumers", flush=True)
            go_at = time.time() + 1.0
            self.marks["go"] = go_at
            self.tell(f"go {go_at}")
            with CommandSender(store, host=self.broker.host, port=self.broker.port, client_id="cloud-commands",
                               secret_for=lot_secret) as sender:
                commander = Commander(store, sender, rate=args.commands_per_s, seed=1)
                time.sleep(max(0.0, go_at - time.time()))
                commander.start()
                if args.restart_at:
                    self._restart(go_at + args.restart_at)
                time.sleep(max(0.0, go_at + args.duration - time.time()))
                commander.stop.set()
                commander.join()
                self.marks["traffic_end"] = time.time()
                print("traffic over; waiting for the outboxes and the store", flush=True)
                drained = self.wait_for(lambda: all(s.get("traffic_done") for s in self.status())
                                        and self.connected() == len(self.lots)
                                        and all(s["pending"] == 0 for s in self.status()),
                                        "every outbox acknowledged", args.drain_timeout)
                self.marks["outboxes_empty"] = time.time()
                truth = self.ground_truth()
                settled = self._settle(store, truth)
                self.wait_for(lambda: sender.resend_unanswered(older_than_s=10) == 0 and not store.unanswered(
                    older_than_s=0), "a reply to every command", args.drain_timeout)
            report = self.report(store, truth, drained=drained, settled=settled)
        return report

    def _restart(self, at: float) -> None:
        time.sleep(max(0.0, at - time.time()))
        self.marks["broker_stop"] = time.time()
        print(f"restarting the broker ({self.connected()} lots connected)", flush=True)
        self.broker.stop()
        self.marks["broker_stopped"] = time.time()
        time.sleep(self.args.restart_down_s)
        self.broker.start()
        self.marks["broker_up"] = time.time()
        took = self.wait_for(lambda: self.connected() == len(self.lots), "every lot back", 120)
        self.marks["all_back"] = time.time()
        print(f"broker back after {self.marks['broker_up'] - self.marks['broker_stop']:.1f} s; every lot "
              f"reconnected within {took:.1f} s of it", flush=True)

    def ground_truth(self) -> set[tuple[str, int, str]]:
        return {(lot, seq, msg_id) for lot in self.lots
                for seq, msg_id, _ in published_messages(self.work / "lots" / lot / "gatekeeper.db")}

    def _settle(self, store: ConsumerStore, truth: set[tuple[str, int, str]]) -> float:
        """Wait until the store holds every message the lots sent, or nothing new arrives for 20 s."""
        start = last_change = time.monotonic()
        last = -1
        while True:
            count = store.rows("SELECT COUNT(*) FROM messages WHERE seq IS NOT NULL")[0][0]
            if count >= len(truth) and self._stored(store) >= truth:
                return time.monotonic() - start
            if count != last:
                last, last_change = count, time.monotonic()
            if time.monotonic() - last_change > 20:
                return time.monotonic() - start
            time.sleep(0.5)

    @staticmethod
    def _stored(store: ConsumerStore) -> set[tuple[str, int, str]]:
        return set(store.rows("SELECT lot, seq, msg_id FROM messages WHERE seq IS NOT NULL"))

    # -- figures ---------------------------------------------------------------------------

    def report(self, store: ConsumerStore, truth: set[tuple[str, int, str]], *, drained: float,
               settled: float) -> dict[str, Any]:
        stored = self._stored(store)
        lost = truth - stored
        rows, distinct = store.rows("SELECT COUNT(*), COUNT(DISTINCT lot || '/' || msg_id || '/' || seq) "
                                    "FROM messages WHERE seq IS NOT NULL")[0]
        events, distinct_events = store.rows("SELECT COUNT(*), COUNT(DISTINCT msg_id) FROM messages "
                                             "WHERE kind = 'event'")[0]
        gap_seqs = {(g.lot, s) for g in store.gaps(limit=1_000_000) for s in g.missing}
        counters = store.counters()
        consumers = {c: v for c, v in counters.items() if c != "benchmark"}
        deliveries = sum(v.get("deliveries", 0) for v in consumers.values())
        duplicates = sum(v.get("duplicates", 0) for v in consumers.values())
        batches = sum(v.get("batches", 0) for v in consumers.values())
        go, end = self.marks["go"], self.marks["traffic_end"]
        during = store.rows("SELECT COUNT(*) FROM messages WHERE received_at BETWEEN ? AND ?", (go, end))[0][0]
        per_second = [r[0] for r in store.rows(
            "SELECT COUNT(*) FROM messages WHERE received_at >= ? GROUP BY CAST(received_at - ? AS INTEGER)",
            (go, go))]
        commands = store.rows("SELECT sent_at, reply_at, attempts, reply_status FROM commands")
        latency = self._latency(commands)
        dropped_lines = self.broker.log_text().count("being dropped")
        vehicles = sum(s["vehicles"] for s in self.status())
        worker_errors = sum(s["errors"] for s in self.status())
        report = {
            "lots": len(self.lots), "processes": len(self.workers), "consumers": self.args.consumers,
            "mode": self.args.mode, "duration_s": self.args.duration, "rate": self.args.rate,
            "restart": {k: round(v - go, 2) for k, v in self.marks.items() if k != "go"},
            "vehicles": vehicles, "vehicle_errors": worker_errors, "messages_sent": len(truth),
            "events_stored": events, "messages_stored": len(stored), "lost": len(lost),
            "lost_sample": sorted(lost)[:10], "duplicates_after_dedupe": (rows - distinct) + (events - distinct_events),
            "gap_detection_matches_lost": gap_seqs == {(lot, seq) for lot, seq, _ in lost},
            "open_gap_seqs": len(gap_seqs), "deliveries": deliveries, "duplicate_deliveries_deduped": duplicates,
            "mean_batch": round(deliveries / batches, 1) if batches else 0,
            "per_consumer": {c: v.get("stored", 0) for c, v in consumers.items()},
            "throughput_msgs_per_s": round(during / (end - go), 1), "peak_msgs_per_s": max(per_second, default=0),
            "outboxes_empty_after_traffic_s": round(drained, 1), "store_complete_after_s": round(settled, 1),
            "broker_log_dropped_lines": dropped_lines, "commands": latency,
        }
        return report

    def _latency(self, commands: list[tuple[Any, ...]]) -> dict[str, Any]:
        stop, back = self.marks.get("broker_stop"), self.marks.get("all_back")
        answered = [(sent, reply - sent, attempts, status) for sent, reply, attempts, status in commands
                    if reply is not None]

        def quantiles(values: list[float]) -> dict[str, float]:
            if len(values) < 2:
                return {}
            q = statistics.quantiles(values, n=100)
            return {"p50_ms": round(statistics.median(values) * 1000, 1), "p95_ms": round(q[94] * 1000, 1),
                    "max_ms": round(max(values) * 1000, 1), "n": len(values)}

        steady = [lat for sent, lat, _, _ in answered if stop is None or not (stop - 1 <= sent <= (back or stop) + 2)]
        return {"sent": len(commands), "answered": len(answered),
                "ok": sum(1 for *_, status in answered if status == "ok"),
                "resent": sum(1 for c in commands if c[2] > 1),
                "all": quantiles([lat for _, lat, _, _ in answered]), "steady": quantiles(steady)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lots", type=int, default=500)
    parser.add_argument("--lots-per-process", type=int, default=50)
    parser.add_argument("--consumers", type=int, default=2)
    parser.add_argument("--mode", choices=("partitioned", "shared"), default="partitioned")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of traffic")
    parser.add_argument("--rate", type=float, default=0.2, help="vehicles per lot per second")
    parser.add_argument("--commands-per-s", type=float, default=5.0)
    parser.add_argument("--restart-at", type=float, default=0.0, help="restart the broker this many seconds in")
    parser.add_argument("--restart-down-s", type=float, default=2.0)
    parser.add_argument("--drain-timeout", type=float, default=300.0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (databases, logs)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fleet-"))
    fleet = Fleet(args, work)
    try:
        report = fleet.run()
    finally:
        fleet.stop()
    tracebacks = sum(p.read_text(errors="replace").count("Traceback") for p in work.glob("*.log"))
    report["tracebacks_in_logs"] = tracebacks
    print(json.dumps(report, indent=2))
    print(f"\n{report['lots']} lots ({report['mode']}, {report['consumers']} consumers), {report['vehicles']} vehicles, "
          f"{report['messages_sent']} messages: lost {report['lost']}, duplicates after dedupe "
          f"{report['duplicates_after_dedupe']} ({report['duplicate_deliveries_deduped']} duplicate deliveries "
          f"deduped), gap detection = lost: {report['gap_detection_matches_lost']}; "
          f"{report['throughput_msgs_per_s']} msgs/s (peak {report['peak_msgs_per_s']}/s); replies "
          f"steady {report['commands']['steady']}, all {report['commands']['all']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")
    if args.keep:
        print(f"work directory kept: {work}")
    else:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0 if report["lost"] == 0 and report["duplicates_after_dedupe"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
