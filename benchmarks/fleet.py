"""A fleet of lots against one mosquitto, with the reference cloud consumer (docs/fleet.md).

    PYTHONPATH=. python benchmarks/fleet.py --lots 500 --restart-at 30      # the target
    PYTHONPATH=. python benchmarks/fleet.py --lots 50 --duration 30 --restart-at 15 --mode shared

* mosquitto with examples/cloud_consumer/mosquitto.conf (persistence in a temp dir);
* N lots, each the REAL edge (own SQLite database, outbox, paho connection, shipped reconnect
  settings), ``--lots-per-process`` of them per process (benchmarks/fleet_lots.py);
* ``--consumers`` consumer processes (``python -m examples.cloud_consumer``) sharing one store,
  ``partitioned`` (non-shared persistent sessions, lots split by hash) or ``shared`` ($share group);
* a command sender paying open sessions (``--commands-per-s``), resending unanswered ones (same id);
* ``--restart-at S``: the broker is stopped (SIGTERM: it saves its database) and started again
  ``--restart-down-s`` later, S seconds into the traffic;
* ``--consumer-outage-at S``: every consumer is killed (or ``--consumer-outage-signal term``) and starts
  again ``--consumer-outage-s`` later: the broker queues for their sessions (``max_queued_messages``;
  compare ``--broker-option 'max_queued_messages 1000'``);
* ``--kill-lots-at S``: the first process of lots is SIGKILLed (a power cut) and started again: its
  lots send again what they had recorded no PUBACK for (duplicates for the consumers to drop).

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
import sqlite3
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
    """mosquitto with the documented fleet settings; only the listener, log and persistence dir are ours
    (``overrides``: lines that replace the documented line with the same option, for comparisons)."""

    def __init__(self, workdir: Path, *, overrides: tuple[str, ...] = ()) -> None:
        self.overrides = overrides
        super().__init__(workdir)

    def _write_config(self) -> None:
        replaced = {line.split()[0] for line in self.overrides} | {"persistence_location"}
        documented = [line for line in BROKER_CONF.read_text(encoding="utf-8").splitlines()
                      if line.strip() and not line.lstrip().startswith("#") and line.split()[0] not in replaced]
        documented += list(self.overrides)
        store = self.workdir / "persist"
        store.mkdir(exist_ok=True)
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", f"persistence_location {store}/",
                 f"log_dest file {self.log_path}", "log_type error", "log_type warning", "log_type notice",
                 *documented]
        if os.geteuid() == 0:
            lines.append("user root")
        self.config_path.write_text("\n".join(lines) + "\n", encoding="utf-8")


class ExternalBroker:
    """A broker the benchmark does not run (``--broker host:port``, e.g. an EMQX or HiveMQ cluster)."""

    def __init__(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        self.host, self.port = host or "127.0.0.1", int(port)

    def start(self) -> "ExternalBroker":
        return self

    def stop(self) -> None:
        pass

    def close(self) -> None:
        pass

    def log_text(self) -> str:
        return ""


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
        self.broker: FleetBroker | ExternalBroker = (
            ExternalBroker(args.broker) if args.broker
            else FleetBroker(work / "mosquitto", overrides=tuple(args.broker_option)))
        self.lots_file = work / "lots.txt"
        self.db = work / "cloud.db"
        self.consumers: list[subprocess.Popen[bytes]] = []
        self.workers: list[subprocess.Popen[bytes]] = []
        self.marks: dict[str, float] = {}

    # -- processes -------------------------------------------------------------------------

    def start(self) -> None:
        self.broker.start()
        self.lots_file.write_text("\n".join(self.lots) + "\n", encoding="utf-8")
        self.start_consumers()
        per = self.args.lots_per_process
        self.workers = [self._start_worker(i, self.lots[start:start + per])
                        for i, start in enumerate(range(0, len(self.lots), per))]

    def _start_worker(self, index: int, lots: list[str]) -> subprocess.Popen[bytes]:
        return _popen([sys.executable, str(REPO / "benchmarks" / "fleet_lots.py"), "--dir", str(self.work),
                       "--index", str(index), "--host", self.broker.host, "--port", str(self.broker.port),
                       "--lots", ",".join(lots), "--rate", str(self.args.rate), "--duration",
                       str(self.args.duration), "--seed", str(index)],
                      self.work / f"lots-{index}.log", stdin=subprocess.PIPE)

    def start_consumers(self) -> None:
        for i in range(self.args.consumers):
            who = (["--partition", f"{i}/{self.args.consumers}"] if self.args.mode == "partitioned"
                   else ["--client-id", f"cloud-{i}"])
            self.consumers.append(_popen(
                [sys.executable, "-m", "examples.cloud_consumer", "--db", str(self.db), "--host", self.broker.host,
                 "--port", str(self.broker.port), "--mode", self.args.mode, "--lots-file", str(self.lots_file),
                 *who], self.work / f"consumer-{i}.log"))

    def stop_consumers(self, sig: int = signal.SIGTERM) -> None:
        consumers, self.consumers = self.consumers, []
        for consumer in consumers:
            consumer.send_signal(sig)
        for consumer in consumers:
            try:
                consumer.wait(60)
            except subprocess.TimeoutExpired:
                consumer.kill()

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
        self.stop_consumers()
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
                for at, action in sorted([(args.restart_at, self._restart),
                                          (args.consumer_outage_at, self._consumer_outage),
                                          (args.kill_lots_at, self._kill_lots)], key=lambda x: x[0]):
                    if at:
                        action(go_at + at)
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
                settled = self._settle(store, self.ground_truth())
                self.wait_for(lambda: sender.resend_unanswered(older_than_s=10) == 0 and not store.unanswered(
                    older_than_s=0), "a reply to every command", args.drain_timeout)
            # The lots may still queue (e.g. a once-a-minute summary of refused payments): stop them, then
            # compare the store with everything they recorded as acknowledged by the broker.
            self.tell("stop")
            for worker in self.workers:
                worker.wait(120)
            self.marks["lots_stopped"] = time.time()
            truth = self.ground_truth(sent_only=True)
            self._settle(store, truth)
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

    def _consumer_outage(self, at: float) -> None:
        """Stop every consumer (SIGKILL: a crash, or SIGTERM: a deploy), start them again later: the broker
        queues for their sessions; what a killed consumer had stored but not acknowledged comes again."""
        time.sleep(max(0.0, at - time.time()))
        self.marks["consumers_stop"] = time.time()
        self.stop_consumers(signal.SIGKILL if self.args.consumer_outage_signal == "kill" else signal.SIGTERM)
        print(f"consumers {self.args.consumer_outage_signal}ed, back in {self.args.consumer_outage_s:.0f} s",
              flush=True)
        time.sleep(max(0.0, at + self.args.consumer_outage_s - time.time()))
        self.marks["consumers_back"] = time.time()
        self.start_consumers()

    def _kill_lots(self, at: float) -> None:
        """SIGKILL the first process of lots (a power cut at the edge) and start it again: its lots send
        again what they had no PUBACK recorded for, so the consumers see duplicates."""
        time.sleep(max(0.0, at - time.time()))
        lots = self.lots[:self.args.lots_per_process]
        self.marks["lots_killed"] = time.time()
        self.workers[0].kill()
        self.workers[0].wait()
        (self.work / "status-0.json").unlink(missing_ok=True)
        self.workers[0] = self._start_worker(0, lots)
        self.wait_for(lambda: self.status()[0]["connected"] == len(lots), "the killed lots back", 120)
        worker = self.workers[0]
        assert worker.stdin is not None
        worker.stdin.write(f"go {self.marks['go']}\n".encode())
        worker.stdin.flush()
        self.marks["lots_back"] = time.time()
        print(f"{len(lots)} lots killed and back in {self.marks['lots_back'] - self.marks['lots_killed']:.1f} s",
              flush=True)

    def vehicles(self) -> int:
        total = 0
        for lot in self.lots:
            conn = sqlite3.connect(f"file:{self.work / 'lots' / lot / 'gatekeeper.db'}?mode=ro", uri=True)
            try:
                total += conn.execute("SELECT COUNT(*) FROM events WHERE kind IN ('entry', 'exit')").fetchone()[0]
            finally:
                conn.close()
        return total

    def ground_truth(self, *, sent_only: bool = False) -> set[tuple[str, int, str]]:
        return {(lot, seq, msg_id) for lot in self.lots for seq, msg_id, _ in
                published_messages(self.work / "lots" / lot / "gatekeeper.db", sent_only=sent_only)}

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
        """``truth``: every message the lots recorded as acknowledged by the broker."""
        stored, everything = self._stored(store), self.ground_truth()
        lost = truth - stored
        rows, distinct = store.rows("SELECT COUNT(*), COUNT(DISTINCT lot || '/' || msg_id || '/' || seq) "
                                    "FROM messages WHERE seq IS NOT NULL")[0]
        events, distinct_events = store.rows("SELECT COUNT(*), COUNT(DISTINCT msg_id) FROM messages "
                                             "WHERE kind = 'event'")[0]
        gap_seqs = {(g.lot, s) for g in store.gaps(limit=1_000_000) for s in g.missing}
        consumers = {c: v for c, v in store.counters().items() if c != "benchmark"}

        def total(name: str) -> int:
            return sum(v.get(name, 0) for v in consumers.values())

        go, end = self.marks["go"], self.marks["traffic_end"]
        during = store.rows("SELECT COUNT(*) FROM messages WHERE received_at BETWEEN ? AND ?", (go, end))[0][0]
        per_second = [r[0] for r in store.rows(
            "SELECT COUNT(*) FROM messages WHERE received_at >= ? GROUP BY CAST(received_at - ? AS INTEGER)",
            (go, go))]
        status = self.status()
        return {
            "lots": len(self.lots), "processes": len(self.workers), "consumers": self.args.consumers,
            "mode": self.args.mode, "duration_s": self.args.duration, "rate": self.args.rate,
            "broker_options": self.args.broker_option,
            "timeline_s": {k: round(v - go, 2) for k, v in self.marks.items() if k != "go"},
            "vehicles": self.vehicles(), "vehicle_errors": sum(s["errors"] for s in status),
            "messages_sent": len(truth), "unsent_at_end": len(everything) - len(truth),
            "messages_stored": len(stored), "events_stored": events,
            "mean_payload_bytes": round(store.rows("SELECT AVG(LENGTH(payload)) FROM messages")[0][0] or 0),
            "lost": len(lost), "lost_sample": sorted(lost)[:10], "not_from_any_lot": len(stored - everything),
            "duplicates_after_dedupe": (rows - distinct) + (events - distinct_events),
            "gap_detection_matches_lost": gap_seqs == {(lot, seq) for lot, seq, _ in lost},
            "open_gap_seqs": len(gap_seqs),
            "deliveries": total("deliveries"), "duplicate_deliveries_deduped": total("duplicates"),
            "status_messages": total("status"), "retained_copies": total("retained_copies"),
            "malformed": total("malformed"),
            "mean_batch": round(total("deliveries") / total("batches"), 1) if total("batches") else 0,
            "per_consumer": {c: v.get("stored", 0) for c, v in consumers.items()},
            "throughput_msgs_per_s": round(during / (end - go), 1), "peak_msgs_per_s": max(per_second, default=0),
            "outboxes_empty_after_traffic_s": round(drained, 1), "store_complete_after_s": round(settled, 1),
            "broker_log_dropped_lines": self.broker.log_text().count("being dropped"),
            "lag": self._lag(store),
            "commands": self._latency(store.rows("SELECT sent_at, reply_at, attempts, reply_status FROM commands")),
        }

    def _disturbed(self, moment: float) -> bool:
        """Whether ``moment`` falls in a broker restart or consumer outage (from 1 s before to 5 s after)."""
        windows = [(self.marks[a] - 1, self.marks[b] + 5) for a, b in (("broker_stop", "all_back"),
                   ("consumers_stop", "consumers_back"), ("lots_killed", "lots_back")) if a in self.marks]
        return any(lo <= moment <= hi for lo, hi in windows)

    def _lag(self, store: ConsumerStore) -> dict[str, Any]:
        """Message made at the lot (its ``at``) -> received by a consumer: steady state, and how long after the
        broker (or the consumers) came back everything made before that was in."""
        rows = store.rows("SELECT (julianday(json_extract(payload, '$.at')) - 2440587.5) * 86400.0, received_at "
                          "FROM messages WHERE seq IS NOT NULL AND json_extract(payload, '$.at') IS NOT NULL "
                          "AND json_extract(payload, '$.repeat') IS NOT 1")  # a repeated reply keeps its first at
        out: dict[str, Any] = {}
        steady = [got - made for made, got in rows if not self._disturbed(made)]
        if len(steady) > 1:
            q = statistics.quantiles(steady, n=100)
            out["steady_p50_ms"], out["steady_p95_ms"] = round(q[49] * 1000, 1), round(q[94] * 1000, 1)
        for name, back, stop in (("after_restart", "broker_up", "broker_stop"),
                                 ("after_consumer_outage", "consumers_back", "consumers_stop")):
            if back not in self.marks:
                continue
            before = [(made, got) for made, got in rows if made < self.marks[back]]
            backlog = sum(1 for made, _ in before if made >= self.marks[stop])
            caught_up = max(got for _, got in before) - self.marks[back]
            out[name] = {"backlog_msgs": backlog, "all_in_after_s": round(caught_up, 1),
                         "max_lag_s": round(max(got - made for made, got in before), 1),
                         "drain_msgs_per_s": round(backlog / caught_up, 1) if caught_up > 0 else None}
        return out

    def _latency(self, commands: list[tuple[Any, ...]]) -> dict[str, Any]:
        answered = [(sent, reply - sent, attempts, status) for sent, reply, attempts, status in commands
                    if reply is not None]

        def quantiles(values: list[float]) -> dict[str, float]:
            if len(values) < 2:
                return {}
            q = statistics.quantiles(values, n=100)
            return {"p50_ms": round(statistics.median(values) * 1000, 1), "p95_ms": round(q[94] * 1000, 1),
                    "max_ms": round(max(values) * 1000, 1), "n": len(values)}

        steady = [lat for sent, lat, _, _ in answered if not self._disturbed(sent)]
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
    parser.add_argument("--consumer-outage-at", type=float, default=0.0,
                        help="stop every consumer this many seconds in (a deploy) ...")
    parser.add_argument("--consumer-outage-s", type=float, default=20.0, help="... and start them again after this")
    parser.add_argument("--consumer-outage-signal", choices=("kill", "term"), default="kill")
    parser.add_argument("--kill-lots-at", type=float, default=0.0,
                        help="SIGKILL the first process of lots this many seconds in, and start it again")
    parser.add_argument("--broker-option", action="append", default=[],
                        help="replace a documented broker line, e.g. 'max_queued_messages 1000' (comparisons)")
    parser.add_argument("--drain-timeout", type=float, default=300.0)
    parser.add_argument("--broker", metavar="HOST:PORT", help="use this broker instead of starting mosquitto (no "
                        "--restart-at then; lot ids lot-0000... and client ids gatekeeper-lot-... must be free there)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (databases, logs)")
    args = parser.parse_args()
    if args.broker and (args.restart_at or args.broker_option):
        parser.error("--restart-at and --broker-option need the benchmark's own mosquitto (no --broker)")
    work = Path(tempfile.mkdtemp(prefix="fleet-"))
    fleet = Fleet(args, work)
    try:
        report = fleet.run()
    finally:
        fleet.stop()
    tracebacks = sum(p.read_text(errors="replace").count("Traceback") for p in work.glob("*.log"))
    report["tracebacks_in_logs"] = tracebacks
    print(json.dumps(report, indent=2))
    print(f"\n{report['lots']} lots ({report['mode']}, {report['consumers']} consumers), "
          f"{report['vehicles']} vehicles, "
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
