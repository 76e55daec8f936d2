"""The store's own safety: a full disk, a lost database file, file permissions."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Iterator

import pytest

from gatekeeper.config import MqttConfig, Settings, SiteConfig, StorageConfig
from gatekeeper.rules import decide_entry
from gatekeeper.store import Store, StoreError
from gatekeeper.store.records import StorageFault

REPO = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)


def settings_for(data_dir: Path) -> Settings:
    return Settings(site=SiteConfig(lot_id="lot-s", capacity=1000), mqtt=MqttConfig(enabled=False),
                    storage=StorageConfig(data_dir=data_dir))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def enter(store: Store, plate: str) -> int | None:
    decision = decide_entry(plate, now=NOW, lot=store.lot_state())
    return store.record_decision(decision, lane="entry-1", direction="entry", plate_read=plate, now=NOW).session_id


def fill_disk(store: Store) -> None:
    """SQLite's max_page_count stands in for a full disk: the same SQLITE_FULL error."""
    pages = store.db.execute("PRAGMA page_count").fetchone()[0]
    store.db.execute(f"PRAGMA max_page_count={pages}")


def free_disk(store: Store) -> None:
    store.db.execute("PRAGMA max_page_count=1073741823")


@pytest.fixture
def loose_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


# --------------------------------------------------------------------------- disk full


def test_disk_full_is_a_clear_storage_fault_then_one_alarm_on_recovery(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    with Store.from_settings(settings_for(tmp_path / "data")) as store:
        kept = [enter(store, f"K {i}") for i in range(3)]
        fill_disk(store)
        caplog.set_level(logging.INFO)
        with pytest.raises(StorageFault, match="disk full") as err:
            for i in range(2000):  # free pages inside the file absorb a few rows first
                enter(store, f"FULL {i}")
        assert isinstance(err.value, StoreError)
        assert store.storage_fault == "disk full"
        assert not store.check_storage()  # still full
        with pytest.raises(StorageFault):
            enter(store, "STILL FULL")
        assert not [r for r in caplog.records if r.exc_info], "no traceback for a full disk"
        assert sum("STORAGE FAULT" in r.getMessage() for r in caplog.records) == 1
        before = {s["plate"] for s in store.sessions()}

        free_disk(store)
        assert store.check_storage() and store.storage_fault is None
        alarms = store.events(kinds=["alarm", "alarm_cleared"])
        assert [(e["kind"], e["reason"]) for e in alarms] == [("alarm", "storage_fault"), ("alarm_cleared", "storage_ok")]
        queued = [r.topic for r in store.outbox_pending(limit=10_000)]
        assert "events/alarm" in queued and "events/alarm_cleared" in queued
        assert enter(store, "AFTER 1") is not None
        assert {store.session(sid)["plate"] for sid in kept if sid} <= before  # nothing committed was lost
        assert store.check_storage()
        assert len(store.events(kinds=["alarm"])) == 1  # one alarm per fault


# --------------------------------------------------------------------------- a lost database


def test_first_open_creates_a_lot_and_says_so(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "data")
    with Store.from_settings(settings) as store:
        assert store.created
        enter(store, "A 1")
    with Store.from_settings(settings) as store:
        assert not store.created and len(store.sessions()) == 1
    assert (tmp_path / "data" / "gatekeeper.db.lot").is_file()


@pytest.mark.parametrize("loss", ["zero_length", "missing"])
def test_a_lost_database_next_to_a_lots_state_is_refused(tmp_path: Path, loss: str) -> None:
    settings = settings_for(tmp_path / "data")
    with Store.from_settings(settings) as store:
        enter(store, "A 1")
    db = settings.storage.database_path
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    if loss == "zero_length":
        db.write_bytes(b"")
    with pytest.raises(StoreError, match="refusing to start a new, empty lot"):
        Store.from_settings(settings)
    assert not db.exists() or db.stat().st_size == 0  # nothing was written over it


def test_photos_without_a_database_are_refused_too(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "data")
    photo = settings.storage.photos_path / "2026" / "entry-1-x.jpg"
    photo.parent.mkdir(parents=True)
    photo.write_bytes(b"\xff\xd8")
    with pytest.raises(StoreError, match="photos"):
        Store.from_settings(settings)


def test_gatekeeper_init_creates_a_lot_once(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[site]\nlot_id = "lot-i"\n[storage]\ndata_dir = "{tmp_path / "data"}"\n'
                      '[mqtt]\nenabled = false\n', encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEKEEPER_")} | {"PYTHONPATH": str(REPO)}

    def init() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gatekeeper.cli", "--config", str(config), "init"],
                              capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)

    first = init()
    assert first.returncode == 0 and "created lot 'lot-i'" in first.stdout, first.stderr
    again = init()
    assert again.returncode != 0 and "already holds" in again.stderr
    (tmp_path / "data" / "gatekeeper.db").write_bytes(b"")
    lost = init()
    assert lost.returncode != 0 and "refusing" in lost.stderr and len(lost.stderr.strip().splitlines()) == 1


# --------------------------------------------------------------------------- permissions


def test_data_directory_and_database_files_are_private_whatever_the_umask(tmp_path: Path, loose_umask: None) -> None:
    data = tmp_path / "data"
    with Store.from_settings(settings_for(data)) as store:
        enter(store, "P 1")
        assert mode(data) == 0o700
        for name in ("gatekeeper.db", "gatekeeper.db-wal", "gatekeeper.db-shm", "gatekeeper.db.lot"):
            assert mode(data / name) == 0o600, name


def test_existing_loose_files_are_tightened_and_group_read_is_kept(tmp_path: Path, loose_umask: None) -> None:
    data = tmp_path / "data"
    with Store.from_settings(settings_for(data)) as store:
        enter(store, "P 1")
    os.chmod(data, 0o777)
    os.chmod(data / "gatekeeper.db", 0o666)
    with Store.from_settings(settings_for(data)):
        assert mode(data) == 0o750
        assert mode(data / "gatekeeper.db") == 0o640  # the operators' group may read, nobody else


# --------------------------------------------------------------------------- the lane on a full disk


def test_a_lane_on_a_full_disk_stays_shut_and_asks_for_the_attendant(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from gatekeeper.sim.plates import draw_plate_scene, drop_photo
    from tests.test_lane import HookedPin, LaneRig
    from gatekeeper.vision.reader import PlateReader

    with PlateReader(region="eu", min_confidence=0.3, threads=1) as reader:
        rig = LaneRig(tmp_path, reader)
        try:
            relay = rig.relay("entry-1")
            fill_disk(rig.store)
            caplog.set_level(logging.INFO)
            energised: list[bool] = []
            opened = threading.Event()

            def relay_hook(pin: object, value: bool) -> None:
                energised.append(value)
                opened.set()

            HookedPin.hooks[17] = relay_hook
            for i in range(200):  # denied exits ("no entry record") until the free pages are used up
                try:
                    rig.runners["exit-1"].arrive(f"FILL {i}", by="test")
                except StoreError:
                    break
            with pytest.raises(StorageFault):
                rig.runners["entry-1"].arrive("NO ROOM 1", by="test")
            assert rig.runners["entry-1"].display.last == "Please see attendant"
            # A camera arrival: the same, and one log line, no traceback.
            while not rig.decisions["entry-1"].empty():  # the operator arrivals above
                rig.decisions["entry-1"].get_nowait()
            drop_photo(rig.folders["entry-1"], "car-full", draw_plate_scene("AB123CD"))
            kind, outcome = rig.next_vehicle("entry-1")
            assert (kind, outcome) == ("error", None)
            assert rig.runners["entry-1"].display.last == "Please see attendant"
            assert energised == [] and not relay.state
            assert not [r for r in caplog.records if r.exc_info], "no traceback per arrival"
            assert rig.store.storage_fault == "disk full"

            free_disk(rig.store)
            assert rig.store.check_storage()
            outcome = rig.runners["entry-1"].arrive("ROOM 1", by="test")
            assert outcome.open and opened.wait(10) and energised[0] is True
            assert [e["reason"] for e in rig.store.events(kinds=["alarm"])] == ["storage_fault"]
        finally:
            rig.close()


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MB filesystem (tmpfs), when this machine lets us mount one (root, not in a locked-down container)."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_real_full_filesystem_faults_and_recovers_losing_nothing(tiny_fs: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    with Store.from_settings(settings_for(tiny_fs / "data")) as store:
        before = [enter(store, f"K {i}") for i in range(20)]
        ballast = tiny_fs / "ballast"
        fd = os.open(ballast, os.O_CREAT | os.O_WRONLY, 0o600)
        try:
            while True:
                os.write(fd, b"\0" * 65536)
        except OSError:
            pass  # ENOSPC: the filesystem is full
        finally:
            os.close(fd)
        caplog.set_level(logging.INFO)
        with pytest.raises(StorageFault, match="disk full"):
            for i in range(10_000):
                enter(store, f"FULL {i}")
        assert store.storage_fault == "disk full" and not store.check_storage()
        assert not [r for r in caplog.records if r.exc_info]
        ballast.unlink()
        assert store.check_storage()
        assert [e["reason"] for e in store.events(kinds=["alarm"])] == ["storage_fault"]
        assert enter(store, "AFTER") is not None
        inside = {s["id"] for s in store.sessions()}
    assert set(before) <= inside  # everything committed before the fault is still there
    with Store.from_settings(settings_for(tiny_fs / "data")) as reopened:
        assert {s["id"] for s in reopened.sessions()} == inside


def test_status_shows_the_storage_fault(tmp_path: Path) -> None:
    from gatekeeper.service.status import status_line, status_report

    settings = settings_for(tmp_path / "data")
    with Store.from_settings(settings) as store:
        fill_disk(store)
        with pytest.raises(StorageFault):
            for i in range(2000):
                enter(store, f"FULL {i}")
        report = status_report(settings=settings, store=store, sync=None, lanes={}, sim=False, ready=True,
                               started_at=None, healthy=True)
        assert report["storage_fault"] == "disk full"
        assert "STORAGE FAULT: disk full" in status_line(store=store, sync=None, lanes={})
        free_disk(store)
        store.check_storage()
        assert status_report(settings=settings, store=store, sync=None, lanes={}, sim=False, ready=True,
                             started_at=None, healthy=True)["storage_fault"] is None


def test_an_older_install_without_a_marker_gets_one_and_is_protected_too(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "data")
    with Store.from_settings(settings) as store:
        enter(store, "A 1")
    marker = tmp_path / "data" / "gatekeeper.db.lot"
    marker.unlink()  # as before this guard existed
    with Store.from_settings(settings) as store:
        assert not store.created and len(store.sessions()) == 1
    assert marker.is_file() and "first_seen_at" in marker.read_text()
    settings.storage.database_path.write_bytes(b"")
    with pytest.raises(StoreError, match="refusing"):
        Store.from_settings(settings)
