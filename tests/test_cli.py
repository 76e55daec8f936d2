"""The technician's CLI and the configuration, through real subprocesses."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gatekeeper.config import ConfigError, load_settings, read_secret
from gatekeeper.rules import decide_entry
from gatekeeper.store import Store

REPO = Path(__file__).resolve().parents[1]


def gk(*args: str, config: Path | None = None, env: dict[str, str] | None = None,
       stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "gatekeeper.cli"]
    if config:
        cmd += ["--config", str(config)]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("GATEKEEPER_")}
    full_env.update(env or {})
    return subprocess.run(cmd + list(args), capture_output=True, text=True, env=full_env, input=stdin, timeout=60)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        '[site]\nlot_id = "test-lot"\ncapacity = 5\ntimezone = "Europe/Berlin"\n'
        '[storage]\ndata_dir = "data"\n[mqtt]\nenabled = false\n'
    )
    return path


def seed(config: Path, *plates: str, hours_ago: float = 2) -> None:
    settings = load_settings(config)
    with Store.from_settings(settings) as store:
        at = datetime.now(UTC) - timedelta(hours=hours_ago)
        for plate in plates:
            d = decide_entry(plate, now=at, lot=store.lot_state())
            store.record_decision(d, lane="entry-1", direction="entry", plate_read=plate, photo="/p/x.jpg", now=at)


# --------------------------------------------------------------------------- configuration


def test_repository_config_is_valid_and_describes_a_simulated_lot() -> None:
    settings = load_settings(REPO / "config.toml")
    assert [(l.id, l.direction) for l in settings.lanes] == [("entry-1", "entry"), ("exit-1", "exit")]
    assert settings.hardware.pin_factory == "mock"
    assert all(l.camera.startswith("dir:") for l in settings.lanes)


def test_help_and_config_check_succeed() -> None:
    assert gk("--help").returncode == 0
    result = gk("config", "check", config=REPO / "config.toml")
    assert result.returncode == 0, result.stderr
    assert "configuration OK" in result.stdout and "[tariff]" in result.stdout


def test_misspelt_key_fails_naming_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[tariff]\ngrace_minuts = 10\n[[lanes]]\nid = "e"\ndirection = "sideways"\ncamera = "0"\nrelay_pin = 4\n')
    result = gk("config", "check", config=bad)
    assert result.returncode == 2
    assert "tariff.grace_minuts: unknown key" in result.stderr
    assert "lanes.0.direction" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "toml, key",
    [
        ('[site]\ncapacity = -1\n', "site.capacity"),
        ('[site]\ntimezone = "Mars/Olympus"\n', "site.timezone"),
        ('[mqtt]\nport = "eighty"\n', "mqtt.port"),
        ('[anpr]\nrecognizer = "latin_g2"\n', "anpr.recognizer"),
        ("[site\n", "not valid TOML"),
    ],
)
def test_bad_values_are_reported_with_their_path(tmp_path: Path, toml: str, key: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_settings(path)


def test_reader_files_are_relative_to_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[anpr]\ntuning_file = "models/site.pt"\nmodel_dir = "/opt/weights"\n')
    anpr = load_settings(path).anpr
    assert anpr.tuning_file == tmp_path / "models" / "site.pt"
    assert anpr.model_dir == Path("/opt/weights")


def test_environment_overrides_file_and_secrets_stay_out_of_files(tmp_path: Path, config: Path) -> None:
    result = gk("config", "check", "--json", config=config,
                env={"GATEKEEPER_MQTT__HOST": "broker.lan", "GATEKEEPER_MQTT__HMAC_SECRET": "s3cret"})
    data = json.loads(result.stdout)
    assert data["mqtt"]["host"] == "broker.lan"
    assert data["mqtt"]["hmac_secret"] == "********" and "s3cret" not in result.stdout
    leaky = tmp_path / "leaky.toml"
    leaky.write_text('[cloud]\ntoken = "abc"\n')
    result = gk("config", "check", config=leaky)
    assert result.returncode == 2 and "cloud.token: secrets may not be written" in result.stderr


def test_secret_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("from-file\n")
    assert read_secret(None, secret, "x") == "from-file"
    with pytest.raises(ConfigError, match="cannot read secret file"):
        read_secret(None, tmp_path / "missing", "mqtt.hmac_secret")


def test_missing_config_file_is_one_clear_line(tmp_path: Path) -> None:
    result = gk("status", config=tmp_path / "nope.toml")
    assert result.returncode == 2 and "config file not found" in result.stderr


# --------------------------------------------------------------------------- sessions


def test_status_and_sessions_list(config: Path) -> None:
    seed(config, "AB123", "CD456")
    status = json.loads(gk("status", "--json", config=config).stdout)
    assert status["occupancy"] == {"capacity": 5, "occupied": 2, "free": 3}
    assert status["outbox"]["pending"] == 4  # two entries, two occupancy updates
    assert status["daemon"]["running"] is False
    assert status["daemon"]["socket"] == str(config.parent / "data" / "control.sock")
    text = gk("status", config=config).stdout
    assert "2/5 occupied" in text and "AB123" in text
    assert f"no daemon is running (no answer on {config.parent / 'data' / 'control.sock'})" in text
    rows = json.loads(gk("sessions", "list", "--json", config=config).stdout)
    assert {r["plate"] for r in rows} == {"AB123", "CD456"}
    assert "CD456" not in gk("sessions", "list", "--plate", "ab-123", config=config).stdout


def test_show_fee_pay_then_fee_is_zero(config: Path) -> None:
    seed(config, "AB123", hours_ago=2.5)
    show = json.loads(gk("sessions", "show", "1", "--json", config=config).stdout)
    assert show["photo"] == "/p/x.jpg" and show["fee_due_now"] == 750
    assert "7.50 EUR due now" in gk("fee", "AB123", config=config).stdout
    assert "7.50 EUR due now" in gk("fee", "1", config=config).stdout
    paid = gk("sessions", "pay", "1", "--reference", "desk-7", config=config)
    assert paid.returncode == 0 and "marked paid: 7.50 EUR" in paid.stdout
    assert "0.00 EUR due now" in gk("fee", "AB123", config=config).stdout
    events = [json.loads(l) for l in gk("events", "--json", config=config).stdout.splitlines()]
    assert events[-1]["kind"] == "paid" and events[-1]["data"]["by"] == "technician"
    outbox = json.loads(gk("outbox", "--json", config=config).stdout)
    assert "events/paid" in [r["topic"] for r in outbox["rows"]]


def test_edit_and_delete(config: Path) -> None:
    seed(config, "AB123")
    assert "AB123 -> AB128" in gk("sessions", "edit", "1", "--plate", "AB-128", config=config).stdout
    refused = gk("sessions", "delete", "1", config=config)
    assert refused.returncode == 1 and "open and unpaid" in refused.stderr
    gk("sessions", "pay", "1", "--amount", "0", config=config)
    assert gk("sessions", "delete", "1", config=config).returncode == 0
    assert json.loads(gk("sessions", "list", "--all", "--json", config=config).stdout) == []


@pytest.mark.parametrize(
    "args, message",
    [
        (("sessions", "show", "99"), "no session 99"),
        (("sessions", "pay", "99"), "no session 99"),
        (("sessions", "edit", "99", "--plate", "X"), "no session 99"),
        (("fee", "ZZ999"), "no open session"),
        (("history", "--since", "yesterday"), "is not a date"),
    ],
)
def test_errors_are_one_line_and_non_zero(config: Path, args: tuple[str, ...], message: str) -> None:
    seed(config)  # an existing lot with no sessions
    result = gk(*args, config=config)
    assert result.returncode != 0
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


# --------------------------------------------------------------------------- access lists


def test_allow_list_with_a_weekly_schedule(config: Path) -> None:
    seed(config)  # an existing lot (Europe/Berlin)
    added = gk("allow", "add", "st-1", "--schedule", "Mon-Fri 07:00-19:00", "--schedule", "Sat 06:00-09:00",
               "--note", "staff", config=config)
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "allow list: ST1 added, Mon-Fri 07:00-19:00; Sat 06:00-09:00 (Europe/Berlin)"
    assert gk("allow", "add", "CL 1", "--schedule", "Fri 22:00-06:00; Sun 10:00-24:00", "--until", "2030-01-01",
              config=config).returncode == 0
    assert gk("allow", "add", "VIP1", config=config).stdout.strip() == "allow list: VIP1 added, always"

    table = gk("allow", "list", config=config).stdout
    assert re.search(r"^ST1 +Mon-Fri 07:00-19:00; Sat 06:00-09:00 +(yes|no) +- +- +staff ", table, re.M), table
    assert re.search(r"^CL1 +Fri 22:00-06:00; Sun 10:00-24:00 +(yes|no) +- +2030-01-01 00:00:00\+01:00", table, re.M)
    assert re.search(r"^VIP1 +always +yes ", table, re.M)
    assert "schedules are in the lot's time zone, Europe/Berlin" in table
    rows = {r["plate"]: r for r in json.loads(gk("allow", "list", "--json", config=config).stdout)}
    assert rows["ST1"]["schedule"] == [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "07:00", "end": "19:00"},
                                       {"days": ["sat"], "start": "06:00", "end": "09:00"}]
    assert rows["CL1"]["valid_until"] == "2029-12-31T23:00:00.000Z" and rows["VIP1"]["schedule"] is None
    assert rows["VIP1"]["active_now"] is True

    # What the CLI wrote is what the lane's rules read, in the lot's zone.
    with Store.from_settings(load_settings(config)) as store:
        berlin = load_settings(config).site.tz
        staff = {e.plate: e for e in store.list_entries()}["ST1"]
        assert staff.active(datetime(2026, 11, 23, 18, 59, tzinfo=berlin))  # a Monday
        assert not staff.active(datetime(2026, 11, 23, 19, 0, tzinfo=berlin))

    removed = gk("allow", "remove", "VIP 1", "NOPE1", config=config)
    assert removed.returncode == 1 and removed.stdout.strip() == "allow list: 1 of 2 removed"
    assert [r["plate"] for r in json.loads(gk("allow", "list", "--json", config=config).stdout)] == ["CL1", "ST1"]


@pytest.mark.parametrize(
    "schedule, message",
    [
        ("Mon-Fry 07:00-19:00", "--schedule: 'Mon-Fry 07:00-19:00': unknown day 'Fry'"),
        ("Mon 07:00-07:00", "is empty (the whole day is 00:00-24:00)"),
        ("Mon 7-19", "start '7' is not a time (HH:MM)"),
        ("weekdays 07:00-19:00", "unknown day 'weekdays'"),
        ("Mon 19:00", "expected days and a time window"),
    ],
)
def test_a_malformed_schedule_is_exit_2_with_one_clear_line(config: Path, schedule: str, message: str) -> None:
    seed(config)
    result = gk("allow", "add", "ST1", "--schedule", "Sat 06:00-09:00", "--schedule", schedule, config=config)
    assert result.returncode == 2
    assert result.stderr.startswith("gatekeeper: error: --schedule: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert json.loads(gk("allow", "list", "--json", config=config).stdout) == []  # nothing stored


def test_deny_list_and_reservations_from_the_cli(config: Path) -> None:
    seed(config)
    assert gk("deny", "add", "BAD 1", "--note", "stolen", config=config).returncode == 0
    refused = gk("deny", "add", "BAD2", "--schedule", "Mon 07:00-08:00", config=config)
    assert refused.returncode == 2 and "--schedule" in refused.stderr  # the deny list has no schedules
    assert [r["plate"] for r in json.loads(gk("deny", "list", "--json", config=config).stdout)] == ["BAD1"]
    backwards = gk("allow", "add", "X1", "--from", "2026-02-01", "--until", "2026-01-01", config=config)
    assert backwards.returncode == 2 and "--until must be after --from" in backwards.stderr
    with Store.from_settings(load_settings(config)) as store:
        now = datetime.now(UTC)
        store.upsert_reservation("weekly-1", "RS1", now - timedelta(days=1), now + timedelta(days=30),
                                 schedule=[{"days": ["tue"], "start": "09:00", "end": "12:00"}])
    table = gk("reservations", config=config).stdout
    assert re.search(r"^weekly-1 +RS1 +\S+ \S+ +\S+ \S+ +Tue 09:00-12:00 +(yes|no)", table, re.M), table
    [row] = json.loads(gk("reservations", "--json", config=config).stdout)
    assert row["schedule"] == [{"days": ["tue"], "start": "09:00", "end": "12:00"}]


def test_history_and_events_tail(config: Path) -> None:
    seed(config, "AB123", "CD456", "AB123X")
    today = datetime.now(UTC).date().isoformat()
    rows = json.loads(gk("history", "--plate", "AB123", "--since", "2000-01-01", "--json", config=config).stdout)
    assert [r["plate"] for r in rows] == ["AB123"]
    assert json.loads(gk("history", "--since", "2999-01-01", "--json", config=config).stdout) == []
    assert len(json.loads(gk("history", "--since", today, "--json", config=config).stdout)) in (0, 3)
    tail = gk("events", "--tail", "2", "--json", config=config).stdout.splitlines()
    assert [json.loads(l)["plate"] for l in tail] == ["CD456", "AB123X"]


def test_events_follow_prints_new_events(config: Path) -> None:
    seed(config, "AB123")
    cmd = [sys.executable, "-m", "gatekeeper.cli", "--config", str(config), "events", "--follow", "--json",
           "--interval", "0.05"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert json.loads(proc.stdout.readline())["plate"] == "AB123"
        seed(config, "NEW1")
        assert json.loads(proc.stdout.readline())["plate"] == "NEW1"
    finally:
        proc.kill()
        proc.wait()


def test_config_option_may_follow_the_subcommand(config: Path) -> None:
    seed(config, "AB123")
    result = gk("sessions", "list", "--json", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert [r["plate"] for r in json.loads(result.stdout)] == ["AB123"]
