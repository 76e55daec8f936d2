"""One daemon per lot: the data-directory lock, checked with two real ``gatekeeper run`` processes."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gatekeeper.config import load_settings
from gatekeeper.service.daemon import Daemon
from gatekeeper.service.lock import AlreadyRunning, DataDirLock, lock_holder
from gatekeeper.service.sdnotify import SystemdNotifier
from tests.broker import Mosquitto
from tests.test_daemon import short_socket_path, wait_for_status

REPO = Path(__file__).resolve().parents[1]
GATEKEEPER = [sys.executable, "-m", "gatekeeper"]


def write_config(tmp_path: Path, broker: Mosquitto, control: Path) -> Path:
    config = tmp_path / "config.toml"
    config.write_text(
        '[site]\nlot_id = "lock-lot"\ncapacity = 5\n'
        '[[lanes]]\nid = "entry-1"\ndirection = "entry"\ncamera = "dir:cams/entry-1"\nrelay_pin = 17\n'
        'safety_pins = [27]\nopen_time_s = 0.2\n'
        f'[mqtt]\nenabled = true\nhost = "{broker.host}"\nport = {broker.port}\nclient_id = "lock-lot-node"\n'
        'reconnect_min_s = 0.1\nreconnect_max_s = 0.5\n'
        f'[storage]\ndata_dir = "data"\n[daemon]\ncontrol_socket = "{control}"\nsocket_group = ""\n'
    )
    return config


def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("GATEKEEPER_") and k != "NOTIFY_SOCKET"}
    out["PYTHONPATH"] = str(REPO) + os.pathsep + out.get("PYTHONPATH", "")
    return out


def test_lock_is_exclusive_names_the_holder_and_dies_with_the_process(tmp_path: Path) -> None:
    lock = DataDirLock.acquire(tmp_path)
    assert (tmp_path / "gatekeeper.lock").read_text().strip() == str(os.getpid())
    with pytest.raises(AlreadyRunning, match=f"pid {os.getpid()}") as refused:
        DataDirLock.acquire(tmp_path)  # flock is per open file: the same process is refused too
    assert refused.value.pid == os.getpid()
    assert lock_holder(tmp_path) == os.getpid()
    lock.release()
    assert lock_holder(tmp_path) is None
    DataDirLock.acquire(tmp_path).release()  # free again


def test_a_second_daemon_refuses_before_touching_store_pins_cameras_or_broker(tmp_path: Path) -> None:
    """In process, with a lock held by another real process: nothing of the second daemon starts."""
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; from gatekeeper.service.lock import DataDirLock; "
         "l = DataDirLock.acquire(Path(sys.argv[1])); print('locked', flush=True); time.sleep(600)",
         str(tmp_path / "data")],
        stdout=subprocess.PIPE, text=True, env=env(),
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        touched: list[str] = []
        config = tmp_path / "config.toml"
        config.write_text('[storage]\ndata_dir = "data"\n[mqtt]\nenabled = true\nport = 1\n'
                          '[[lanes]]\nid = "entry-1"\ndirection = "entry"\ncamera = "dir:cams"\nrelay_pin = 17\n')

        class Reader:
            def read(self, *a: Any, **k: Any) -> None:
                touched.append("reader")

        daemon = Daemon(
            load_settings(config), reader=Reader(), notifier=SystemdNotifier(environ={}), control_socket=True,
            grabber_factory=lambda lane: touched.append("camera"),  # type: ignore[func-returns-value]
            barrier_factory=lambda lane, pins: touched.append("relay"),  # type: ignore[func-returns-value]
        )
        with pytest.raises(AlreadyRunning, match=f"pid {holder.pid}"):
            daemon.start()
        assert touched == [] and daemon.store is None and daemon.sync is None and daemon.control is None
        assert daemon._pin_factory is None  # no pin factory was even made
        assert not (tmp_path / "data" / "gatekeeper.db").exists()
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_second_run_exits_non_zero_naming_the_pid_and_leaves_the_first_alone(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    control = short_socket_path(tmp_path)
    config = write_config(tmp_path, mosquitto, control)
    first_log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen([*GATEKEEPER, "--config", str(config), "run", "--sim"], stdout=subprocess.DEVNULL,
                             stderr=first_log, env=env(), cwd=tmp_path)
    try:
        wait_for_status(control, lambda s: s["ready"] and (s.get("sync") or {}).get("connected"))
        connects_before = mosquitto.log_text().count("lock-lot-node")
        assert connects_before >= 1  # the broker logs each client id it accepts

        second = subprocess.run([*GATEKEEPER, "--config", str(config), "run", "--sim"], capture_output=True,
                                text=True, env=env(), cwd=tmp_path, timeout=120)
        assert second.returncode == 1, second.stderr
        assert f"another gatekeeper (pid {first.pid}) is already running on this lot" in second.stderr
        assert "Traceback" not in second.stderr
        assert "loading the plate reader" not in second.stdout  # refused before the banner and the models

        # The broker never saw the second process (same client id would have kicked the first off).
        assert mosquitto.log_text().count("lock-lot-node") == connects_before
        status = wait_for_status(control, lambda s: s["ready"])
        assert status["pid"] == first.pid and status["sync"]["connected"]
        db = sqlite3.connect(tmp_path / "data" / "gatekeeper.db", timeout=30)
        try:
            starts = db.execute("SELECT count(*) FROM events WHERE kind = 'daemon_started'").fetchone()[0]
        finally:
            db.close()
        assert starts == 1

        # The running daemon as `status --json` and `doctor` see it.
        shown = subprocess.run([*GATEKEEPER, "--config", str(config), "status", "--json"], capture_output=True,
                               text=True, env=env(), cwd=tmp_path, timeout=120)
        live = json.loads(shown.stdout)["daemon"]
        assert live["running"] is True and live["pid"] == first.pid and live["started_at"].endswith("Z")
        checked = subprocess.run([*GATEKEEPER, "--config", str(config), "doctor", "--json", "--no-read"],
                                 capture_output=True, text=True, env=env(), cwd=tmp_path, timeout=120)
        checks = {c["check"]: c for c in json.loads(checked.stdout)["checks"]}
        assert checks["daemon"]["status"] == "ok" and f"pid {first.pid}" in checks["daemon"]["detail"]
        assert "from the daemon" in checks["camera entry-1"]["detail"]
        assert "in use by the daemon" in checks["gpio"]["detail"]
        assert checks["broker"]["status"] == "ok"  # its own client id: the daemon stays connected
        assert mosquitto.log_text().count("lock-lot-node") == connects_before  # nobody took over its client id
    finally:
        first.send_signal(signal.SIGTERM)
        try:
            first.wait(timeout=120)
        except subprocess.TimeoutExpired:
            first.kill()
            first.wait()
        first_log.close()
    assert first.returncode == 0
    assert lock_holder(tmp_path / "data") is None  # released with the process
