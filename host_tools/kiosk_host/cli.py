"""Console entry points: kiosk-bridge (serve, demo, emulate, users, sites, kiosks) and kioskctl."""

from __future__ import annotations

import sys

from . import __version__

BRIDGE_COMMANDS = {
    "serve": ("run the bridge against a broker", "kiosk_host.bridge.run:serve_main"),
    "demo": ("a demo fleet: broker, bridge, emulated kiosks, dashboard", "kiosk_host.bridge.run:demo_main"),
    "emulate": ("run emulated kiosks against a broker", "kiosk_host.emulator.cli:main"),
    "users": ("users, their roles, passwords and API tokens", "kiosk_host.bridge.admin:users_main"),
    "sites": ("sites: a clinic with its kiosks", "kiosk_host.bridge.admin:sites_main"),
    "kiosks": ("which site each kiosk belongs to", "kiosk_host.bridge.admin:kiosks_main"),
}

USAGE = "usage: kiosk-bridge [--version] {" + ",".join(BRIDGE_COMMANDS) + "} ...\n\n" + "".join(
    f"  {name:<9} {text}\n" for name, (text, _) in BRIDGE_COMMANDS.items()) + \
    "\n`kiosk-bridge COMMAND --help` for a command's options.\n"


def bridge_main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"kiosk-bridge {__version__}")
        return 0
    entry = BRIDGE_COMMANDS.get(argv[0])
    if entry is None:
        print(f"kiosk-bridge: unknown command {argv[0]!r}\n\n{USAGE}", file=sys.stderr, end="")
        return 2
    module, func = entry[1].split(":")
    import importlib

    return getattr(importlib.import_module(module), func)(argv[1:])


def kioskctl_main(argv: list[str] | None = None) -> int:
    from .kioskctl import main

    return main(argv)
