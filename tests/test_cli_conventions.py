"""The technician's first hour: one config discovery, no invented lots, one output convention, exit codes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gatekeeper.config import load_settings
from gatekeeper.rules import decide_entry
from gatekeeper.store import Store

REPO = Path(__file__).resolve().parents[1]


def run_gk(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it: from ``cwd``, with no GATEKEEPER_* variables unless given."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("GATEKEEPER_")}
    full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "gatekeeper", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=60)


def write_config(folder: Path, *, lot: str = "test-lot") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.toml"
    path.write_text(
        f'[site]\nlot_id = "{lot}"\ncapacity = 5\ntimezone = "America/New_York"\ncurrency = "USD"\n'
        '[storage]\ndata_dir = "data"\n[mqtt]\nenabled = false\n'
        '[[lanes]]\nid = "exit-1"\ndirection = "exit"\ncamera = "dir:cams/exit-1"\nrelay_pin = 22\n'
    )
    return path


def seed(config: Path, plate: str, *, hours_ago: float) -> None:
    with Store.from_settings(load_settings(config)) as store:
        at = datetime.now(UTC) - timedelta(hours=hours_ago)
        d = decide_entry(plate, now=at, lot=store.lot_state())
        store.record_decision(d, lane="entry-1", direction="entry", plate_read=plate, photo=None, now=at)


# --------------------------------------------------------------------------- discovery


def test_no_config_anywhere_is_exit_2_and_creates_nothing(tmp_path: Path) -> None:
    if Path("/etc/gatekeeper/config.toml").exists():
        pytest.skip("this machine has /etc/gatekeeper/config.toml")
    for command in (["status"], ["sessions", "list"], ["events"], ["run", "--sim"], ["fee", "AB1"]):
        result = run_gk(*command, cwd=tmp_path)
        assert result.returncode == 2, (command, result.stderr)
        assert "no config file found" in result.stderr and "config path" in result.stderr
        assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # no database, no data directory, nothing


def test_config_path_names_the_file_the_reason_and_the_candidates(tmp_path: Path) -> None:
    config = write_config(tmp_path / "site")
    found = run_gk("config", "path", cwd=tmp_path / "site")
    assert found.returncode == 0, found.stderr
    lines = found.stdout.splitlines()
    assert lines[0] == str(config) and "current directory" in lines[1]
    assert re.search(r"--config\s+not given", found.stdout) and re.search(r"\$GATEKEEPER_CONFIG\s+not set", found.stdout)
    assert re.search(r"\./config\.toml\s+used", found.stdout)
    assert re.search(r"/etc/gatekeeper/config\.toml\s+not checked", found.stdout)

    other = write_config(tmp_path / "other", lot="other-lot")
    by_env = json.loads(run_gk("config", "path", "--json", cwd=tmp_path / "site",
                               env={"GATEKEEPER_CONFIG": str(other)}).stdout)
    assert by_env["path"] == str(other) and by_env["reason"] == "named by $GATEKEEPER_CONFIG"
    assert [c["outcome"] for c in by_env["candidates"]] == ["not given", "used", "not checked", "not checked"]
    by_option = json.loads(run_gk("--config", str(config), "config", "path", "--json", cwd=tmp_path,
                                  env={"GATEKEEPER_CONFIG": str(other)}).stdout)
    assert by_option["path"] == str(config) and by_option["candidates"][0]["outcome"] == "used"

    if not Path("/etc/gatekeeper/config.toml").exists():
        none = run_gk("config", "path", cwd=tmp_path)
        assert none.returncode == 2 and none.stdout.startswith("no config file found")


def test_help_states_the_discovery_order_that_readme_documents(tmp_path: Path) -> None:
    order = "--config PATH, then $GATEKEEPER_CONFIG, then ./config.toml, then /etc/gatekeeper/config.toml"
    help_text = " ".join(run_gk("--help", cwd=tmp_path).stdout.split())
    assert order in help_text
    readme = " ".join((REPO / "README.md").read_text().split())
    assert "`--config PATH`, then `$GATEKEEPER_CONFIG`, then `./config.toml`, then `/etc/gatekeeper/config.toml`" in readme


def test_reading_commands_never_create_a_database(tmp_path: Path) -> None:
    write_config(tmp_path)
    for command in (["status"], ["sessions", "list"], ["events"], ["outbox"], ["history"], ["fee", "AB1"],
                    ["sessions", "pay", "1"], ["allow", "list"], ["allow", "add", "AB1"], ["reservations"]):
        result = run_gk(*command, cwd=tmp_path)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert f"no database at {tmp_path / 'data' / 'gatekeeper.db'}" in result.stderr
    assert not (tmp_path / "data").exists()


# --------------------------------------------------------------------------- the output convention


def test_people_get_local_time_with_offset_and_money_scripts_get_utc_and_minor_units(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    seed(config, "AB123", hours_ago=2.5)
    shown = run_gk("sessions", "show", "1", cwd=tmp_path).stdout
    entry = re.search(r"entry_at: (\S+ \S+)", shown).group(1)  # type: ignore[union-attr]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d-0[45]:00", entry)  # New York, offset shown
    assert "fee_due_now: 7.50 USD" in shown and "amount_paid: 0.00 USD" in shown

    data = json.loads(run_gk("sessions", "show", "1", "--json", cwd=tmp_path).stdout)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", data["entry_at"])
    assert datetime.fromisoformat(data["entry_at"]).astimezone(UTC).hour == datetime.fromisoformat(
        entry).astimezone(UTC).hour
    assert data["fee_due_now"] == 750 and data["amount_paid"] == 0 and data["currency"] == "USD"

    fee = json.loads(run_gk("fee", "AB123", "--json", cwd=tmp_path).stdout)
    assert fee == [{"id": 1, "plate": "AB123", "status": "open", "fee_due_now": 750, "currency": "USD"}]
    events = run_gk("events", cwd=tmp_path).stdout
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d-0[45]:00 +entry-1 +entry", events, re.M)


def test_json_is_json_all_the_way_down(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    seed(config, "AB123", hours_ago=1)
    assert run_gk("sessions", "pay", "1", "--reference", "desk-7", cwd=tmp_path).returncode == 0

    def no_json_strings(node: object, where: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                no_json_strings(v, f"{where}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                no_json_strings(v, f"{where}[{i}]")
        elif isinstance(node, str) and node[:1] in "{[":
            raise AssertionError(f"{where} is a string holding JSON: {node[:60]}")

    for line in run_gk("events", "--json", cwd=tmp_path).stdout.splitlines():
        event = json.loads(line)
        no_json_strings(event, "event")
        assert event["data"] is None or isinstance(event["data"], dict)
    paid = [json.loads(l) for l in run_gk("events", "--json", cwd=tmp_path).stdout.splitlines()][-1]
    assert paid["kind"] == "paid" and paid["data"]["by"] == "technician" and paid["data"]["reference"] == "desk-7"
    for command in (["status", "--json"], ["sessions", "list", "--all", "--json"], ["history", "--json"],
                    ["outbox", "--json"], ["config", "check", "--json"], ["config", "path", "--json"],
                    ["sessions", "edit", "1", "--plate", "AB124", "--json"],
                    ["allow", "add", "ST1", "--schedule", "Mon-Fri 07:00-19:00", "--json"], ["allow", "list", "--json"],
                    ["reservations", "--json"]):
        result = run_gk(*command, cwd=tmp_path)
        assert result.returncode == 0, (command, result.stderr)
        no_json_strings(json.loads(result.stdout), " ".join(command))


def test_commands_that_need_the_daemon_exit_3_when_none_runs(tmp_path: Path) -> None:
    write_config(tmp_path)
    for command in (["arrive", "exit-1", "--plate", "AB123"], ["open", "exit-1", "--reason", "test"]):
        result = run_gk(*command, cwd=tmp_path)
        assert result.returncode == 3, (command, result.stderr)
        assert "no daemon is running" in result.stderr and str(tmp_path / "data" / "control.sock") in result.stderr
    unknown = run_gk("open", "nope", "--reason", "x", cwd=tmp_path)
    assert unknown.returncode == 2 and "no lane 'nope'" in unknown.stderr
    assert run_gk("sessions", "list", "--bogus", cwd=tmp_path).returncode == 2  # argparse: usage error
