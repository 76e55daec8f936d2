"""Trigger-to-relay latency of the simulated lane, and the time from start to READY.

    /work/venv/bin/python benchmarks/lane_latency.py [--vehicles 20] [--json]

1. Start to READY: ``gatekeeper run --sim`` as a subprocess with NOTIFY_SOCKET
   pointing at a datagram socket this script binds (what systemd does); the
   time from spawning the process to ``READY=1`` (models loaded, lanes running).
2. Latency: an in-process simulated daemon (the same code ``run --sim`` runs:
   watch-folder camera, the real plate reader, the rules, the SQLite store,
   gpiozero MockFactory pins). For each vehicle a car photo is renamed into the
   entry watch folder (the trigger: the file "arrives") and the time until the
   relay pin is energised is measured from inside the pin. Plates differ per
   vehicle so the same-vehicle hold-off never suppresses one. Between vehicles
   the simulated car passes and the barrier closes.

The figures include the watch folder's polling interval, the file decode, the
plate read, the SQLite commit (synchronous=FULL) and the relay call.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from gpiozero.pins.mock import MockFactory, MockPin

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gatekeeper.config import (  # noqa: E402
    DaemonConfig,
    LaneConfig,
    MqttConfig,
    Settings,
    SiteConfig,
    StorageConfig,
)
from gatekeeper.service.daemon import Daemon  # noqa: E402
from gatekeeper.service.sdnotify import SystemdNotifier  # noqa: E402
from gatekeeper.sim.plates import draw_plate_scene, drop_photo  # noqa: E402

LETTERS = "ABCDEFGHJKLMNPRSTUXYZ"  # W and look-alikes (I, O, Q) left out: plates differ by more than OCR slips
DIGITS = "0123456789"


def plates(n: int, seed: int = 7) -> list[str]:
    rng = np.random.default_rng(seed)
    out: list[str] = []
    while len(out) < n:
        p = "".join(rng.choice(list(LETTERS), 2)) + "".join(rng.choice(list(DIGITS), 3)) + "".join(
            rng.choice(list(LETTERS), 2))
        if p not in out:
            out.append(p)
    return out


# --------------------------------------------------------------------------- start to READY


def time_to_ready(workdir: Path, timeout: float = 300.0) -> dict[str, float]:
    config = workdir / "ready.toml"
    config.write_text(
        "[site]\ncapacity = 50\n"
        '[[lanes]]\nid = "entry-1"\ndirection = "entry"\ncamera = "dir:ready/cameras/entry-1"\n'
        "relay_pin = 17\nsafety_pins = [27]\n"
        '[[lanes]]\nid = "exit-1"\ndirection = "exit"\ncamera = "dir:ready/cameras/exit-1"\n'
        "relay_pin = 22\nsafety_pins = [23]\n"
        '[mqtt]\nenabled = false\n[storage]\ndata_dir = "ready/data"\n'
        f'[daemon]\ncontrol_socket = "{workdir / "ready.sock"}"\nsocket_group = ""\n',
        encoding="utf-8",
    )
    notify_path = workdir / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify_path))
    env = {**os.environ, "NOTIFY_SOCKET": str(notify_path)}
    env.pop("WATCHDOG_USEC", None)
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gatekeeper.cli", "--config", str(config), "run", "--sim"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=workdir,
    )
    ready = None
    try:
        sock.settimeout(timeout)
        while ready is None:
            message = sock.recv(65536).decode()
            if "READY=1" in message.splitlines():
                ready = time.monotonic() - t0
        t1 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        stop = time.monotonic() - t1
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()
    return {"start_to_ready_s": ready, "sigterm_to_exit_s": stop, "exit_code": float(code)}


# --------------------------------------------------------------------------- latency


class TimedRelayPin(MockPin):
    """Reports the instant an output pin goes high (the relay coil energised)."""

    energised: "queue.Queue[tuple[str, float]]" = queue.Queue()

    def _change_state(self, value: bool) -> bool:  # type: ignore[override]
        if value and self._function == "output" and not self._state:
            TimedRelayPin.energised.put((str(self.info.name), time.monotonic()))
        return super()._change_state(value)


def lane_latency(workdir: Path, vehicles: int) -> dict[str, Any]:
    entry_dir = workdir / "cameras" / "entry-1"
    settings = Settings(
        site=SiteConfig(capacity=vehicles + 10),
        lanes=[
            LaneConfig(id="entry-1", direction="entry", camera=f"dir:{entry_dir}", relay_pin=17,
                       safety_pins=[27], pulse_ms=100, open_time_s=0.2, close_timeout_s=30),
        ],
        storage=StorageConfig(data_dir=workdir / "data"),
        mqtt=MqttConfig(enabled=False),
        daemon=DaemonConfig(socket_group=None),
    )
    factory = MockFactory(pin_class=TimedRelayPin)
    daemon = Daemon(settings, sim=True, pin_factory=factory, control_socket=False,
                    notifier=SystemdNotifier(environ={}))
    t0 = time.monotonic()
    runner = threading.Thread(target=daemon.run, daemon=True)
    runner.start()
    if not daemon.ready.wait(300):
        raise SystemExit("daemon did not become ready")
    load_s = time.monotonic() - t0
    lane = daemon.lanes["entry-1"]
    decided: "queue.Queue[tuple[str, Any]]" = queue.Queue()
    lane.add_vehicle_listener(lambda kind, outcome: decided.put((kind, outcome)))
    # Drawn as EU plates are printed ("AB-123-CD"); the reader normalises to "AB123CD".
    images = {
        p: draw_plate_scene(f"{p[:2]}-{p[2:5]}-{p[5:]}", seed=i) for i, p in enumerate(plates(vehicles))
    }
    latencies: list[float] = []
    misses: list[str] = []
    misread = 0
    for i, (plate, image) in enumerate(images.items()):
        while not TimedRelayPin.energised.empty():
            TimedRelayPin.energised.get_nowait()
        drop_photo(entry_dir, f"car{i}", image, quality=92)  # encoded, written, renamed in: it has arrived
        arrived = time.monotonic()
        try:
            _, at = TimedRelayPin.energised.get(timeout=60)
        except queue.Empty:
            misses.append(plate)
            continue
        latencies.append((at - arrived) * 1000)
        kind, outcome = decided.get(timeout=30)
        if outcome is None or outcome.plate != plate:
            misread += 1
        # The simulated car passes and the boom comes down before the next one arrives.
        lane.barrier.wait_for_state("open", 30)
        lane.barrier.wait_for_state("closed", 30)
    daemon.request_stop()
    runner.join(60)
    latencies.sort()
    p95 = latencies[max(0, int(round(0.95 * len(latencies))) - 1)] if latencies else float("nan")
    return {
        "vehicles": vehicles,
        "opened": len(latencies),
        "no_open": len(misses),
        "misread_but_opened": misread,
        "median_ms": statistics.median(latencies) if latencies else float("nan"),
        "p95_ms": p95,
        "min_ms": latencies[0] if latencies else float("nan"),
        "max_ms": latencies[-1] if latencies else float("nan"),
        "in_process_start_to_ready_s": load_s,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vehicles", type=int, default=20)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--skip-ready", action="store_true", help="only the latency part")
    args = parser.parse_args()
    import logging

    logging.basicConfig(level=os.environ.get("GK_LOG", "WARNING"), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="gk-bench-") as tmp:
        work = Path(tmp)
        ready = {} if args.skip_ready else time_to_ready(work)
        latency = lane_latency(work, args.vehicles)
    result = {**ready, **latency, "cpus": os.cpu_count()}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"simulated lane, {latency['vehicles']} vehicles on {os.cpu_count()} CPUs")
    print(f"  trigger -> relay  median {latency['median_ms']:.0f} ms, p95 {latency['p95_ms']:.0f} ms "
          f"(min {latency['min_ms']:.0f}, max {latency['max_ms']:.0f}); "
          f"opened {latency['opened']}/{latency['vehicles']}, misread {latency['misread_but_opened']}")
    if ready:
        print(f"  start -> READY=1  {ready['start_to_ready_s']:.1f} s (gatekeeper run --sim subprocess); "
              f"SIGTERM -> exit {ready['sigterm_to_exit_s']:.1f} s, code {ready['exit_code']:.0f}")
    print(f"  in-process start -> ready {latency['in_process_start_to_ready_s']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
