"""``gatekeeper doctor``: one command a technician runs at a new lane; every line ok, warn or fail with the fix.

Checks, in order: the config, the data directory, the database, the daemon, each camera,
the plate reader's models and a test read, the GPIO pins, the broker, the clock and the
systemd unit. Exit code 1 when any line fails, else 0 (warnings are for a person to judge).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from typing import Callable

from gatekeeper.cli.doctor_checks import (
    Check,
    check_broker,
    check_cameras,
    check_clock,
    check_data_dir,
    check_database,
    check_gpio,
    check_models,
    check_systemd,
    daemon_check,
)
from gatekeeper.cli.progress import Progress
from gatekeeper.cli.status import daemon_status
from gatekeeper.cli.util import EXIT_OK, EXIT_REFUSED, print_json
from gatekeeper.config import ConfigError, load_settings

MARK = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}


def run_checks(args: argparse.Namespace, progress: Callable[[str], None]) -> list[Check]:
    try:
        settings = load_settings(getattr(args, "config", None), require_file=True)
    except ConfigError as exc:
        lines = str(exc).splitlines()
        return [Check("config", "fail", "; ".join(lines[:3]) + (" ..." if len(lines) > 3 else ""),
                      "`gatekeeper config path` shows which file is used; `gatekeeper config check` every problem")]
    checks = [Check("config", "ok", f"{settings.source}: lot {settings.site.lot_id}, {len(settings.lanes)} lane(s)",
                    data={"path": str(settings.source), "lot": settings.site.lot_id})]
    if not settings.lanes:
        checks.append(Check("lanes", "fail", "no [[lanes]] configured", "add the lot's lanes to the config file"))
    progress("checking storage...")
    checks += check_data_dir(settings)
    checks += check_database(settings)
    progress("asking the daemon...")
    daemon = daemon_status(settings)
    checks.append(daemon_check(settings, daemon))
    progress("checking cameras...")
    checks += check_cameras(settings, daemon)
    checks += check_models(settings, test_read=not args.no_read, progress=progress)
    progress("checking GPIO...")
    checks += check_gpio(settings, daemon)
    progress("checking the broker...")
    checks += check_broker(settings, timeout_s=args.timeout)
    checks += check_clock()
    checks += check_systemd()
    return checks


def cmd_doctor(args: argparse.Namespace) -> int:
    progress = Progress(enabled=args.progress)
    try:
        checks = run_checks(args, progress.say)
    finally:
        progress.done()
    failed = any(c.status == "fail" for c in checks)
    counts = {s: sum(1 for c in checks if c.status == s) for s in ("ok", "warn", "fail")}
    if args.json:
        print_json({"ok": not failed, "counts": counts, "checks": [asdict(c) for c in checks]})
    else:
        width = max(len(c.check) for c in checks)
        for c in checks:
            print(f"{MARK[c.status]}  {c.check:<{width}}  {c.detail}")
            if c.fix and c.status != "ok":
                print(f"      {'':<{width}}  fix: {c.fix}")
        print(f"doctor: {counts['ok']} ok, {counts['warn']} warning(s), {counts['fail']} failure(s)")
    sys.stdout.flush()
    return EXIT_REFUSED if failed else EXIT_OK


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    doctor = sub.add_parser(
        "doctor", help="check the installation: config, storage, database, cameras, models, GPIO, broker, clock, systemd",
        description="Each line is ok, WARN or FAIL with the fix. Exit code 1 when any line fails.",
    )
    doctor.add_argument("--json", action="store_true")
    doctor.add_argument("--no-read", action="store_true", help="skip loading the plate reader for a test read")
    doctor.add_argument("--timeout", type=float, default=5.0, metavar="S", help="broker connect timeout (5 s)")
    doctor.add_argument("--progress", action="store_true", help="progress on stderr even when it is not a terminal")
    doctor.set_defaults(func=cmd_doctor)
