"""Console entry points: kiosk-bridge and kioskctl.

Only the command names exist so far; each subcommand says it is not
implemented yet and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys

from . import __version__

BRIDGE_COMMANDS = {
    "demo": "run a demo fleet: broker, bridge, emulated kiosks, dashboard",
    "serve": "run the bridge against a broker",
}
KIOSKCTL_COMMANDS = {
    "deploy": "copy a built firmware tree to a board",
    "status": "show kiosks and their state",
}


def _run(prog: str, commands: dict[str, str], argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in commands.items():
        sub.add_parser(name, help=help_text)
    args = parser.parse_args(argv)
    print(f"{prog}: error: not implemented yet: {args.command}", file=sys.stderr)
    return 2


def bridge_main(argv: list[str] | None = None) -> int:
    return _run("kiosk-bridge", BRIDGE_COMMANDS, argv)


def kioskctl_main(argv: list[str] | None = None) -> int:
    return _run("kioskctl", KIOSKCTL_COMMANDS, argv)
