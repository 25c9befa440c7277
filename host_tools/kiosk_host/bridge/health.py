"""What needs a person, kiosk by kiosk: each problem the bridge can see in
a kiosk's status (folded from its events, status.py), and the kiosk's
severity, which the fleet page sorts by and the alerts (alerts.py) are
raised from.

Nothing may look fine when it is not. A door that is not closed with its
bolt engaged is a problem whether or not the kiosk has raised an alarm
yet (after a reboot with a door standing open there is no "forced" alarm,
since nobody saw it open), unless an operation the bridge sent is using
that door right now. A kiosk that is offline shows what it last said,
marked as such, with when it said it.

Severity, least to most urgent: ok, attention (someone should look when
they can), offline (the kiosk cannot be seen), alarm (someone should act
now). An offline kiosk whose last word was an alarm stays an alarm.
"""

from __future__ import annotations

import time
from typing import Any

from . import status as kstatus

SEVERITIES = ("ok", "attention", "offline", "alarm")
BAND_C = (20.0, 25.0)       # USP controlled room temperature
LIMITS_C = (15.0, 30.0)     # allowed excursions
READING_STALE_S = 900       # an online kiosk with no newer temperature reading than this is a problem

# A door alarm raised by the kiosk: problem code and how it reads.
DOOR_ALARMS = {"forced": ("door_forced", "{door} door forced open"),
               "held_open": ("door_held_open", "{door} door held open"),
               "bolt_not_engaged": ("bolt_not_engaged", "{door} door shut but its bolt is not engaged")}
# Door problems the kiosk raises no alarm for: the bridge adds them to its alarms.
UNRAISED = ("door_open", "door_unlocked")
# Which door each door-cycle operation unlocks (unlock names its door).
OP_DOORS = {"pickup": "pickup", "restock": "service", "retrieve": "service"}
# Driver fault codes (kiosk/hw/stepper.py, the controller's motor faults);
# any other fault code is counted as a lock or other fault.
MOTOR_FAULTS = ("not_homed", "busy", "home_not_found", "home_stuck", "position_lost", "stall", "aborted",
                "motor_fault")


# Every problem code, for the alert rules to name (alerts.py checks them).
CODES = ("offline", "door_forced", "door_held_open", "bolt_not_engaged", "door_open", "door_unlocked",
         "door_unknown", "door_in_use", "excursion", "excursion_to_review", "motor_fault", "lock_fault",
         "other_fault", "sensor_fault", "temperature_out_of_limits", "temperature_out_of_band", "reading_stale",
         "pickups_held", "bins_to_verify", "service_session", "broker_down",
         "custody_gap", "storage_full", "replay_memory_lost", "unknown_command")


def rank(severity: str) -> int:
    return SEVERITIES.index(severity)


def temp_range(c: float | None) -> str | None:
    """in_band (20–25 °C), out_of_band (inside 15–30 °C) or out_of_limits."""
    if c is None:
        return None
    if BAND_C[0] <= c <= BAND_C[1]:
        return "in_band"
    return "out_of_band" if LIMITS_C[0] <= c <= LIMITS_C[1] else "out_of_limits"


def _p(code: str, level: str, text: str, subject: str | None = None, since: Any = None) -> dict[str, Any]:
    return {"code": code, "level": level, "text": text, "subject": subject, "since": since}


def door_problems(doors: dict[str, Any], active: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    using = {}
    for c in active:
        door = (c.get("args") or {}).get("door") if c["op"] == "unlock" else OP_DOORS.get(c["op"])
        if door and c["state"] == "in_progress":
            using[door] = c
    for name in sorted(doors):
        d = doors[name] or {}
        door, bolt, alarms = d.get("door"), d.get("bolt"), list(d.get("alarms") or [])
        for a in alarms:
            code, text = DOOR_ALARMS.get(a, (f"door_{a}", "{door} door: " + str(a).replace("_", " ")))
            out.append(_p(code, "alarm", text.format(door=name), name))
        if door == "closed" and bolt == "engaged":
            continue
        c = using.get(name)
        if c is not None:
            what = c["op"] + (f" of {c['args']['order']}" if isinstance(c.get("args"), dict) and "order" in c["args"] else "")
            out.append(_p("door_in_use", "attention", f"{name} door unlocked for the {what}", name))
        elif door == "open":
            if not {"forced", "held_open"} & set(alarms):
                out.append(_p("door_open", "alarm", f"{name} door is open and nothing the bridge sent unlocked it "
                                                    f"(bolt {str(bolt or 'unknown').replace('_', ' ')})", name))
        elif door == "closed" and bolt == "not_engaged":
            if "bolt_not_engaged" not in alarms:
                out.append(_p("door_unlocked", "alarm", f"{name} door shut but its bolt is not engaged", name))
        else:
            out.append(_p("door_unknown", "attention", f"{name} door: state not known yet "
                                                       f"(door {door or 'unknown'}, bolt {bolt or 'unknown'})", name))
    return out


def problems(k: dict[str, Any], active: list[dict[str, Any]] | None = None,
             now: float | None = None) -> list[dict[str, Any]]:
    """Every problem of one kiosk (a store row), most urgent first."""
    now = time.time() if now is None else now
    st = k.get("status") or {}
    out = []
    if not k.get("online"):
        why = k.get("why") or "no reason given"
        seen = k.get("seen")
        out.append(_p("offline", "offline", "never seen" if seen is None else
                      f"offline ({why}), last heard {time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime(seen))}",
                      since=seen))
    out += door_problems(st.get("doors") or {}, (active or []) if k.get("online") else [])
    for x in (st.get("excursions") or {}).values():
        peak = x.get("max_centi")
        peak_text = f", peak {peak / 100:.1f} °C" if isinstance(peak, int) else ""
        if x.get("end"):
            out.append(_p("excursion_to_review", "attention",
                          f"excursion {x.get('id')} on {x.get('sensor')} ended{peak_text}: a pharmacist reviews "
                          "the bins it touched and clears it", x.get("id"), x.get("start")))
        else:
            out.append(_p("excursion", "alarm", f"temperature excursion on {x.get('sensor')}{peak_text}, going on",
                          x.get("id"), x.get("start")))
    for code in st.get("faults") or []:
        kind = "motor" if code in MOTOR_FAULTS else "lock" if str(code).startswith(("lock", "bolt", "door")) else "other"
        out.append(_p(f"{kind}_fault", "alarm", f"{kind} fault: {str(code).replace('_', ' ')}", str(code)))
    for name, code in sorted((st.get("sensor_faults") or {}).items()):
        out.append(_p("sensor_fault", "attention", f"sensor {name} faulted ({code})", name))
    for name, r in sorted((st.get("readings") or {}).items()):
        c = r["temp_centi"] / 100
        rng = temp_range(c)
        ongoing = any(not x.get("end") and x.get("sensor") == name for x in (st.get("excursions") or {}).values())
        if rng == "out_of_limits" and not ongoing:
            out.append(_p("temperature_out_of_limits", "alarm", f"{name} reads {c:.1f} °C, outside 15–30 °C", name, r["t"]))
        elif rng == "out_of_band" and not ongoing:
            out.append(_p("temperature_out_of_band", "attention", f"{name} reads {c:.1f} °C, outside 20–25 °C", name, r["t"]))
        if k.get("online") and now - r["t"] > READING_STALE_S:
            out.append(_p("reading_stale", "attention", f"no reading from {name} for {int((now - r['t']) // 60)} min",
                          name, r["t"]))
    if st.get("held"):
        out.append(_p("pickups_held", "attention", "pickups held until the excursions are cleared"))
    if st.get("unverified"):
        out.append(_p("bins_to_verify", "attention",
                      "bins to verify after a reset: " + ", ".join(str(b) for b in st["unverified"])))
    if st.get("service"):
        out.append(_p("service_session", "attention", "service session open: pickups wait until it ends"))
    out += custody_problems(kstatus.custody(k))
    out.sort(key=lambda p: -rank(p["level"]))
    return out


def custody_problems(c: dict[str, Any]) -> list[dict[str, Any]]:
    """What threatens the chain of custody (status.custody): records lost
    before the store had them, a full flash, a replay memory lost, records
    about commands the bridge never issued (someone else holds the key)."""
    out = []
    for g in c.get("gaps", []):
        out.append(_p("custody_gap", "alarm", f"custody gap: records {g['from']}-{g['to']} of journal "
                                              f"{g.get('journal') or '-'} lost ({g.get('why')})",
                      f"{g.get('journal') or '-'}:{g['from']}-{g['to']}", g.get("noticed")))
    if c.get("storage_full"):
        n = c.get("records_not_written") or 0
        out.append(_p("storage_full", "alarm", "storage full: the kiosk's flash is full"
                      + (f"; {n} records could not be written" if n else "; its reserve holds the records for now")))
    if "replay_memory_lost" in c.get("kiosk_alarms", []):
        out.append(_p("replay_memory_lost", "attention", "replay memory lost: the kiosk refuses commands for a few "
                                                         "minutes"))
    for u in c.get("unknown_commands", []):
        out.append(_p("unknown_command", "alarm", f"unknown command: {u['id']} ({u.get('op') or u.get('kind')}) was "
                                                  "never issued by the bridge: someone else holds the kiosk's key",
                      u["id"], u.get("noticed")))
    return out


def severity(probs: list[dict[str, Any]]) -> str:
    return max((p["level"] for p in probs), key=rank, default="ok")


def bridge_problems(link: dict[str, Any]) -> list[dict[str, Any]]:
    """The bridge's own: without a broker session it hears no kiosk, so every
    kiosk's state is stale and no kiosk problem can be seen."""
    if link.get("connected"):
        return []
    return [_p("broker_down", "alarm", f"the bridge has no broker session ({link.get('error') or 'not connected'}): "
                                       "it cannot see any kiosk", since=link.get("since"))]
