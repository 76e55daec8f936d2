"""``gatekeeper doctor``: real files, a real broker, real models; fakes only for timedatectl/systemctl."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gatekeeper.cli.doctor_checks import check_cameras, check_clock, check_gpio, check_systemd
from gatekeeper.config import load_settings
from gatekeeper.store import Store
from tests.broker import Mosquitto, free_port

REPO = Path(__file__).resolve().parents[1]


def write_config(folder: Path, *, port: int, extra: str = "") -> Path:
    path = folder / "config.toml"
    path.write_text(
        '[site]\nlot_id = "doc-lot"\n'
        '[[lanes]]\nid = "entry-1"\ndirection = "entry"\ncamera = "dir:data/cameras/entry-1"\nrelay_pin = 17\n'
        'safety_pins = [27]\n'
        f'[mqtt]\nenabled = true\nhost = "127.0.0.1"\nport = {port}\n'
        '[storage]\ndata_dir = "data"\nmin_free_mb = 1\n' + extra
    )
    return path


def doctor(cwd: Path, *args: str) -> tuple[int, dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEKEEPER_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["GATEKEEPER_MQTT__HMAC_SECRET"] = "test-secret"
    proc = subprocess.run([sys.executable, "-m", "gatekeeper", "doctor", "--json", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["check"]: c for c in report["checks"]}


def make_lot(folder: Path, config: Path) -> None:
    Store.from_settings(load_settings(config)).close()
    (folder / "data" / "cameras" / "entry-1").mkdir(parents=True)


def test_a_sound_lot_passes_the_checks_it_controls(tmp_path: Path, mosquitto: Mosquitto) -> None:
    config = write_config(tmp_path, port=mosquitto.port)
    make_lot(tmp_path, config)
    code, report = doctor(tmp_path, "--no-read")
    checks = by_name(report)
    for name in ("config", "data directory", "database", "camera entry-1", "model plate_g2.onnx",
                 "gpio", "broker"):
        assert checks[name]["status"] == "ok", checks[name]
    assert checks["daemon"]["status"] == "warn" and "no daemon is running" in checks["daemon"]["detail"]
    assert "safety 27 clear" in checks["gpio"]["detail"] and "relay 17 (not driven)" in checks["gpio"]["detail"]
    assert checks["database"]["detail"].endswith("KiB") and "integrity ok" in checks["database"]["detail"]
    assert "test read" not in checks
    assert "hmac secret" not in checks  # given in the environment
    failed = any(c["status"] == "fail" for c in report["checks"])  # clock/systemd depend on this machine
    assert code == (1 if failed else 0) and report["ok"] is (not failed)
    assert all(set(c) == {"check", "status", "detail", "fix", "data"} for c in report["checks"])
    assert all(c["fix"] for c in report["checks"] if c["status"] != "ok")  # every problem says what to do


def test_broken_things_fail_with_the_fix_and_exit_1(tmp_path: Path) -> None:
    config = write_config(tmp_path, port=free_port())  # nobody listens
    make_lot(tmp_path, config)
    db = tmp_path / "data" / "gatekeeper.db"
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    db.write_bytes(b"this is not a database at all" * 200)
    code, report = doctor(tmp_path, "--no-read", "--timeout", "2")
    checks = by_name(report)
    assert code == 1 and report["ok"] is False
    assert checks["database"]["status"] == "fail" and "backup" in checks["database"]["fix"]
    assert checks["broker"]["status"] == "fail" and "refused" in checks["broker"]["detail"].lower()

    db.write_bytes(b"")
    _, report = doctor(tmp_path, "--no-read", "--timeout", "2")
    assert by_name(report)["database"]["status"] == "fail"
    assert "empty (0 bytes)" in by_name(report)["database"]["detail"]


def test_no_database_no_data_dir_and_a_data_dir_that_is_a_file(tmp_path: Path) -> None:
    write_config(tmp_path, port=free_port())
    _, report = doctor(tmp_path, "--no-read", "--timeout", "1")
    checks = by_name(report)
    assert checks["data directory"]["status"] == "warn" and checks["database"]["status"] == "warn"
    assert checks["camera entry-1"]["status"] == "warn"  # `run` creates the watch folder
    assert not (tmp_path / "data").exists()  # doctor created nothing

    (tmp_path / "data").write_text("oops")
    code, report = doctor(tmp_path, "--no-read", "--timeout", "1")
    assert code == 1 and by_name(report)["data directory"]["status"] == "fail"


def test_no_config_is_one_failed_line(tmp_path: Path) -> None:
    if Path("/etc/gatekeeper/config.toml").exists():
        pytest.skip("this machine has /etc/gatekeeper/config.toml")
    code, report = doctor(tmp_path)
    assert code == 1 and [c["check"] for c in report["checks"]] == ["config"]
    assert "no config file found" in report["checks"][0]["detail"] and "config path" in report["checks"][0]["fix"]


@pytest.mark.slow
def test_the_test_read_loads_the_real_models_and_reads_a_drawn_plate(tmp_path: Path, mosquitto: Mosquitto) -> None:
    config = write_config(tmp_path, port=mosquitto.port)
    make_lot(tmp_path, config)
    _, report = doctor(tmp_path)
    read = by_name(report)["test read"]
    assert read["status"] == "ok" and read["data"]["plate"] == "AB123CD" and read["data"]["ms"] > 0


def test_human_output_marks_every_line_and_shows_fixes(tmp_path: Path) -> None:
    write_config(tmp_path, port=free_port())
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEKEEPER_")}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run([sys.executable, "-m", "gatekeeper", "doctor", "--no-read", "--timeout", "1"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 1
    assert lines[0].startswith("ok    config")
    assert any(l.startswith("FAIL  broker") for l in lines)
    assert any(l.strip().startswith("fix: ") for l in lines)
    assert lines[-1].startswith("doctor: ") and "failure(s)" in lines[-1]
    assert proc.stderr.count("checking") == 0  # progress only on a terminal or with --progress
    shown = subprocess.run([sys.executable, "-m", "gatekeeper", "doctor", "--no-read", "--timeout", "1", "--progress"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert "checking the broker..." in shown.stderr and "checking" not in shown.stdout


# --------------------------------------------------------------------------- parts that need the daemon or the OS


def test_cameras_and_pins_come_from_the_running_daemon(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[[lanes]]\nid = "cam"\ndirection = "entry"\ncamera = "rtsp://cam.invalid/s"\nrelay_pin = 17\n'
                      '[[lanes]]\nid = "dead"\ndirection = "exit"\ncamera = "/dev/video9"\nrelay_pin = 22\n')
    settings = load_settings(config)
    daemon = {"running": True, "lanes": [
        {"id": "cam", "gate": "closed", "vehicle_waiting": False, "safety_active": True,
         "camera": {"connected": True, "fps": 12.5, "last_frame_age_s": 0.1, "frames": 900,
                    "resolution": [1280, 720]}},
        {"id": "dead", "gate": "open", "vehicle_waiting": True, "safety_active": False,
         "camera": {"connected": False, "last_error": "no signal"}},
    ]}
    cams = {c.check: c for c in check_cameras(settings, daemon)}
    assert cams["camera cam"].status == "ok" and "12.5 fps, 1280x720" in cams["camera cam"].detail
    assert cams["camera dead"].status == "fail" and "no signal" in cams["camera dead"].detail
    (gpio,) = check_gpio(settings, daemon)
    assert gpio.status == "ok" and "in use by the daemon" in gpio.detail
    assert "cam: gate closed, vehicle waiting False, safety ACTIVE" in gpio.detail


def test_a_camera_that_cannot_be_opened_fails(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[[lanes]]\nid = "vid"\ndirection = "entry"\ncamera = "file:{tmp_path / "missing.mp4"}"\n'
                      'relay_pin = 17\n')
    (cam,) = check_cameras(load_settings(config), {"running": False}, probe_s=0.5)
    assert cam.status == "fail" and cam.fix


def fake_run(outputs: dict[str, tuple[int, str]]) -> Any:
    def run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        code, out = outputs[cmd[0]]
        return subprocess.CompletedProcess(cmd, code, out, "")
    return run


def test_clock_states() -> None:
    have = {"timedatectl": "/usr/bin/timedatectl"}.get
    assert check_clock(fake_run({"timedatectl": (0, "yes\n")}), have)[0].status == "ok"
    unsynced = check_clock(fake_run({"timedatectl": (0, "no\n")}), have)[0]
    assert unsynced.status == "fail" and "set-ntp" in unsynced.fix
    chrony = {"chronyc": "/usr/bin/chronyc"}.get
    assert check_clock(fake_run({"chronyc": (0, "Leap status     : Normal\n")}), chrony)[0].status == "ok"
    assert check_clock(fake_run({}), lambda name: None)[0].status == "warn"


def test_systemd_states() -> None:
    have = {"systemctl": "/usr/bin/systemctl"}.get
    good = "LoadState=loaded\nActiveState=active\nSubState=running\nWatchdogUSec=30s\nNRestarts=0\nUnitFileState=enabled\n"
    assert check_systemd(fake_run({"systemctl": (0, good)}), have)[0].status == "ok"
    failed = good.replace("ActiveState=active", "ActiveState=failed")
    assert check_systemd(fake_run({"systemctl": (0, failed)}), have)[0].status == "fail"
    no_dog = good.replace("WatchdogUSec=30s", "WatchdogUSec=0")
    assert check_systemd(fake_run({"systemctl": (0, no_dog)}), have)[0].status == "warn"
    missing = "LoadState=not-found\nActiveState=inactive\n"
    assert check_systemd(fake_run({"systemctl": (0, missing)}), have)[0].status == "warn"
    assert check_systemd(fake_run({}), lambda name: None)[0].status == "warn"


def test_the_daemon_reports_each_camera_resolution_from_its_newest_frame() -> None:
    import numpy as np

    from gatekeeper.service.status import lane_status

    class Grabber:
        def __init__(self, frame: Any) -> None:
            self.frame = frame

        def latest(self) -> Any:
            return self.frame

    class Runner:
        def __init__(self, frame: Any) -> None:
            self.grabber = Grabber(frame)

        def status(self) -> dict[str, Any]:
            return {"id": "x", "camera": {"connected": True}}

    class Frame:
        image = np.zeros((720, 1280, 3), dtype=np.uint8)

    assert lane_status(Runner(Frame()))["camera"]["resolution"] == [1280, 720]  # type: ignore[arg-type]
    assert lane_status(Runner(None))["camera"]["resolution"] is None  # type: ignore[arg-type]
