"""The daemon: systemd notify and watchdog, SIGTERM, the control socket and ``gatekeeper run --sim``.

systemd is played by a Unix datagram socket the test binds and names in
NOTIFY_SOCKET, exactly what the service manager does.
"""

from __future__ import annotations

import grp
import json
import os
import queue
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from gatekeeper.config import DaemonConfig, MqttConfig, Settings, SiteConfig, StorageConfig, load_settings
from gatekeeper.service.control import ControlError, ControlServer, PeerCredentials, request
from gatekeeper.service.daemon import Daemon
from gatekeeper.service.sdnotify import SystemdNotifier
from gatekeeper.sim.plates import draw_plate_scene, drop_photo
from gatekeeper.store import Store
from tests.test_lane import lane_config

GATEKEEPER = [sys.executable, "-m", "gatekeeper.cli"]
READY_TIMEOUT_S = 240.0
#: The subprocess test waits this long for each step (a plate read, a CLI call, a reload, shutdown).
#: Generous on purpose: on a loaded 2-core machine a step that takes 0.5 s idle can take a minute.
STEP_TIMEOUT_S = 180.0


class FakeSystemd:
    """The service manager's end of NOTIFY_SOCKET: a thread collects the datagrams, like systemd would."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self._inbox: queue.Queue[str] = queue.Queue()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        while not self._closing.is_set():
            try:
                self._inbox.put(self.sock.recv(65536).decode())
            except TimeoutError:
                continue
            except OSError:
                return

    def receive(self, timeout: float) -> str | None:
        try:
            message = self._inbox.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None
        self.messages.append(message)
        return message

    def wait_for(self, line: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self.receive(left)
            if message is not None and line in message.splitlines():
                return True
        return False

    def drain(self) -> list[str]:
        got = []
        while (message := self.receive(0.05)) is not None:
            got.append(message)
        return got

    def close(self) -> None:
        self._closing.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[FakeSystemd]:
    fake = FakeSystemd(tmp_path / "notify.sock")
    yield fake
    fake.close()


def short_socket_path(tmp_path: Path) -> Path:
    """Unix socket paths are limited to 107 bytes; pytest's tmp paths can be long."""
    path = tmp_path / "c.sock"
    if len(str(path)) > 100:
        import tempfile

        path = Path(tempfile.mkdtemp(prefix="gk-")) / "c.sock"
    return path


# --------------------------------------------------------------------------- watchdog


class HangingReader:
    """A plate reader that hangs on its first frame until released: a stuck lane."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def read(self, image: np.ndarray, **kwargs: Any) -> None:
        self.entered.set()
        self.release.wait()
        return None


def test_watchdog_is_fed_only_while_every_lane_is_healthy(tmp_path: Path, systemd: FakeSystemd) -> None:
    folder = tmp_path / "cam" / "entry"
    settings = Settings(
        site=SiteConfig(capacity=5),
        lanes=[lane_config("entry-1", "entry", folder, 17, 27)],
        storage=StorageConfig(data_dir=tmp_path / "data", min_free_mb=0),
        mqtt=MqttConfig(enabled=False),
        daemon=DaemonConfig(lane_stall_s=1.0, socket_group=None),
    )
    reader = HangingReader()
    notifier = SystemdNotifier(environ={"NOTIFY_SOCKET": str(systemd.path), "WATCHDOG_USEC": "400000"})
    daemon = Daemon(settings, reader=reader, notifier=notifier, control_socket=False)
    runner = threading.Thread(target=daemon.run, name="daemon")
    runner.start()
    try:
        assert systemd.wait_for("READY=1", 60)
        assert systemd.wait_for("WATCHDOG=1", 5), "a healthy daemon feeds the watchdog"

        drop_photo(folder, "car", draw_plate_scene("AB123CD"))
        assert reader.entered.wait(30), "the lane took the frame"
        deadline = time.monotonic() + 10
        while not daemon.store.events(kinds=["alarm"]) and time.monotonic() < deadline:
            systemd.receive(0.1)  # the daemon notices the stall within lane_stall_s + a tick
        alarms = daemon.store.events(kinds=["alarm"])
        assert alarms and alarms[0]["reason"] == "lane_stalled" and alarms[0]["lane"] == "entry-1"
        assert daemon.lane_health() == {"entry-1": "stalled"}  # what Home Assistant's problem sensor shows
        systemd.drain()
        quiet_until = time.monotonic() + 2.0
        while (left := quiet_until - time.monotonic()) > 0:
            message = systemd.receive(left)
            assert message is None or "WATCHDOG=1" not in message.splitlines(), "fed while a lane hangs"

        reader.release.set()
        assert systemd.wait_for("WATCHDOG=1", 5), "feeding resumes once the lane moves again"
        assert daemon.lane_health() == {"entry-1": "ok"}
    finally:
        reader.release.set()
        daemon.request_stop()
        runner.join(30)
    assert not runner.is_alive()
    systemd.drain()
    assert any("STOPPING=1" in m.splitlines() for m in systemd.messages)



def test_reload_replaces_the_config_tariff_in_the_store(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    base = f'[storage]\ndata_dir = "{tmp_path / "data"}"\n[mqtt]\nenabled = false\n'
    config.write_text(base + "[tariff]\nrate = 250\n", encoding="utf-8")
    daemon = Daemon(load_settings(config), notifier=SystemdNotifier(environ={}), control_socket=False)
    daemon.store = Store.from_settings(daemon.settings)  # reload needs only the store, not the lanes
    try:
        assert daemon.store.tariff().rate == 250
        config.write_text(base + "[tariff]\nrate = 400\n", encoding="utf-8")
        reply = daemon.reload(by="test")
        assert reply["ok"] and reply["changed"] == ["tariff"]
        assert daemon.store.tariff().rate == 400
    finally:
        daemon.store.close()

# --------------------------------------------------------------------------- control socket


def test_control_socket_permissions_peer_and_bad_requests(tmp_path: Path) -> None:
    seen: list[tuple[dict[str, Any], PeerCredentials]] = []

    def handler(req: dict[str, Any], peer: PeerCredentials) -> dict[str, Any]:
        seen.append((req, peer))
        if req.get("cmd") == "boom":
            raise RuntimeError("handler bug")
        return {"ok": True, "echo": req}

    path = short_socket_path(tmp_path)
    group = grp.getgrgid(os.getgid()).gr_name
    with ControlServer(path, handler, group=group):
        mode = path.stat().st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o660
        assert path.stat().st_gid == os.getgid()
        assert request(path, {"cmd": "status"}) == {"ok": True, "echo": {"cmd": "status"}}
        assert seen[0][1].uid == os.getuid() and seen[0][1].pid == os.getpid()
        reply = request(path, {"cmd": "boom"})
        assert reply["ok"] is False and "handler bug" in reply["error"]
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:  # garbage in: an error reply, server lives
            raw.connect(str(path))
            raw.sendall(b"{not json\n")
            assert json.loads(raw.makefile().readline())["ok"] is False
        assert request(path, {"cmd": "status"})["ok"] is True
        with pytest.raises(RuntimeError, match="already serving"):
            ControlServer(path, handler).start()
    assert not path.exists()
    with pytest.raises(ControlError, match="does not exist"):
        request(path, {"cmd": "status"})


def test_cli_open_without_a_daemon_fails_clearly(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[storage]\ndata_dir = "{tmp_path / "data"}"\n[mqtt]\nenabled = false\n'
                      '[[lanes]]\nid = "entry-1"\ndirection = "entry"\ncamera = "dir:cams"\nrelay_pin = 17\n')
    result = subprocess.run(
        [*GATEKEEPER, "--config", str(config), "open", "entry-1", "--reason", "test"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 3  # the daemon is not reachable
    assert "no daemon is running" in result.stderr and "Traceback" not in result.stderr


# --------------------------------------------------------------------------- the real thing, in a subprocess


def write_sim_config(tmp_path: Path, control_socket: Path) -> Path:
    config = tmp_path / "config.toml"
    group = grp.getgrgid(os.getgid()).gr_name
    config.write_text(
        f"""
[site]
lot_id = "test-lot"
capacity = 20

[[lanes]]
id = "entry-1"
direction = "entry"
camera = "dir:cameras/entry-1"
relay_pin = 17
pulse_ms = 50
safety_pins = [27]
open_time_s = 0.1
debounce_ms = 0

[[lanes]]
id = "exit-1"
direction = "exit"
camera = "dir:cameras/exit-1"
relay_pin = 22
pulse_ms = 50
safety_pins = [23]
open_time_s = 0.1
debounce_ms = 0

[anpr]
min_confidence = 0.3

[mqtt]
enabled = false

[storage]
data_dir = "data"
min_free_mb = 0

[hardware]
pin_factory = "lgpio"   # --sim must force mock pins

[daemon]
control_socket = "{control_socket}"
socket_group = "{group}"
lane_stall_s = 30
""",
        encoding="utf-8",
    )
    return config


def cli(config: Path, *args: str, timeout: float = STEP_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*GATEKEEPER, "--config", str(config), *args], capture_output=True, text=True, timeout=timeout)


def wait_for_status(socket_path: Path, predicate: Any, timeout: float = STEP_TIMEOUT_S) -> dict[str, Any]:
    """Poll the daemon's status over the control socket until ``predicate`` holds.

    The daemon is another process, so there is no event to wait on: the condition
    itself is polled. A request the busy daemon answers late is retried, not fatal.
    """
    deadline = time.monotonic() + timeout
    last: dict[str, Any] | str = {}
    while time.monotonic() < deadline:
        try:
            last = request(socket_path, {"cmd": "status"}, timeout=max(1.0, min(30.0, deadline - time.monotonic())))
        except ControlError as exc:
            last = str(exc)
        else:
            if predicate(last):
                return last
        time.sleep(0.1)
    raise AssertionError(f"status never matched within {timeout:g} s: {json.dumps(last, indent=1)[:2000]}")


def lane_status(status: dict[str, Any], lane_id: str) -> dict[str, Any]:
    return next(lane for lane in status["lanes"] if lane["id"] == lane_id)


def reloaded_events(tmp_path: Path) -> list[str]:
    db = sqlite3.connect(tmp_path / "data" / "gatekeeper.db", timeout=30)
    try:
        return [row[0] for row in db.execute("SELECT message FROM events WHERE kind = 'reloaded'")]
    finally:
        db.close()


@pytest.mark.slow
def test_run_sim_control_socket_and_sigterm(tmp_path: Path, systemd: FakeSystemd) -> None:
    control = short_socket_path(tmp_path)
    config = write_sim_config(tmp_path, control)
    env = {**os.environ, "NOTIFY_SOCKET": str(systemd.path), "WATCHDOG_USEC": "2000000"}
    env.pop("GATEKEEPER_CONFIG", None)
    stderr_log = (tmp_path / "daemon.log").open("w")
    proc = subprocess.Popen(
        [*GATEKEEPER, "--config", str(config), "run", "--sim"],
        stdout=subprocess.PIPE, stderr=stderr_log, text=True, env=env, cwd=tmp_path,
    )
    try:
        first = systemd.receive(READY_TIMEOUT_S)
        assert first is not None, f"no READY=1; log:\n{(tmp_path / 'daemon.log').read_text()[-3000:]}"
        assert "READY=1" in first.splitlines(), f"READY=1 must come first, got {first!r}"
        assert stat.S_IMODE(control.stat().st_mode) == 0o660

        # A car photo dropped into the entry folder opens the simulated barrier...
        drop_photo(tmp_path / "cameras" / "entry-1", "car-in", draw_plate_scene("AB123CD"))
        status = wait_for_status(control, lambda s: (lane_status(s, "entry-1").get("last") or {}).get("plate"))
        entry = lane_status(status, "entry-1")
        assert entry["last"]["plate"] == "AB123CD" and entry["last"]["open"] is True
        assert status["sim"] is True and status["occupancy"]["occupied"] == 1
        # ...and the simulated car drives over the safety loop, so the barrier closes normally.
        # (the barrier is already "opening" when "last" is set: barrier.open() runs before it.)
        wait_for_status(control, lambda s: lane_status(s, "entry-1")["gate"] == "closed")

        # The technician's view through the CLI.
        shown = cli(config, "status")
        assert shown.returncode == 0, shown.stderr
        assert "Daemon: running" in shown.stdout and "lane entry-1" in shown.stdout and "AB123CD" in shown.stdout

        # Operator fallback and manual open through the CLI and the control socket.
        arrived = cli(config, "arrive", "exit-1", "--plate", "ab 123 cd", "--by", "intercom-op")
        assert arrived.returncode == 0, arrived.stderr
        assert "AB123CD -> OPEN" in arrived.stdout
        opened = cli(config, "open", "entry-1", "--reason", "delivery van without plate")
        assert opened.returncode == 0, opened.stderr
        assert "opening" in opened.stdout
        refused = cli(config, "arrive", "nope-9", "--plate", "X1")
        assert refused.returncode == 2 and "no lane 'nope-9'" in refused.stderr  # not in the config: usage error
        shut = cli(config, "arrive", "exit-1", "--plate", "ZZ 999 ZZ")  # never entered: the lane refuses
        assert shut.returncode == 1 and "ZZ999ZZ -> SHUT" in shut.stdout, (shut.stdout, shut.stderr)

        # A partial plate is no plate: a no_read event and the display says what to do; the
        # technician resolves it from the CLI, through the daemon, and that is an event too.
        drop_photo(tmp_path / "cameras" / "entry-1", "car-partial", draw_plate_scene("XY12"))
        status = wait_for_status(
            control, lambda s: (lane_status(s, "entry-1").get("last") or {}).get("reason") == "no_read"
        )
        no_read = lane_status(status, "entry-1")["last"]
        assert no_read["open"] is False and status["occupancy"]["occupied"] == 0
        assert lane_status(status, "entry-1")["display"] == "Plate not read - please press the call button"
        listed = cli(config, "events")
        assert f"gatekeeper resolve {no_read['event_id']} --plate P" in listed.stdout
        resolved = cli(config, "resolve", no_read["event_id"], "--plate", "xy-123 zz", "--by", "tech")
        assert resolved.returncode == 0, resolved.stderr
        assert "resolved as XY123ZZ" in resolved.stdout and "-> OPEN" in resolved.stdout
        again = cli(config, "resolve", no_read["event_id"], "--plate", "XY123ZZ")
        assert again.returncode == 1 and "resolved already" in again.stderr
        bad = cli(config, "resolve", "no-such-event", "--plate", "XY123ZZ")
        assert bad.returncode == 1 and "no no_read event" in bad.stderr and "Traceback" not in bad.stderr

        # SIGHUP reloads lists and tariff and says so in an event. Waited for in the file the
        # daemon writes (its RELOADING=1/READY=1 datagrams may be dropped when the queue is full).
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + STEP_TIMEOUT_S
        while not (reloaded := reloaded_events(tmp_path)) and time.monotonic() < deadline:
            time.sleep(0.1)  # another process writes the file: poll it
        assert reloaded, f"no 'reloaded' event within {STEP_TIMEOUT_S:g} s of SIGHUP"
        assert "0 allow, 0 deny, 0 reservation(s)" in reloaded[0]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(STEP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        stdout = proc.stdout.read() if proc.stdout else ""
        stderr_log.close()
    log_text = (tmp_path / "daemon.log").read_text()
    assert code == 0, log_text[-3000:]
    assert str(tmp_path / "cameras" / "entry-1") in stdout and "data directory" in stdout
    assert any("STOPPING=1" in m.splitlines() for m in systemd.messages) or systemd.wait_for("STOPPING=1", 30)
    assert not control.exists()

    # Nothing made before the signal is lost: read the file the daemon left behind.
    db = sqlite3.connect(tmp_path / "data" / "gatekeeper.db")
    events = db.execute("SELECT kind, lane, reason, plate, data FROM events ORDER BY seq").fetchall()
    kinds = [e[0] for e in events]
    assert kinds[0] == "daemon_started" and kinds[-1] == "daemon_stopped"
    for expected in ("entry", "passed", "exit", "open_manual", "reloaded", "no_read", "no_read_resolved"):
        assert expected in kinds, kinds
    manual = next(e for e in events if e[0] == "open_manual")
    assert "delivery van without plate" in manual[4]
    typed = next(e for e in events if e[0] == "exit")
    assert json.loads(typed[4])["by"].startswith("intercom-op") and json.loads(typed[4])["source"] == "operator"
    sessions = db.execute("SELECT plate, status, source, exit_lane FROM sessions").fetchall()
    assert sessions == [("AB123CD", "closed", "camera", "exit-1"), ("XY123ZZ", "open", "operator", None)]
    pending = db.execute("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL").fetchone()[0]
    assert pending >= len([k for k in kinds if k in ("entry", "exit", "passed", "open_manual")])
    db.close()


def test_notify_never_blocks_when_systemd_stops_reading(tmp_path: Path) -> None:
    """A full notify queue drops datagrams instead of stalling the main loop (sendto would block)."""
    path = tmp_path / "deaf.sock"
    deaf = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    deaf.bind(str(path))
    try:
        notifier = SystemdNotifier(environ={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "1000000"})
        assert notifier.enabled and notifier.watchdog_interval_s == 1.0
        sent = [notifier.watchdog() for _ in range(200)]  # returns at once, queue or no queue
        assert sent[0] is True and sent[-1] is False
        assert deaf.recv(100) == b"WATCHDOG=1"
        notifier.close()
    finally:
        deaf.close()
    assert SystemdNotifier(environ={}).ready() is False  # outside systemd: a no-op
