"""One process of simulated lots for benchmarks/fleet.py (run by it, not by hand).

    python benchmarks/fleet_lots.py --dir D --host H --port P --rate R --duration S --lots lot-0000,lot-0001,...

Each lot is the real edge: its own SQLite database, outbox and paho connection (``CloudSync``), with
the shipped reconnect settings (full jitter 0.5 s .. 5 s). Commands on stdin: ``go <epoch>`` starts the
traffic at that time (each lot: a vehicle with probability ``rate`` per second, entries and exits) for
``duration`` seconds; ``stop`` closes every lot and exits. Every second ``status-<index>.json`` says
how many lots are connected and how many outbox rows wait for a PUBACK.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fleet import SimLot  # noqa: E402


class LotProcess:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.status_path = Path(args.dir) / f"status-{args.index}.json"
        self.sims = [SimLot(lot=lot, data_dir=Path(args.dir) / "lots" / lot, host=args.host, port=args.port,
                            reconnect_min_s=0.5, reconnect_max_s=5.0) for lot in args.lots.split(",")]
        self.vehicles = 0
        self.errors = 0
        self.traffic_done = False
        self._stop = threading.Event()

    def run(self) -> None:
        for sim in self.sims:
            sim.start()
        reporter = threading.Thread(target=self._report_loop, daemon=True)
        reporter.start()
        traffic: threading.Thread | None = None
        for line in sys.stdin:
            word, *rest = line.split()
            if word == "go" and traffic is None:
                traffic = threading.Thread(target=self._traffic, args=(float(rest[0]),), daemon=True)
                traffic.start()
            elif word == "stop":
                break
        self._stop.set()
        if traffic is not None:
            traffic.join()
        for sim in self.sims:
            sim.close()
        self._write_status(closed=True)

    def _traffic(self, go_at: float) -> None:
        rng = random.Random(self.args.seed)
        tick = 0.1
        time.sleep(max(0.0, go_at - time.time()))
        end = go_at + self.args.duration
        next_tick = go_at
        while not self._stop.is_set() and time.time() < end:
            for sim in self.sims:
                if rng.random() < self.args.rate * tick:
                    try:
                        sim.step(rng)
                        self.vehicles += 1
                    except Exception:  # noqa: BLE001 - counted and reported, the run goes on
                        self.errors += 1
                        logging.exception("lot %s could not record a vehicle", sim.lot)
            next_tick += tick
            self._stop.wait(max(0.0, next_tick - time.time()))
        self.traffic_done = True

    def _report_loop(self) -> None:
        while not self._stop.wait(1.0):
            self._write_status()

    def _write_status(self, *, closed: bool = False) -> None:
        try:
            pending = sum(sim.pending() for sim in self.sims)
        except Exception:  # noqa: BLE001 - a closed store at shutdown
            pending = -1
        status = {"lots": len(self.sims), "connected": sum(1 for s in self.sims if s.sync.connected),
                  "pending": pending, "vehicles": self.vehicles, "errors": self.errors,
                  "traffic_done": self.traffic_done, "closed": closed, "at": time.time()}
        tmp = self.status_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(status), encoding="utf-8")
        os.replace(tmp, self.status_path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", required=True)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--lots", required=True, help="comma-separated lot ids")
    parser.add_argument("--rate", type=float, required=True, help="vehicles per lot per second")
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    LotProcess(args).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
