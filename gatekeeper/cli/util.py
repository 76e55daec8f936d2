"""Small helpers every CLI command shares: settings, errors, tables, times."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, tzinfo
from typing import Any, Iterable, NoReturn, Sequence

from gatekeeper.config import ConfigError, Settings, load_settings
from gatekeeper.rules import format_money
from gatekeeper.store import Store, StoreError


def fail(message: str, code: int = 1) -> NoReturn:
    """One clear line on stderr and a non-zero exit: what a technician's script can test."""
    print(f"gatekeeper: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The configuration named by ``--config`` (or GATEKEEPER_CONFIG), or exit 2 naming the bad keys."""
    try:
        return load_settings(getattr(args, "config", None))
    except ConfigError as exc:
        lines = str(exc).splitlines()
        print("gatekeeper: error: invalid configuration:", file=sys.stderr)
        for line in lines:
            print(f"  {line}", file=sys.stderr)
        raise SystemExit(2) from None


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str, ensure_ascii=False))


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
    if value is None:
        return "-"
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def local_time(iso: str | None, tz: tzinfo) -> str | None:
    """Stored UTC instant -> the site's wall-clock time, for people."""
    if not iso:
        return None
    return datetime.fromisoformat(iso).astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")


def parse_since(text: str, tz: tzinfo) -> datetime:
    """``2026-11-23`` or ``2026-11-23T08:00`` in the site's time zone (or with an explicit offset)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        fail(f"--since: {text!r} is not a date (use YYYY-MM-DD or YYYY-MM-DDTHH:MM)")
    return moment if moment.tzinfo else moment.replace(tzinfo=tz)


def rows_with_local_times(rows: Iterable[dict[str, Any]], keys: Sequence[str], tz: tzinfo) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        row = dict(row)
        for key in keys:
            if key in row:
                row[key] = local_time(row[key], tz)
        out.append(row)
    return out


SESSION_COLUMNS = ("id", "plate", "status", "entry_lane", "entry_at", "paid_at", "amount_paid", "exit_at")
TIME_KEYS = ("entry_at", "paid_at", "exit_at", "at", "created_at", "sent_at")


def open_store(settings: Settings) -> Store:
    try:
        return Store.from_settings(settings)
    except (OSError, StoreError) as exc:
        fail(f"cannot open the database {settings.storage.database_path}: {exc}")
    except Exception as exc:  # sqlite3.DatabaseError: not a database, corrupt, locked
        fail(f"cannot open the database {settings.storage.database_path}: {exc}")


def money(settings: Settings, minor: int | None) -> str:
    return format_money(minor or 0, settings.site.currency, settings.site.currency_digits)
