"""Small helpers every CLI command shares: settings, errors, exit codes, and the one output convention.

The convention (docs/operations.md, "Output conventions"): people read times in the
lot's time zone with the offset shown (``2026-12-01 13:10:05+01:00``) and money as
``4.50 EUR``; scripts (``--json``) get ISO 8601 UTC times (``2026-12-01T12:10:05.123Z``),
money as integer minor units with a ``currency`` field, and nested data as JSON
objects, never as strings holding JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime, tzinfo
from typing import Any, Iterable, NoReturn, Sequence

from gatekeeper.config import ConfigError, Settings, load_settings
from gatekeeper.rules import format_money
from gatekeeper.store import Store, StoreError

#: Exit codes scripts may rely on (docs/operations.md).
EXIT_OK = 0
EXIT_REFUSED = 1  # the lane or the store refused (gate shut, lot full, session closed ...), or a check failed
EXIT_USAGE = 2  # bad arguments, no or invalid config file, no database where the config says
EXIT_NO_DAEMON = 3  # the command needs the daemon and none answered on the control socket

#: Keys that hold a stored UTC instant (ISO text) in rows the commands print.
TIME_KEYS = frozenset({"entry_at", "paid_at", "exit_at", "at", "created_at", "sent_at", "oldest_pending_at",
                       "started_at", "updated_at", "valid_from", "valid_until", "uploaded_at", "next_try_at"})
#: Keys that hold money in minor units.
MONEY_KEYS = frozenset({"amount_paid", "fee_charged", "fee_due_now", "fee_due", "amount"})
#: Keys that the store keeps as JSON text; output carries them as JSON values.
JSON_TEXT_KEYS = frozenset({"data"})


def fail(message: str, code: int = EXIT_REFUSED) -> NoReturn:
    """One clear line on stderr and a non-zero exit: what a technician's script can test."""
    print(f"gatekeeper: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def settings_from_args(args: argparse.Namespace, *, require_file: bool = True) -> Settings:
    """The configuration the one discovery finds (``gatekeeper config path``), or exit 2 saying why."""
    try:
        return load_settings(getattr(args, "config", None), require_file=require_file)
    except ConfigError as exc:
        lines = str(exc).splitlines()
        if len(lines) == 1 and lines[0].startswith("no config file found"):
            fail(lines[0], EXIT_USAGE)
        print("gatekeeper: error: invalid configuration:", file=sys.stderr)
        for line in lines:
            print(f"  {line}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


# --------------------------------------------------------------------------- the output convention


def human_time(iso: str | None, tz: tzinfo) -> str | None:
    """Stored UTC instant -> the lot's wall-clock time with its offset: ``2026-12-01 13:10:05+01:00``."""
    if not iso:
        return None
    moment = datetime.fromisoformat(iso)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(tz).isoformat(sep=" ", timespec="seconds")


def json_time(iso: str | None) -> str | None:
    """Stored instant -> ISO 8601 UTC with a ``Z``: ``2026-12-01T12:10:05.123Z``."""
    if not iso:
        return None
    moment = datetime.fromisoformat(iso)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# Kept for callers that used the old name.
local_time = human_time


def money(settings: Settings, minor: int | None) -> str:
    """Minor units -> ``4.50 EUR``."""
    return format_money(minor or 0, settings.site.currency, settings.site.currency_digits)


def for_json(value: Any, settings: Settings) -> Any:
    """A row (or a list or nest of them) in the JSON convention: UTC times, typed nested data,
    integer money with its ``currency``."""
    if isinstance(value, list | tuple):
        return [for_json(v, settings) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    has_money = False
    for key, item in value.items():
        if (key in TIME_KEYS or key.endswith("_at")) and isinstance(item, str):
            item = _safe(json_time, item)
        elif key in JSON_TEXT_KEYS and isinstance(item, str):
            try:
                item = json.loads(item)
            except ValueError:
                pass  # not JSON text after all: keep the string
        elif key in MONEY_KEYS and isinstance(item, int) and not isinstance(item, bool):
            has_money = True
        out[key] = for_json(item, settings)
    if has_money and "currency" not in out:
        out["currency"] = settings.site.currency
    return out


def for_people(row: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """A row in the human convention: times in the lot's zone with the offset, money as ``4.50 EUR``."""
    tz = settings.site.tz
    out = dict(row)
    for key, item in row.items():
        if (key in TIME_KEYS or key.endswith("_at")) and isinstance(item, str):
            out[key] = _safe(lambda text: human_time(text, tz), item)
        elif key in MONEY_KEYS and isinstance(item, int) and not isinstance(item, bool):
            out[key] = money(settings, item)
    return out


def _safe(convert: Any, text: str) -> Any:
    try:
        return convert(text)
    except ValueError:
        return text


def print_json(data: Any, settings: Settings | None = None, *, indent: int | None = 2) -> None:
    """JSON on stdout, in the convention when ``settings`` is given."""
    if settings is not None:
        data = for_json(data, settings)
    print(json.dumps(data, indent=indent, default=str, ensure_ascii=False), flush=True)


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], *, empty: str = "(none)") -> None:
    """A plain aligned table; wide cells are shortened so lines stay readable."""
    if not rows:
        print(empty)
        return
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_since(text: str, tz: tzinfo, *, option: str = "--since") -> datetime:
    """``2026-11-23`` or ``2026-11-23T08:00`` in the site's time zone (or with an explicit offset)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        fail(f"{option}: {text!r} is not a date (use YYYY-MM-DD or YYYY-MM-DDTHH:MM)", EXIT_USAGE)
    return moment if moment.tzinfo else moment.replace(tzinfo=tz)


def rows_for_people(rows: Iterable[dict[str, Any]], settings: Settings) -> list[dict[str, Any]]:
    return [for_people(row, settings) for row in rows]


def rows_with_local_times(rows: Iterable[dict[str, Any]], keys: Iterable[str], tz: tzinfo) -> list[dict[str, Any]]:
    """Older helper kept for commands written before the convention: only the times, for people."""
    wanted = set(keys)
    return [{k: (human_time(v, tz) if k in wanted and isinstance(v, str) else v) for k, v in row.items()} for row in rows]


SESSION_COLUMNS = ("id", "plate", "status", "entry_lane", "entry_at", "paid_at", "amount_paid", "exit_at")


def open_store(settings: Settings) -> Store:
    """The lot's existing database; never creates one (only ``gatekeeper run`` does, in the data directory)."""
    path = settings.storage.database_path
    if not path.is_file():
        fail(
            f"no database at {path}: this lot has no stored state "
            f"(config {settings.source or 'built-in defaults'}; is it the right one? `gatekeeper config path`; "
            "the daemon creates the database on its first start)",
            EXIT_USAGE,
        )
    try:
        return Store.from_settings(settings)
    except (OSError, StoreError) as exc:
        fail(f"cannot open the database {path}: {exc}")
    except Exception as exc:  # sqlite3.DatabaseError: not a database, corrupt, locked
        fail(f"cannot open the database {path}: {exc}")
