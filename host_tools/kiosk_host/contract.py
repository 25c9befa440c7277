"""The contract the kiosk and the host share, read from the firmware's own
`firmware/kiosk/contract.py`: the protocol version, the operation table
with each operation's arguments, the operation states and the journal
record kinds. Loaded from that one file, so the bridge and the firmware can
never disagree about them."""

from __future__ import annotations

import importlib.util
import sys

from . import paths

_SOURCE = paths.FIRMWARE_DIR / "kiosk" / "contract.py"


def _load():
    spec = importlib.util.spec_from_file_location("kiosk_contract", _SOURCE)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot read the kiosk contract at {_SOURCE}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_c = _load()
sys.modules.setdefault("kiosk_contract", _c)

VERSION: int = _c.VERSION
MAX_PAYLOAD: int = _c.MAX_PAYLOAD
TEXT_MAX: int = _c.TEXT_MAX
TERMINAL: tuple[str, ...] = _c.TERMINAL
STATES: tuple[str, ...] = _c.STATES
PHYSICAL: dict[str, dict[str, type]] = _c.PHYSICAL
IMMEDIATE: dict[str, dict[str, type]] = _c.IMMEDIATE
NEEDS_SERVICE: tuple[str, ...] = _c.NEEDS_SERVICE
DOOR_CYCLE: tuple[str, ...] = _c.DOOR_CYCLE
STOCK_MOVES: tuple[str, ...] = _c.STOCK_MOVES
OPTIONAL: dict[str, dict[str, type]] = _c.OPTIONAL
SCAN_WRONG: tuple[str, ...] = _c.SCAN_WRONG
SCAN_REASONS: tuple[str, ...] = _c.SCAN_REASONS
BUTTONS: tuple[str, ...] = _c.BUTTONS
KINDS: tuple[str, ...] = _c.KINDS
# Operations the kiosk's link handles itself (resend, firmware updates).
LINK_OPS: dict[str, dict[str, type]] = _c.LINK_OPS
OTA_TOPIC: str = _c.OTA_TOPIC
OTA_CHUNK: int = _c.OTA_CHUNK
OTA_EVENTS: tuple[str, ...] = _c.OTA_EVENTS
# Every operation a host may ask a kiosk's controller for, with its arguments.
OPS: dict[str, dict[str, type]] = {**_c.PHYSICAL, **_c.IMMEDIATE}

# The journal record kinds, by the same names as on the kiosk.
K_BOOT: str = _c.K_BOOT
K_OP: str = _c.K_OP
K_REFUSED: str = _c.K_REFUSED
K_PICKUP: str = _c.K_PICKUP
K_RESTOCK: str = _c.K_RESTOCK
K_STOCK: str = _c.K_STOCK
K_DOOR: str = _c.K_DOOR
K_MOTOR: str = _c.K_MOTOR
K_FAULT: str = _c.K_FAULT
K_SENSOR: str = _c.K_SENSOR
K_TEMP: str = _c.K_TEMP
K_SERVICE: str = _c.K_SERVICE
K_SELFTEST: str = _c.K_SELFTEST
K_CLOCK: str = _c.K_CLOCK
K_JOURNAL_OVERFLOW: str = _c.K_JOURNAL_OVERFLOW
K_RETRIEVE: str = _c.K_RETRIEVE
K_SCAN: str = _c.K_SCAN
K_BUTTON: str = _c.K_BUTTON
K_OTA: str = _c.K_OTA
K_JOURNAL_LOST: str = _c.K_JOURNAL_LOST
K_STORAGE: str = _c.K_STORAGE
# Refusals that never change a command's outcome (see the firmware's contract).
COPY_REFUSALS: tuple[str, ...] = _c.COPY_REFUSALS
COALESCED: str = _c.COALESCED
