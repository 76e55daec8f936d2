"""``gatekeeper config check``: the effective configuration, secrets masked."""

from __future__ import annotations

import argparse
import json

from gatekeeper.cli.util import print_json, settings_from_args
from gatekeeper.config import masked_dump

def cmd_config_check(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    data = masked_dump(settings)
    if args.json:
        print_json(data)
    else:
        print(f"# configuration OK ({settings.source or 'built-in defaults'})")
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
    return 0


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    config = sub.add_parser("config", help="configuration").add_subparsers(dest="config_cmd", required=True)
    check = config.add_parser("check", help="validate and print the effective configuration (secrets masked)")
    check.add_argument("--json", action="store_true")
    check.set_defaults(func=cmd_config_check)
