"""A kiosk's status as the fleet view shows it (doors, alarms, excursions,
last pickup), kept up to date from its birth snapshot and then from its
events, applied in sequence order.

The birth's snapshot describes the kiosk as of its journal's newest record
(`journal.last`), so replayed events at or below that seq do not change the
status: they are history the snapshot already includes."""

from __future__ import annotations

from typing import Any

from .. import contract

DOOR_EVENTS = {
    "door_opened": ("door", "open"), "door_closed": ("door", "closed"), "door_forced": ("door", "open"),
    "bolt_engaged": ("bolt", "engaged"), "bolt_released": ("bolt", "not_engaged"),
}
DOOR_ALARMS = {"door_forced": "forced", "door_held_open": "held_open", "bolt_not_engaged": "bolt_not_engaged"}


def from_birth(birth: dict[str, Any]) -> dict[str, Any]:
    snap = birth.get("snap") if isinstance(birth.get("snap"), dict) else {}
    doors = {}
    for name, d in (snap.get("doors") or {}).items():
        if isinstance(d, dict):
            doors[name] = {"door": d.get("door"), "bolt": d.get("bolt"), "energized": d.get("energized"),
                           "alarms": list(d.get("alarms") or [])}
    climate = snap.get("climate") if isinstance(snap.get("climate"), dict) else {}
    excursions = {}
    for x in climate.get("excursions") or []:
        if isinstance(x, dict) and "id" in x:
            excursions[str(x["id"])] = _excursion(x)
    readings: dict[str, dict[str, Any]] = {}
    for name, x in (climate.get("sensors") or {}).items():
        if isinstance(x, dict):
            _reading(readings, str(name), x.get("t"), x.get("last_centi"), x.get("rh_centi"))
    return {
        "as_of": (birth.get("journal") or {}).get("last") or 0,
        "readings": readings,
        "sensor_faults": {str(n): x.get("error") for n, x in (snap.get("sensors") or {}).items()
                          if isinstance(x, dict) and x.get("status") == "faulted"},
        "doors": doors,
        "excursions": excursions,
        "held": bool(climate.get("held")),
        "faults": list(snap.get("faults") or []),
        "service": bool(snap.get("service")),
        "homed": snap.get("homed"),
        "bin_at_door": snap.get("bin_at_door"),
        "stock": snap.get("stock") or {},
        "unverified": snap.get("unverified") or [],
        "op": snap.get("op"),
        "last_pickup": None,
        "scanner_locked_until": _locked_until(birth, snap),
    }


def _locked_until(birth: dict[str, Any], snap: dict[str, Any]) -> int | None:
    """When the scanner's lockout ends, from a birth's snapshot (the kiosk's
    clock), or None."""
    sc = snap.get("scanner") if isinstance(snap.get("scanner"), dict) else {}
    left, t = sc.get("locked_s"), birth.get("t")
    if isinstance(left, int) and left > 0 and isinstance(t, int):
        return t + left
    return None


def _excursion(x: dict[str, Any]) -> dict[str, Any]:
    keep = ("id", "sensor", "start", "end", "min_centi", "max_centi", "max_rh_centi", "bins")
    return {k: x.get(k) for k in keep}


def empty() -> dict[str, Any]:
    return from_birth({})


def _reading(readings: dict[str, dict[str, Any]], sensor: str, t: Any, temp_centi: Any, rh_centi: Any = None) -> None:
    """Keep a sensor's reading if it is newer than the one held: the latest
    reading is whichever came last, from telemetry, a birth or a climate
    event, so every view shows the same one."""
    if not isinstance(t, int) or isinstance(t, bool) or not isinstance(temp_centi, int) or isinstance(temp_centi, bool):
        return
    held = readings.get(sensor)
    if held is None or t >= held["t"]:
        readings[sensor] = {"t": t, "temp_centi": temp_centi,
                            "rh_centi": rh_centi if isinstance(rh_centi, int) and not isinstance(rh_centi, bool) else None}


def reading_of(ev: dict[str, Any]) -> tuple[str, int, int, int | None] | None:
    """(sensor, t, hundredths of °C, of %RH) of a climate event that carries
    the reading it was raised on: a warning's or an excursion's first
    sample. Telemetry may not carry that sample for up to a minute."""
    if ev.get("k") != contract.K_TEMP or not isinstance(ev.get("sensor"), str):
        return None
    e = ev.get("ev")
    if e == "warning_start":
        t, c, rh = ev.get("t"), ev.get("value_centi"), None
    elif e == "excursion_start":
        t, c, rh = ev.get("start"), ev.get("max_centi"), ev.get("max_rh_centi")
    else:
        return None
    if not isinstance(t, int) or not isinstance(c, int) or isinstance(c, bool):
        return None
    return ev["sensor"], t, c, rh if isinstance(rh, int) else None


def telemetry(status: dict[str, Any], tele: dict[str, Any]) -> None:
    """Fold one telemetry message's readings into the status."""
    t = tele.get("t")
    temps = tele.get("temp_centi") if isinstance(tele.get("temp_centi"), dict) else {}
    rhs = tele.get("rh_centi") if isinstance(tele.get("rh_centi"), dict) else {}
    readings = status.setdefault("readings", {})
    for name, c in temps.items():
        _reading(readings, str(name), t, c, rhs.get(name))


def apply(status: dict[str, Any], ev: dict[str, Any]) -> None:
    """Fold one event (in seq order) into the status."""
    if ev.get("s", 0) <= status.get("as_of", 0):
        if ev.get("k") == contract.K_PICKUP and status.get("last_pickup") is None:
            status["last_pickup"] = _pickup(ev)
        return
    k = ev.get("k")
    if k == contract.K_DOOR:
        d = status["doors"].setdefault(str(ev.get("door")), {"door": None, "bolt": None, "alarms": []})
        e = ev.get("ev")
        if e in DOOR_EVENTS:
            field, value = DOOR_EVENTS[e]
            d[field] = value
        if e in DOOR_ALARMS and DOOR_ALARMS[e] not in d["alarms"]:
            d["alarms"].append(DOOR_ALARMS[e])
        if e == "door_closed":
            d["alarms"] = [a for a in d["alarms"] if a != "held_open"]
        if e == "bolt_engaged":
            d["alarms"] = [a for a in d["alarms"] if a not in ("bolt_not_engaged", "forced")]
    elif k == contract.K_PICKUP:
        status["last_pickup"] = _pickup(ev)
        status["stock"].pop(str(ev.get("bin")), None)
    elif k == contract.K_RESTOCK:
        status["stock"][str(ev.get("bin"))] = ev.get("order")
    elif k == contract.K_RETRIEVE:
        status["stock"].pop(str(ev.get("bin")), None)
    elif k == contract.K_SCAN:
        # The scanner locked itself out after wrong codes, until for_s later.
        e = ev.get("ev")
        if e == "lockout" and isinstance(ev.get("t"), int) and isinstance(ev.get("for_s"), int):
            status["scanner_locked_until"] = ev["t"] + ev["for_s"]
        elif e == "lockout_end":
            status["scanner_locked_until"] = None
    elif k == contract.K_STOCK:
        # A reset left a bin's content unknown, or a technician checked it.
        b = ev.get("bin")
        if ev.get("ev") == "unverified" and b not in status["unverified"]:
            status["unverified"].append(b)
        elif ev.get("ev") == "verified":
            status["unverified"] = [x for x in status["unverified"] if x != b]
            if not ev.get("present"):
                status["stock"].pop(str(b), None)
    elif k == contract.K_TEMP:
        r = reading_of(ev)
        if r:
            _reading(status.setdefault("readings", {}), r[0], r[1], r[2], r[3])
        e = ev.get("ev")
        if e == "excursion_start":
            status["excursions"][str(ev.get("id"))] = _excursion(ev)
        elif e == "excursion_end" and str(ev.get("id")) in status["excursions"]:
            status["excursions"][str(ev.get("id"))] = _excursion(ev)
        elif e in ("excursion_cleared", "excursion_dropped"):
            status["excursions"].pop(str(ev.get("id")), None)
    elif k == contract.K_SENSOR:
        faults = status.setdefault("sensor_faults", {})
        if ev.get("ev") == "sensor_fault":
            faults[str(ev.get("sensor"))] = ev.get("code")
        elif ev.get("ev") == "sensor_ok":
            faults.pop(str(ev.get("sensor")), None)
    elif k == contract.K_FAULT:
        if ev.get("code") not in status["faults"]:
            status["faults"].append(ev.get("code"))
    elif k == contract.K_SERVICE:
        status["service"] = ev.get("state") == "started"
    elif k == contract.K_BOOT:
        status["faults"] = []


def _pickup(ev: dict[str, Any]) -> dict[str, Any]:
    return {"seq": ev.get("s"), "t": ev.get("t"), "order": ev.get("order"), "bin": ev.get("bin"),
            "command_id": ev.get("id"), "recovered": bool(ev.get("recovered"))}


def alarms(status: dict[str, Any]) -> list[str]:
    """Everything ops should look at, as short labels."""
    out = []
    for name, d in sorted(status.get("doors", {}).items()):
        out += [f"{name} door: {a.replace('_', ' ')}" for a in d.get("alarms", [])]
    for x in status.get("excursions", {}).values():
        out.append(f"excursion {x['id']} on {x.get('sensor')}" + ("" if x.get("end") else " (ongoing)"))
    out += [f"fault: {f}" for f in status.get("faults", [])]
    if status.get("held"):
        out.append("pickups held until excursions are cleared")
    if status.get("unverified"):
        out.append("bins to verify: " + ", ".join(str(b) for b in status["unverified"]))
    if status.get("scanner_locked_until"):
        out.append("scanner locked out after wrong codes")
    return out


# Alarms a kiosk carries in its births and telemetry, outside its journal
# (which may be unable to carry them), as the API labels them.
KIOSK_ALARMS = {
    "storage_full": "storage full: the kiosk's flash is full; records beyond its reserve cannot be written",
    "replay_memory_lost": "replay memory lost: the kiosk refuses commands until it has rebuilt it",
}


def kiosk_alarms(k: dict[str, Any]) -> list[str]:
    """The alarm codes of the kiosk's newest birth or telemetry (by boot,
    then time)."""
    def when(m: dict[str, Any]) -> tuple[int, int]:
        b, t = m.get("boot"), m.get("t")
        return (b if isinstance(b, int) else -1, t if isinstance(t, int) else -1)
    birth, tele = k.get("birth") or {}, k.get("tele") or {}
    src = tele if tele and when(tele) >= when(birth) else birth
    codes = src.get("alarms")
    return [c for c in codes if isinstance(c, str)] if isinstance(codes, list) else []


def custody(k: dict[str, Any]) -> dict[str, Any]:
    """What threatens the chain of custody of one kiosk's records (the
    `custody` object of the API): custody gaps (records the kiosk lost
    before the store had them), the kiosk's own alarms (storage_full,
    replay_memory_lost) and its records about command ids the bridge never
    issued."""
    codes = kiosk_alarms(k)
    storage = (k.get("tele") or {}).get("storage")
    dropped = storage.get("dropped") if isinstance(storage, dict) else None
    return {
        "journal": k.get("journal"),
        "gaps": [{f: g.get(f) for f in ("journal", "from", "to", "why", "noticed")} for g in k.get("gaps") or []],
        "storage_full": "storage_full" in codes,
        "records_not_written": dropped if isinstance(dropped, int) else 0,
        "kiosk_alarms": codes,
        "unknown_commands": [{f: u.get(f) for f in ("id", "kind", "op", "seq", "t", "noticed")}
                             for u in k.get("unknown_commands") or []],
    }


def custody_alarms(c: dict[str, Any]) -> list[str]:
    """Custody alarms as labels, each starting with a fixed name ("custody
    gap", "storage full", "replay memory lost", "unknown command") that
    alerting can match."""
    out = [f"custody gap: records {g['from']}-{g['to']} of journal {g.get('journal') or '-'} lost ({g.get('why')})"
           for g in c.get("gaps", [])]
    out += [KIOSK_ALARMS.get(code, f"kiosk alarm: {code}") for code in c.get("kiosk_alarms", [])]
    for u in c.get("unknown_commands", []):
        what = u.get("op") or u.get("kind")
        out.append(f"unknown command: {u['id']} ({what}, record {u.get('seq')}) was never issued by the bridge")
    return out
