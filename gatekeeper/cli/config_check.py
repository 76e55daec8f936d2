"""``gatekeeper config check`` (the effective configuration, secrets masked) and
``gatekeeper config path`` (which file every command uses, and why)."""

from __future__ import annotations

import argparse
import json

from gatekeeper.cli.util import EXIT_OK, EXIT_USAGE, print_json, settings_from_args
from gatekeeper.config import DISCOVERY_ORDER, discover_config, masked_dump


def cmd_config_check(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    data = masked_dump(settings)
    if args.json:
        print_json(data)
    else:
        print(f"# configuration OK ({settings.source})")
        for section, body in data.items():
            if section == "lanes":
                for lane in body:
                    print("\n[[lanes]]")
                    for key, value in lane.items():
                        print(f"{key} = {json.dumps(value)}")
            elif isinstance(body, dict):
                print(f"\n[{section}]")
                for key, value in body.items():
                    print(f"{key} = {json.dumps(value, default=str)}")
    return EXIT_OK


def cmd_config_path(args: argparse.Namespace) -> int:
    """Print the file the discovery chose and every candidate; exit 2 when none was found."""
    choice = discover_config(getattr(args, "config", None))
    if args.json:
        print_json(
            {
                "path": str(choice.path) if choice.path else None,
                "reason": choice.reason,
                "exists": bool(choice.path and choice.path.is_file()),
                "candidates": [
                    {"source": c.source, "path": str(c.path) if c.path else None, "outcome": c.outcome}
                    for c in choice.candidates
                ],
            }
        )
    else:
        if choice.path is None:
            print("no config file found")
        else:
            missing = "" if choice.path.is_file() else "  (MISSING: commands will fail)"
            print(f"{choice.path}{missing}")
            print(f"  because: {choice.reason}")
        print(f"  looked for, in order ({DISCOVERY_ORDER}):")
        width = max(len(c.source) for c in choice.candidates)
        for c in choice.candidates:
            where = f" {c.path}" if c.path and c.source != str(c.path) else ""
            print(f"    {c.source:<{width}}  {c.outcome}{where}")
    return EXIT_OK if choice.path is not None and choice.path.is_file() else EXIT_USAGE


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    config = sub.add_parser("config", help="configuration: which file, and what it says").add_subparsers(
        dest="config_cmd", required=True
    )
    check = config.add_parser("check", help="validate and print the effective configuration (secrets masked)")
    check.add_argument("--json", action="store_true")
    check.set_defaults(func=cmd_config_check)
    path = config.add_parser(
        "path", help="which config file the commands use, why, and the candidates tried",
        description=f"The config file is the first of: {DISCOVERY_ORDER}.",
    )
    path.add_argument("--json", action="store_true")
    path.set_defaults(func=cmd_config_path)
