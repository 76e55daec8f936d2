"""The ``gatekeeper`` command: the technician's tool and the daemon's entry point.

Read-only and admin commands work straight on the SQLite file through the same
store and rules the daemon uses, so they work with the daemon stopped. Commands
that move a barrier (``open``, ``arrive``) go through the daemon's socket.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from gatekeeper import __version__
from gatekeeper.cli import config_check, events, lists, sessions, status
from gatekeeper.config import DISCOVERY_ORDER

#: Modules that add their own subcommands with ``register(subparsers)``, in help order.
CORE_COMMANDS = (config_check, status, sessions, lists, events)
#: Optional parts, skipped when not installed in this build.
COMMAND_MODULES = ("gatekeeper.cli.read", "gatekeeper.cli.daemon", "gatekeeper.cli.doctor", "gatekeeper.cli.resolve")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gatekeeper",
        description="Unattended parking lane: plate reading, barrier, sessions and cloud sync.",
        epilog=f"The config file is the first of: {DISCOVERY_ORDER} (`gatekeeper config path` shows which and why). "
        "Exit codes: 0 done, 1 refused (by the lane or the store) or a check failed, 2 usage or configuration "
        "error, 3 the daemon is not reachable.",
    )
    parser.add_argument("--config", metavar="PATH",
                        help="config file (default: $GATEKEEPER_CONFIG, else ./config.toml, else /etc/gatekeeper/config.toml)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("--version", action="version", version=f"gatekeeper {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in CORE_COMMANDS:
        module.register(sub)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue  # an optional part not installed in this build
        module.register(sub)
    return parser


def hoist_config_option(argv: Sequence[str]) -> list[str]:
    """Accept ``--config PATH`` after the subcommand too (``gatekeeper run --config X``)."""
    argv = list(argv)
    front: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] == "--":
            break
        if argv[i] == "--config" and i + 1 < len(argv):
            front += argv[i : i + 2]
            del argv[i : i + 2]
            continue
        if argv[i].startswith("--config="):
            front.append(argv.pop(i))
            continue
        i += 1
    return front + argv


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(hoist_config_option(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2) if args.command != "run" else logging.INFO - 10 * min(args.verbose, 1),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
