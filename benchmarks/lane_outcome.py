"""Lane outcome: the share of vehicles that pass entry and exit with no attendant (issue 11, item 7).

    PYTHONPATH=. python benchmarks/lane_outcome.py --data ../shared/bench/plates --out DIR
        [--regions us,eu,br] [--limit N] [--seed 11] [--inside 45] [--threads 1] [--fresh-second]

What a new user would do, with the real daemon: per region, ``gatekeeper run --sim`` runs as a
subprocess on a generated config.toml in a temporary directory (one entry and one exit lane with
watch-folder cameras ``dir:PATH``, ``tariff.free_minutes = 0`` so every exit must be paid, a
capacity no run fills, no MQTT). Every photo of the region enters once through the entry folder.
The lot is first filled to ``--inside`` cars (30-60), then exits and entries alternate: a car
chosen at random among those inside leaves through the exit folder as a seeded perturbed copy of
its own photo (a random mix of blur, exposure/light, scale and crop, re-encoded as JPEG: what a
second camera sees), then the next car enters. Two photos of the same plate are never inside at
once (the bench has a few: the same car photographed twice).

Exit protocol per car: the first exit attempt should ask for payment. Unless it opened, the
benchmark pays the session this car's entry created with ``gatekeeper sessions pay ID`` (the
CLI, as a technician would) and drops the **same** perturbed exit photo again (the car has not
moved; ``--fresh-second`` draws a new perturbation instead). The second attempt should open.

Waiting is event-driven, never a fixed sleep: each photo is followed by a tiny blank "flush"
image in the same folder. Watch folders hand out files oldest first and a lane handles one
frame at a time, so once the lane has taken the flush frame (its ``frames`` counter, from the
control socket's status) everything the photo caused is on disk. The decision events are read
from the daemon's SQLite file, opened read-only. Per attempt a timeout (``--timeout``).

Outcome per vehicle:
- **out without attendant**: the entry opened for this car (a session was started) AND an exit
  attempt opened closing this car's own session;
- **wrong opening**: an exit opened or closed a session that is not this car's, or an entry
  opened under a plate that is the true plate of another car inside;
- otherwise a **failure reason**, the root cause first: entry no-read (no decision at all),
  entry denied, exit no-read (neither exit attempt gave a decision), wrong plate at entry (the
  session's plate is not the car's and the exit's read then did not find it), no entry record,
  ambiguous, other (e.g. the exit matched another car's unpaid session, timeouts). A second
  exit attempt that the lane's same-vehicle hold-off swallows (no event) is counted apart; the
  first attempt's decision then stands for the exit.

The bench photographs a few cars twice. Two photos of one plate are never inside at once, and
before the second enters, a session the first left open is closed as an attendant would
(``gatekeeper arrive exit-1 --plate P``; counted in the output): a car cannot be inside twice.
An exit that opens a session of the car's own plate but another photo's entry is therefore not
a wrong opening. Failed cars are otherwise left as they are (their sessions stay open), as in
the protocol of issue 11.
Read latency: photo renamed into the folder -> decision event committed (the event's own time).

Prints a table and writes ``lane-outcome.json`` (figures + one record per vehicle) and
``lane-outcome.md`` to ``--out``. The CLI is run as ``python -m gatekeeper`` or, on a tree
without ``gatekeeper/__main__.py``, ``python -m gatekeeper.cli``; nothing of gatekeeper is imported.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
DECISION_KINDS = {"entry", "exit", "denied"}
REASONS = ("entry no-read", "entry denied", "wrong plate at entry", "exit no-read", "no entry record",
           "ambiguous", "other")


def normalise(text: str) -> str:
    return re.sub(r"[^A-Z0-9]", "", text.upper())


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Car:
    region: str
    name: str
    path: Path
    truth: str
    box: tuple[int, int, int, int] | None


def load_region(data: Path, region: str, limit: int | None) -> list[Car]:
    cars: list[Car] = []
    for image in sorted((data / region).iterdir()):
        if image.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        label = image.with_suffix(".txt")
        if not label.is_file():
            continue
        fields_ = label.read_text(encoding="utf-8").strip().split("\t")
        box = None
        if len(fields_) >= 6:
            try:
                box = tuple(int(float(v)) for v in fields_[1:5])  # type: ignore[assignment]
            except ValueError:
                box = None
        cars.append(Car(region, image.name, image, normalise(fields_[-1]), box))
    return cars[:limit] if limit else cars


def perturb(image: np.ndarray, box: tuple[int, int, int, int] | None, rng: random.Random) -> tuple[np.ndarray, list[str]]:
    """A second camera's view of the same car: a random mix (at least one) of blur, light, scale, crop.

    The crop never cuts into the labelled plate box: the exit camera sees the whole plate.
    Blur is in pixels of a 1280-wide frame (a smaller photo gets proportionally less, floor
    half), and scaling down stops where the plate's box would drop below 24 px high (the
    bench already has plates that small): a second camera, not a worse one.
    """
    ops = [op for op in ("blur", "light", "scale", "crop") if rng.random() < 0.5]
    if not ops:
        ops = [rng.choice(("blur", "light", "scale", "crop"))]
    rng.shuffle(ops)
    out = image.copy()
    h, w = out.shape[:2]
    bx, by, bw, bh = box if box else (w // 2, h // 2, 1, 1)
    done: list[str] = []
    blur_scale = min(1.5, max(0.5, w / 1280))
    for op in ops:
        h, w = out.shape[:2]
        if op == "blur":
            if rng.random() < 0.5:
                sigma = rng.uniform(0.8, 2.2) * blur_scale
                out = cv2.GaussianBlur(out, (0, 0), sigma)
                done.append(f"gauss{sigma:.1f}")
            else:
                length = max(3, int(round(rng.randint(3, 9) * blur_scale)))
                kernel = np.zeros((length, length), np.float32)
                kernel[length // 2, :] = 1.0 / length
                angle = rng.uniform(-30, 30)
                rot = cv2.getRotationMatrix2D((length / 2 - 0.5, length / 2 - 0.5), angle, 1.0)
                kernel = cv2.warpAffine(kernel, rot, (length, length))
                kernel /= max(kernel.sum(), 1e-6)
                out = cv2.filter2D(out, -1, kernel)
                done.append(f"motion{length}@{angle:.0f}")
        elif op == "light":
            gamma = rng.uniform(0.55, 1.8)
            gain = rng.uniform(0.6, 1.35)
            bias = rng.uniform(-25, 25)
            lut = np.clip(255.0 * (np.arange(256) / 255.0) ** gamma * gain + bias, 0, 255).astype(np.uint8)
            out = cv2.LUT(out, lut)
            done.append(f"light g{gamma:.2f} x{gain:.2f} {bias:+.0f}")
        elif op == "scale":
            factor = rng.uniform(max(0.5, min(1.0, 24 / max(bh, 1))), 1.25)
            interp = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
            out = cv2.resize(out, None, fx=factor, fy=factor, interpolation=interp)
            bx, by, bw, bh = (int(round(v * factor)) for v in (bx, by, bw, bh))
            done.append(f"scale{factor:.2f}")
        elif op == "crop":
            left = int(rng.uniform(0, 0.2) * max(0, bx))
            top = int(rng.uniform(0, 0.2) * max(0, by))
            right = w - int(rng.uniform(0, 0.2) * max(0, w - (bx + bw)))
            bottom = h - int(rng.uniform(0, 0.2) * max(0, h - (by + bh)))
            out = out[top:bottom, left:right]
            bx, by = bx - left, by - top
            done.append(f"crop{left},{top},{w - right},{h - bottom}")
    return out, done


def seeded_rng(seed: int, *parts: str) -> random.Random:
    digest = hashlib.sha256("|".join([str(seed), *parts]).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("cannot encode JPEG")
    return data.tobytes()


_FLUSH = cv2.imencode(".png", np.full((48, 64), 128, np.uint8))[1].tobytes()


# --------------------------------------------------------------------------- the daemon


def cli_base(config: Path) -> list[str]:
    """``python -m gatekeeper`` where the package has ``__main__``, else ``python -m gatekeeper.cli``."""
    for module in ("gatekeeper", "gatekeeper.cli"):
        probe = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return [sys.executable, "-m", module, "--config", str(config)]
    raise SystemExit(f"cannot run the gatekeeper CLI with {sys.executable}: {probe.stderr.strip()[-300:]}")


def write_config(work: Path, region: str, threads: int, capacity: int) -> Path:
    config = work / "config.toml"
    config.write_text(
        f"""[site]
lot_id = "bench-{region}"
capacity = {capacity}

[[lanes]]
id = "entry-1"
direction = "entry"
camera = "dir:{work / 'cameras' / 'entry-1'}"
relay_pin = 17
safety_pins = [27]
open_time_s = 0.2
pulse_ms = 100

[[lanes]]
id = "exit-1"
direction = "exit"
camera = "dir:{work / 'cameras' / 'exit-1'}"
relay_pin = 22
safety_pins = [23]
open_time_s = 0.2
pulse_ms = 100

[anpr]
region = "{region}"
threads = {threads}

[tariff]
free_minutes = 0
grace_minutes = 15

[mqtt]
enabled = false

[storage]
data_dir = "{work / 'data'}"
database = "{work / 'data' / 'gatekeeper.db'}"
min_free_mb = 0

[daemon]
control_socket = "{work / 'control.sock'}"
socket_group = ""
watchdog = false
""",
        encoding="utf-8",
    )
    return config


def control(path: Path, payload: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """One request on the daemon's control socket (one JSON line each way)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(json.dumps(payload).encode() + b"\n")
        buf = bytearray()
        while b"\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
    return json.loads(buf.decode() or "{}")


class Daemon:
    """``gatekeeper run --sim`` in a subprocess, its control socket and its SQLite file (read-only)."""

    def __init__(self, work: Path, config: Path, cli: list[str], threads: int) -> None:
        self.work = work
        self.socket = work / "control.sock"
        self.db_path = work / "data" / "gatekeeper.db"
        self.cli = cli
        self.log = open(work / "daemon.log", "wb")
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        env.pop("NOTIFY_SOCKET", None)
        env.pop("WATCHDOG_USEC", None)
        self.proc = subprocess.Popen([*cli, "run", "--sim"], stdout=self.log, stderr=subprocess.STDOUT,
                                     env=env, cwd=work)
        self._db: sqlite3.Connection | None = None
        self.last_seq = 0

    def wait_ready(self, timeout: float = 300.0) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise SystemExit(f"daemon exited with {self.proc.returncode}; log: {self.work / 'daemon.log'}")
            try:
                if control(self.socket, {"cmd": "status"}).get("ready"):
                    return time.monotonic() - t0
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        raise SystemExit("daemon not ready in time")

    def frames(self, lane: str) -> int:
        status = control(self.socket, {"cmd": "status"})
        for entry in status.get("lanes", []):
            if entry.get("id") == lane:
                return int(entry.get("frames", 0))
        raise KeyError(lane)

    def db(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=5.0)
            self._db.row_factory = sqlite3.Row
        return self._db

    def new_events(self) -> list[dict[str, Any]]:
        rows = self.db().execute(
            "SELECT seq, at, lane, kind, reason, message, plate, session_id, data FROM events WHERE seq > ? "
            "ORDER BY seq", (self.last_seq,)).fetchall()
        out = []
        for row in rows:
            event = dict(row)
            try:
                event["data"] = json.loads(event["data"] or "{}")
            except ValueError:
                event["data"] = {}
            out.append(event)
            self.last_seq = max(self.last_seq, int(row["seq"]))
        return out

    def session(self, session_id: int) -> dict[str, Any] | None:
        row = self.db().execute("SELECT * FROM sessions WHERE id=?", (session_id,)).fetchone()
        return dict(row) if row else None

    def open_sessions(self) -> int:
        return int(self.db().execute("SELECT COUNT(*) FROM sessions WHERE status != 'closed'").fetchone()[0])

    def pay(self, session_id: int) -> tuple[bool, str]:
        done = subprocess.run([*self.cli, "sessions", "pay", str(session_id), "--reference", "bench"],
                              capture_output=True, text=True, cwd=self.work, timeout=120)
        return done.returncode == 0, (done.stdout + done.stderr).strip()[-300:]

    def arrive(self, lane: str, plate: str) -> tuple[bool, str]:
        done = subprocess.run([*self.cli, "arrive", lane, "--plate", plate, "--by", "bench-attendant"],
                              capture_output=True, text=True, cwd=self.work, timeout=120)
        return done.returncode == 0, (done.stdout + done.stderr).strip()[-300:]

    def stop(self) -> int:
        if self._db is not None:
            self._db.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


# --------------------------------------------------------------------------- one attempt


@dataclass
class Attempt:
    lane: str
    decided: bool = False
    open: bool = False
    reason: str = ""
    plate: str = ""
    plate_read: str = ""
    confidence: float | None = None
    session_id: int | None = None
    candidates: list[str] = field(default_factory=list)
    latency_ms: float | None = None
    wall_ms: float = 0.0
    timeout: bool = False
    perturbation: list[str] = field(default_factory=list)


def _event_time(at: str) -> float | None:
    try:
        return datetime.fromisoformat(at).timestamp()
    except (TypeError, ValueError):
        return None


def attempt(daemon: Daemon, lane: str, photo: bytes, name: str, counter: list[int], timeout: float) -> Attempt:
    """Drop ``photo`` and a flush image into ``lane``'s folder; wait until the lane took the flush."""
    folder = daemon.work / "cameras" / lane
    result = Attempt(lane)
    base = daemon.frames(lane)
    daemon.new_events()  # anything earlier (gate events of the last car) is not this photo's
    tmp = folder / f".{name}.part"
    tmp.write_bytes(photo)
    dropped_wall, dropped = time.time(), time.monotonic()
    os.replace(tmp, folder / name)
    counter[0] += 1
    flush_tmp = folder / f".zz-flush-{counter[0]:06d}.part"
    flush_tmp.write_bytes(_FLUSH)
    os.replace(flush_tmp, folder / f"zz-flush-{counter[0]:06d}.png")
    events: list[dict[str, Any]] = []
    delay = 0.01
    while True:
        taken = daemon.frames(lane) >= base + 2
        events += daemon.new_events()  # after reading the counter: nothing of the photo is missed
        if taken:
            break
        if time.monotonic() - dropped > timeout:
            result.timeout = True
            break
        time.sleep(delay)
        delay = min(0.05, delay * 1.5)
    result.wall_ms = (time.monotonic() - dropped) * 1000
    decisions = [e for e in events if e["lane"] == lane and e["kind"] in DECISION_KINDS]
    if decisions:
        e = decisions[0]
        data = e["data"]
        result.decided = True
        result.open = bool(data.get("open", e["kind"] != "denied"))
        result.reason = e["reason"] or ""
        result.plate = e["plate"] or ""
        result.plate_read = data.get("plate_read") or ""
        result.confidence = data.get("confidence")
        result.session_id = e["session_id"]
        result.candidates = list(data.get("candidates") or [])
        at = _event_time(e["at"])
        if at is not None:
            result.latency_ms = round((at - dropped_wall) * 1000, 1)
    return result


# --------------------------------------------------------------------------- the protocol


@dataclass
class Vehicle:
    region: str
    image: str
    truth: str
    entry: Attempt | None = None
    session_id: int | None = None
    session_plate: str = ""
    inside_with: int = 0
    exit1: Attempt | None = None
    paid: bool | None = None
    pay_output: str = ""
    exit2: Attempt | None = None
    out_without_attendant: bool = False
    second_dropped: bool = False
    wrong_opening: str = ""
    failure: str = ""
    detail: str = ""


def judge(v: Vehicle, own_session: int | None, owners: dict[int, str]) -> None:
    """Outcome, wrong opening and root-cause failure reason of one vehicle (see the module doc).

    ``owners`` maps session ids to the true plate of the car whose entry created them: an exit
    that opens a session of the *same* plate (the bench has a few cars photographed twice) is
    not a wrong opening, but not this car's success either. An entry's wrong opening is judged
    when it happens, in ``enter``.
    """
    e = v.entry
    for a in (v.exit1, v.exit2):
        if a and a.open and a.session_id != own_session and owners.get(a.session_id or -1) != v.truth:
            v.wrong_opening = (v.wrong_opening + "; " if v.wrong_opening else "") + \
                f"exit opened for session {a.session_id} ({a.plate}), not this car's {own_session}"
    v.out_without_attendant = bool(
        e and e.open and own_session is not None
        and any(a and a.open and a.session_id == own_session for a in (v.exit1, v.exit2))
        and not v.wrong_opening
    )
    if v.exit1 and v.exit1.decided and v.exit2 and not v.exit2.decided and not v.exit2.timeout:
        v.second_dropped = True   # same read again within the lane's same-vehicle hold-off: no event
    if v.out_without_attendant:
        return
    # The attempt that says most: the second, unless the hold-off swallowed it.
    last = v.exit2 if v.exit2 and v.exit2.decided else v.exit1
    if e is None or not e.decided:
        v.failure, v.detail = "entry no-read", "timeout" if e and e.timeout else ""
    elif not e.open:
        v.failure, v.detail = "entry denied", f"{e.reason}: {e.plate}"
    elif last is None or not last.decided:
        v.failure, v.detail = "exit no-read", "timeout" if last and last.timeout else ""
    elif e.plate != v.truth:
        v.failure, v.detail = "wrong plate at entry", f"{e.plate} for {v.truth}; exit {last.reason} {last.plate}"
    elif last.reason == "no_entry_record":
        v.failure, v.detail = "no entry record", last.plate
    elif last.reason == "ambiguous_match":
        v.failure, v.detail = "ambiguous", ",".join(last.candidates)
    else:
        v.failure = "other"
        v.detail = f"exit {last.reason} {last.plate} session {last.session_id} (own {own_session})"


def run_region(cars: list[Car], args: argparse.Namespace, out: Path) -> tuple[list[Vehicle], dict[str, Any]]:
    region = cars[0].region
    work = Path(tempfile.mkdtemp(prefix=f"gk-lo-{region}-"))
    config = write_config(work, region, args.threads, capacity=len(cars) + 100)
    for lane in ("entry-1", "exit-1"):
        (work / "cameras" / lane).mkdir(parents=True)
    cli = cli_base(config)
    daemon = Daemon(work, config, cli, args.threads)
    counter = [0]
    resolved: list[dict[str, Any]] = []
    rng = seeded_rng(args.seed, region, "schedule")
    order = list(cars)
    rng.shuffle(order)
    pending = list(order)
    inside: dict[str, tuple[Car, Vehicle]] = {}   # image name -> (car, vehicle)
    owners: dict[int, str] = {}                   # session id -> true plate of the car that started it
    leftover: dict[str, Vehicle] = {}             # true plate -> a departed car whose session may be open
    vehicles: list[Vehicle] = []
    t_start = time.monotonic()
    try:
        ready_s = daemon.wait_ready()
        print(f"[{region}] daemon ready in {ready_s:.1f} s ({work}); {len(cars)} cars, {args.inside} inside",
              flush=True)

        def enter() -> bool:
            truths_inside = {c.truth for c, _ in inside.values()}
            pick = next((c for c in pending if c.truth not in truths_inside), None)
            if pick is None:
                return False
            pending.remove(pick)
            before = leftover.pop(pick.truth, None)
            if before is not None:
                resolve(before)
            v = Vehicle(region, pick.name, pick.truth)
            photo = pick.path.read_bytes()
            name = f"in-{len(vehicles):04d}{pick.path.suffix.lower()}"
            v.entry = attempt(daemon, "entry-1", photo, name, counter, args.timeout)
            v.inside_with = len(inside)
            if v.entry.open and v.entry.session_id is not None:
                v.session_id = v.entry.session_id
                owners[v.session_id] = v.truth
                v.session_plate = v.entry.plate
            others = {c.truth for c, _ in inside.values()}
            if v.entry.open and v.entry.plate != v.truth and v.entry.plate in others:
                v.wrong_opening = f"entry opened as {v.entry.plate}, the plate of another car inside"
            inside[pick.name] = (pick, v)
            vehicles.append(v)
            return True

        def resolve(before: Vehicle) -> None:
            """The same car again (a second bench photo of one plate): a car cannot be inside twice, so
            the session its first photo left open is closed first, as an attendant would
            (``gatekeeper arrive exit-1 --plate P``), and counted."""
            session = daemon.session(before.session_id) if before.session_id is not None else None
            if session and session.get("status") != "closed":
                ok, text = daemon.arrive("exit-1", session["plate"])
                resolved.append({"session": before.session_id, "plate": session["plate"], "ok": ok, "output": text})

        def leave() -> None:
            name = rng.choice(sorted(inside))
            car, v = inside.pop(name)
            image = cv2.imread(str(car.path), cv2.IMREAD_COLOR)
            prng = seeded_rng(args.seed, region, car.name, "exit")
            view, ops = perturb(image, car.box, prng)
            photo = encode_jpeg(view, prng.randint(75, 95))
            v.exit1 = attempt(daemon, "exit-1", photo, f"out-{name}-1.jpg", counter, args.timeout)
            v.exit1.perturbation = ops
            if not v.exit1.open and v.session_id is not None:
                v.paid, v.pay_output = daemon.pay(v.session_id)
                ops2 = ops
                if args.fresh_second:
                    prng = seeded_rng(args.seed, region, car.name, "exit2")
                    view, ops2 = perturb(image, car.box, prng)
                    photo = encode_jpeg(view, prng.randint(75, 95))
                v.exit2 = attempt(daemon, "exit-1", photo, f"out-{name}-2.jpg", counter, args.timeout)
                v.exit2.perturbation = ops2
            judge(v, v.session_id, owners)
            if v.session_id is not None and not v.out_without_attendant:
                leftover[v.truth] = v
            shown = v.exit2 if v.exit2 and v.exit2.decided else v.exit1
            mark = "OUT " if v.out_without_attendant else ("WRONG" if v.wrong_opening else "fail")
            print(f"[{region}] {len(vehicles):3d}/{len(cars)} inside {len(inside):2d}  {mark} {v.truth:10s} "
                  f"entry {v.entry.plate if v.entry and v.entry.decided else '-':10s} "
                  f"exit {shown.plate or '-':10s} {v.failure} {v.detail}", flush=True)

        while pending and len(inside) < args.inside:
            if not enter():
                break
        while inside:
            leave()
            if pending:
                enter()
        still_open = daemon.open_sessions()
    finally:
        code = daemon.stop()
        shutil.copy(work / "daemon.log", out / f"daemon-{region}.log")
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    extra = {"daemon_exit_code": code, "sessions_left_open": still_open, "duplicate_plate_sessions_closed": resolved,
             "minutes": round((time.monotonic() - t_start) / 60, 1)}
    return vehicles, extra


def summarise(vehicles: list[Vehicle]) -> dict[str, Any]:
    n = len(vehicles)
    latencies = sorted(a.latency_ms for v in vehicles for a in (v.entry, v.exit1, v.exit2)
                       if a and a.latency_ms is not None)
    failures = Counter(v.failure for v in vehicles if v.failure)
    return {
        "vehicles": n,
        "out_without_attendant": sum(v.out_without_attendant for v in vehicles),
        "out_rate": round(sum(v.out_without_attendant for v in vehicles) / n, 4) if n else 0.0,
        "wrong_openings": sum(bool(v.wrong_opening) for v in vehicles),
        "failures": {r: failures.get(r, 0) for r in REASONS},
        "entry_opened": sum(bool(v.entry and v.entry.open) for v in vehicles),
        "entry_plate_exact": sum(bool(v.entry and v.entry.open and v.entry.plate == v.truth) for v in vehicles),
        "entry_plate_wrong": sum(bool(v.entry and v.entry.open and v.entry.plate != v.truth) for v in vehicles),
        "second_attempt_dropped": sum(v.second_dropped for v in vehicles),
        "latency_ms_median": round(statistics.median(latencies), 1) if latencies else None,
        "latency_ms_p95": round(float(np.percentile(latencies, 95)), 1) if latencies else None,
        "decisions_timed": len(latencies),
    }


def table(summary: dict[str, dict[str, Any]]) -> str:
    heads = ["region", "vehicles", "out w/o attendant", "wrong openings", *REASONS, "latency ms median / p95"]
    lines = ["| " + " | ".join(heads) + " |", "|" + " --- |" * len(heads)]
    for key, s in summary.items():
        lines.append("| " + " | ".join([
            key, str(s["vehicles"]), f"{s['out_without_attendant']} ({100 * s['out_rate']:.1f}%)",
            str(s["wrong_openings"]), *(str(s["failures"][r]) for r in REASONS),
            f"{s['latency_ms_median']} / {s['latency_ms_p95']}"]) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/bench/plates"))
    parser.add_argument("--regions", default="us,eu,br")
    parser.add_argument("--limit", type=int, default=None, help="cars per region")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--inside", type=int, default=45, help="cars inside before exits start (30-60)")
    parser.add_argument("--threads", type=int, default=1, help="anpr.threads of the daemon")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per photo")
    parser.add_argument("--fresh-second", action="store_true",
                        help="second exit attempt with a new perturbation (default: the same photo again)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories")
    parser.add_argument("--out", type=Path, default=Path("lane-outcome"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting for the daemon and the CLI, e.g. anpr.plate_detector=true (repeatable; "
                             "passed as GATEKEEPER_ANPR__PLATE_DETECTOR, which wins over the generated config)")
    args = parser.parse_args()
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep or "." not in key or not key.replace(".", "").replace("_", "").isalnum():
            parser.error(f"--set wants SECTION.KEY=VALUE, got {item!r}")
        os.environ["GATEKEEPER_" + key.upper().replace(".", "__")] = value
    if not 1 <= args.inside <= 200:
        parser.error("--inside must be 1..200 (the protocol uses 30-60)")
    args.out.mkdir(parents=True, exist_ok=True)
    all_vehicles: list[Vehicle] = []
    summary: dict[str, dict[str, Any]] = {}
    extras: dict[str, Any] = {}
    for region in [r.strip() for r in args.regions.split(",") if r.strip()]:
        cars = load_region(args.data, region, args.limit)
        if not cars:
            print(f"[{region}] no labelled images in {args.data / region}", file=sys.stderr)
            continue
        vehicles, extra = run_region(cars, args, args.out)
        all_vehicles += vehicles
        summary[region] = summarise(vehicles)
        extras[region] = extra
    if not all_vehicles:
        return 1
    summary["overall"] = summarise(all_vehicles)
    text = table(summary)
    print()
    print(text)
    for region, extra in extras.items():
        s = summary[region]
        print(f"  {region}: entries opened {s['entry_opened']} (plate exact {s['entry_plate_exact']}, wrong "
              f"{s['entry_plate_wrong']}); second exit attempts dropped silently (hold-off) "
              f"{s['second_attempt_dropped']}; sessions left open {extra['sessions_left_open']}; sessions of a "
              f"re-photographed plate closed by the attendant {len(extra['duplicate_plate_sessions_closed'])}; "
              f"daemon exit {extra['daemon_exit_code']}; {extra['minutes']} min")
    result = {
        "command": " ".join(sys.argv),
        "settings": {k: str(v) for k, v in vars(args).items()},
        "summary": summary,
        "runs": extras,
        "vehicles": [asdict(v) for v in all_vehicles],
    }
    (args.out / "lane-outcome.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    (args.out / "lane-outcome.md").write_text(text + "\n", encoding="utf-8")
    print(f"written {args.out / 'lane-outcome.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
