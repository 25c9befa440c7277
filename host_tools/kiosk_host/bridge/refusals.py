"""Why a command did not succeed, as people read it: each code a kiosk (its
gate, kiosk/link/gate.py; its controller and operations, kiosk/core/*; its
drivers, kiosk/hw/*) or the bridge ends a command with, turned into what
happened and what to do next. The code itself stays beside the sentence,
for support.

One table for every screen: the API adds `explanation` to each command
that ended without succeeding, and the dashboard shows it as it comes.
Sentences may name the command's arguments: {bin}, {order}, {door},
{bins}, {excursion}.
"""

from __future__ import annotations

from typing import Any

# code: (what happened, what to do next)
REASONS: dict[str, tuple[str, str]] = {
    # The operation's own rules (kiosk/core/operations.py).
    "bin_empty": ("Bin {bin} is empty: nothing was released.",
                  "Check the order's bin number; if the order was never loaded, a technician restocks it."),
    "bin_mismatch": ("Bin {bin} holds another order, not {order}: nothing was released.",
                     "Check the bin number on the order; the kiosk page's Stock lists what each bin holds."),
    "bin_unverified": ("Bin {bin} was left uncertain by a reset, so the kiosk will not release it.",
                       "A technician opens a service session and verifies the bin (present or empty)."),
    "bin_full": ("Bin {bin} already holds an order, so nothing was loaded.",
                 "Choose an empty bin, or verify this one if the kiosk's record is wrong."),
    "service_in_progress": ("A technician's service session is open; pickups wait until it ends.",
                            "Ask the technician to end the session, then request the pickup again."),
    "excursion_hold": ("Pickups are held because of a temperature excursion not yet cleared.",
                       "A pharmacist reviews the excursion on the kiosk page and clears it; then try again."),
    "label_mismatch": ("The package's label is not order {order}: the service door stayed locked.",
                       "Check that you hold the package for {order}, then restock again and scan its label."),
    "no_label": ("Nobody scanned the package's label in time; the service door stayed locked.",
                 "Restock again and scan the label at the kiosk's scanner when asked."),
    "no_scanner": ("This kiosk has no scanner for the label check.",
                   "Ask support to turn off the label check for this kiosk, or fit a scanner."),
    "scan_not_pending": ("The patient's scan is no longer waiting for an answer (answered, or timed out).",
                         "Ask the patient to scan the code again."),
    "no_service_session": ("This needs a service session, and none is open.",
                           "Start a service session first (Service panel), then try again."),
    "not_homed": ("The carousel does not know its position, so it cannot jog.",
                  "Run Home first, then jog."),
    # Interlocks (kiosk/core/controller.py).
    "other_door_open": ("Another door is unlocked or open; only one door is unlocked at a time.",
                        "Close the other door and wait for its bolt to engage, then try again."),
    "carousel_moving": ("The carousel is moving; no door unlocks while it moves.",
                        "Wait for the current operation to finish, then try again."),
    "door_not_secure": ("A door is open or unlocked, and the carousel never moves then.",
                        "Close every door and check that its bolt engages, then try again."),
    "busy": ("The kiosk's queue is full.", "Wait for the running operations to finish, then try again."),
    "bad_bin": ("Bin {bin} does not exist on this kiosk.", "Use a bin number printed on the carousel."),
    "bad_door": ("This kiosk has no {door} door.", "Choose the pickup or the service door."),
    "unknown_excursion": ("The kiosk has no record of excursion {excursion} to clear.",
                          "Reload the kiosk page: it may have been cleared already."),
    "excursion_ongoing": ("Excursion {excursion} is still going on, so it cannot be cleared yet.",
                          "Wait until the temperature is back in range and the excursion has ended."),
    "unknown_target": ("The command to cancel had already ended or never reached the kiosk.",
                       "Nothing to do: check the command's own state."),
    "duplicate": ("The kiosk has already seen a command with this id.", "Send the request again as a new one."),
    # The door cycle (kiosk/core/operations.py) and the lock (kiosk/hw/lock.py).
    "door_not_opened": ("Nobody opened the {door} door in time; it locked again and nothing left the bin.",
                        "Request it again when the person is at the kiosk."),
    "door_left_open": ("The {door} door was left open.",
                       "Close the door firmly; the kiosk page shows when the bolt engages."),
    "bolt_not_engaged": ("The door closed but its bolt did not engage: the kiosk is not locked.",
                         "Push the door shut; if the bolt still does not engage, call service (lock or sensor fault)."),
    "lock_resting": ("The lock's coil is cooling down after long use.", "Wait a minute, then try again."),
    "lock_bad_ms": ("The kiosk refused the unlock duration.", "Call support with the code."),
    "selftest_failed": ("The self-test found a fault.",
                        "Read the self-test record in the event log for the part that failed; call service."),
    # Driver faults (kiosk/hw/stepper.py): the carousel stops and must home again.
    "home_not_found": ("The carousel could not find its home switch.",
                       "Check the carousel for obstructions and the home switch's wiring, then run Home."),
    "home_stuck": ("The home switch stays pressed.", "Check the home switch, then run Home."),
    "position_lost": ("The carousel lost its position.", "Check for obstructions, then run Home."),
    "stall": ("The carousel motor stalled.", "Check for obstructions, then run Home."),
    "aborted": ("The motion was stopped before it finished.", "Run Home before the next operation."),
    "motor_fault": ("The carousel motor reported a fault.", "Check the carousel, then run Home; call service if it repeats."),
    "error": ("The kiosk hit an unexpected fault and went to its safe state.", "Call support with the code."),
    # After a reset (kiosk/core/jobs.py).
    "reset": ("The kiosk restarted during the operation.",
              "Check the event log: the operation's record says whether anything left the bin."),
    "cancelled": ("The command was cancelled.", "Nothing to do."),
    # The bridge's own.
    "no_answer": ("The kiosk did not take the command before it expired (offline, or the message was lost).",
                  "Check that the kiosk is online, then send it again."),
    "not_sent": ("The bridge could not publish the command.", "Check the bridge's broker connection, then try again."),
    # The kiosk's gate (kiosk/link/gate.py): the command never reached the controller.
    "expired": ("The command arrived after it expired.",
                "Check the kiosk's and the bridge's clocks, then send it again."),
    "not_yet_valid": ("The command's time is ahead of the kiosk's clock.",
                      "Check the bridge's clock (NTP), then send it again."),
    "bad_expiry": ("The command's validity window was refused.", "Lower the bridge's --command-ttl; call support."),
    "replayed": ("The kiosk had already seen this command and refused the copy.", "Send the request again as a new one."),
    "bad_signature": ("The command's signature did not match the kiosk's key.",
                      "Check that the bridge has this kiosk's current key; call support."),
    "bad_version": ("The kiosk speaks another protocol version.", "Update the kiosk or the bridge; call support."),
    "bad_schema": ("The kiosk could not read the command.", "Call support with the code."),
    "bad_json": ("The kiosk could not read the command.", "Call support with the code."),
    "bad_args": ("The kiosk refused the command's arguments.", "Call support with the code."),
    "unknown_op": ("The kiosk does not know this operation (older firmware?).", "Update the kiosk's firmware."),
    "bad_id": ("The kiosk refused the command's id.", "Call support with the code."),
    "oversized": ("The command was too large for the kiosk.", "Call support with the code."),
    "internal": ("The kiosk failed while checking the command.", "Call support with the code."),
    "memory_lost": ("The kiosk lost its memory of the commands it has seen (an unreadable file), so it refuses "
                    "every command that could have been sent before.",
                    "Send it again in about five minutes; if the alarm stays, call support."),
    "wrong_journal": ("The kiosk refused an acknowledgement meant for another of its journals.",
                      "Nothing to do: the bridge acknowledges the kiosk's current journal."),
    "coalesced": ("The kiosk refused many messages at once and recorded them as one count.",
                  "Check the kiosk's event log and the broker: someone may be sending it junk."),
    "storage_full": ("The kiosk's storage is full: it refuses what it could not record.",
                     "Check that the kiosk is online so its records reach the bridge; call service if it stays full."),
}

UNKNOWN = ("The kiosk refused or failed it (code {code}).", "Call support with the code.")


class _Args(dict):
    def __missing__(self, key: str) -> str:
        return {"door": "requested", "bin": "?", "order": "the order"}.get(key, "?")


def explain(code: str | None, args: dict[str, Any] | None = None, op: str | None = None) -> dict[str, str] | None:
    """{"code", "what", "next"} for a reason code; None for no code."""
    if not code:
        return None
    what, nxt = REASONS.get(code, UNKNOWN)
    a = _Args(args or {})
    a["code"] = code
    if "door" not in a and op in ("pickup", "restock"):
        a["door"] = "pickup" if op == "pickup" else "service"
    return {"code": code, "what": what.format_map(a), "next": nxt.format_map(a)}
