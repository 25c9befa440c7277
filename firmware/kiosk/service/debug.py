# Inspection and service actions at the board's REPL, by hand or through
# kioskctl (which runs these functions over the raw REPL). The controller is
# stopped whenever the REPL runs (Ctrl-C stopped it with the locks
# de-energised and the motors disabled); kiosk.app.kiosk is the stopped App
# when main.py had started one.
#
#   >>> from kiosk.service import debug
#   >>> debug.show()              # state, alarms, sensors, link, heap
#   >>> debug.logs(20)            # the journal's last 20 records
#   >>> debug.home()              # run one operation, then stop again
#
# Reads go to files on flash (journal, config) so they work even when the
# App never started. Operations restart the stopped controller (not the
# link) for one operation and stop it again; unlock, jog and selftest need
# the service session the host authorised before the REPL stopped the
# kiosk: there is no way around the interlocks here either.
import gc
import json
import os
import time

_TAIL = 10        # a record line ends "\t" + CRC (8 hex digits) + "\n" (kiosk.core.journal)
_MAX_LINE = 512   # the journal's longest line
_DONE = ("succeeded", "failed", "timed_out", "rejected", "cancelled")
_n = [time.ticks_ms() % 100000]


def app():
    """The App main.py started (stopped now), or None."""
    try:
        from kiosk import app as appmod
    except ImportError:
        return None
    return appmod.kiosk


# -- reading --------------------------------------------------------------
def heap():
    gc.collect()
    free, used = gc.mem_free(), gc.mem_alloc()
    return {"free": free, "used": used, "total": free + used}


def flash():
    try:
        st = os.statvfs(".")
        return {"free": st[0] * st[3], "total": st[0] * st[2]}
    except (OSError, AttributeError):
        return None


def _segments(path="journal"):
    try:
        names = [n for n in os.listdir(path) if len(n) == 12 and n[8:] == ".log" and n[:8].isdigit()]
    except OSError:
        return []
    names.sort()
    return [path + "/" + n for n in names]


def records(n=20, since=None, kind=None, path="journal"):
    """The journal's records (dicts, oldest first): the last n, or all from
    seq `since` on; kind keeps one kind only. Read-only: torn or corrupt
    lines are skipped, as the journal itself skips them."""
    from kiosk.core.journal import _seq
    out = []
    segs = _segments(path)
    # Newest segments first until enough records; then oldest first.
    picked = []
    for seg in reversed(segs):
        recs = []
        lo = 0
        with open(seg, "rb") as f:
            while True:
                line = f.readline(_MAX_LINE)
                if not line:
                    break
                s = _seq(line)
                if s > 0 and not lo:
                    lo = s
                if s > 0 and (since is None or s >= since):
                    rec = json.loads(line[:-_TAIL])
                    if kind is None or rec.get("k") == kind:
                        recs.append(rec)
        picked.insert(0, recs)
        if since is None and sum(len(r) for r in picked) >= n:
            break
        if since is not None and lo and lo <= since:
            break
    for recs in picked:
        out.extend(recs)
    if since is None and n is not None:
        out = out[-n:] if n > 0 else []
    return out


def logs(n=20, since=None, kind=None):
    """Print journal records, one JSON line each."""
    for rec in records(n, since, kind):
        print(json.dumps(rec))


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def config():
    """config.json with every secret masked."""
    from kiosk.config import mask
    return mask(_read_json("config.json") or {})


def config_get(name):
    """One setting by dotted name (broker.host, policies.door_held_open_s);
    secrets come back masked."""
    cur = config()
    for part in name.split("."):
        if not isinstance(cur, dict) or part not in cur:
            raise KeyError("no setting %s" % name)
        cur = cur[part]
    return cur


def config_set(name, value):
    """Change one setting, validated as at boot, written atomically. Takes
    effect at the next boot. Returns the masked new value."""
    from kiosk import config as cfgmod
    data = _read_json("config.json")
    if not isinstance(data, dict):
        raise ValueError("config.json is missing or not valid JSON")
    parts = name.split(".")
    cur = data
    for part in parts[:-1]:
        nxt = cur.get(part)
        if nxt is None:
            nxt = cur[part] = {}
        if not isinstance(nxt, dict):
            raise KeyError("%s is not a section" % part)
        cur = nxt
    if value is None:
        cur.pop(parts[-1], None)
    else:
        cur[parts[-1]] = value
    cfgmod.save(data)
    return config_get(name) if value is not None else None


def provision(data):
    """Write identity, key, broker (and what else data has) into
    config.json, keeping the settings data leaves out; validated as at boot.
    Returns the masked result. Takes effect at the next boot."""
    from kiosk import config as cfgmod
    cfg = _read_json("config.json")
    if not isinstance(cfg, dict):
        cfg = {}
    for k, v in data.items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict):
            cfg[k].update(v)
        else:
            cfg[k] = v
    cfgmod.save(cfg)
    return config()


def _alarms(snap):
    out = []
    for name, d in (snap.get("doors") or {}).items():
        for a in d.get("alarms") or ():
            out.append("%s door: %s" % (name, a))
    for code, detail in (snap.get("faults") or {}).items():
        out.append("fault %s%s" % (code, ": %s" % detail if detail else ""))
    climate = snap.get("climate") or {}
    for name, s in (climate.get("sensors") or {}).items():
        if s.get("level") not in (None, "ok"):
            out.append("%s temperature %s" % (name, s["level"]))
    for x in climate.get("excursions") or ():
        if not x.get("cleared"):
            out.append("excursion %s" % x.get("id"))
    if climate.get("held"):
        out.append("pickups held (temperature)")
    for name, s in (snap.get("sensors") or {}).items():
        if s.get("status") not in (None, "ok"):
            out.append("sensor %s: %s" % (name, s.get("error") or s.get("status")))
    for b in snap.get("unverified") or ():
        out.append("bin %d unverified" % b)
    return out


def status(sample=True):
    """Everything a technician checks first, as one JSON-able dict."""
    from kiosk.version import VERSION
    a = app()
    cfg = _read_json("config.json") or {}
    st = {"kiosk_id": cfg.get("kiosk_id"), "fw": VERSION, "board": cfg.get("board"),
          "controller": "stopped" if a else "not started", "heap": heap(), "flash": flash()}
    try:
        from kiosk.hw import hal
        st["reset_cause"] = hal.reset_cause()
    except Exception:
        st["reset_cause"] = None
    jst = _read_json("journal/boot")
    st["boot"] = jst
    try:   # the firmware slots: running, active, staged, on trial, rolled back (docs/ota.md)
        from kiosk.link import ota
        st["firmware"] = ota.describe()
    except Exception as e:
        st["firmware"] = {"error": str(e)}
    if a is None:
        st["alarms"] = []
        st["link"] = {"broker": (cfg.get("broker") or {}).get("host")}
        return st
    if sample:
        import asyncio
        try:
            asyncio.run(a.ctl.sample())
        except Exception as e:
            st["sample_error"] = str(e)
    snap = a.ctl.snapshot()
    st["boot"] = a.journal.boot
    st["state"] = {k: snap[k] for k in ("homed", "bin_at_door", "op", "queue", "service", "stock")}
    st["doors"] = snap["doors"]
    st["sensors"] = snap["sensors"]
    st["climate"] = snap["climate"]
    st["alarms"] = _alarms(snap)
    link = {"broker": (cfg.get("broker") or {}).get("host")}
    if a.link is not None:
        link.update(a.link.stats())
    st["link"] = link
    st["journal"] = a.journal.stats()
    return st


def show():
    """status() for people."""
    st = status()
    print("kiosk %s  fw %s  board %s  boot %s  reset %s  controller %s" % (
        st["kiosk_id"], st["fw"], st["board"], st["boot"], st["reset_cause"], st["controller"]))
    s = st.get("state")
    if s:
        print("homed %s  bin at door %s  service %s  op %s" % (s["homed"], s["bin_at_door"], s["service"], s["op"]))
    for name, d in (st.get("doors") or {}).items():
        print("door %-8s %-7s bolt %-9s %s" % (name, d["door"], d["bolt"], "ENERGISED" if d["energized"] else ""))
    for name, d in (st.get("sensors") or {}).items():
        print("sensor %-13s %s C  %s %%RH  %s" % (name, d["value"], d["rh"], d["status"]))
    print("alarms: %s" % (", ".join(st["alarms"]) or "none"))
    ln = st["link"]
    print("link: broker %s connected %s drops %s last error %s" % (
        ln.get("broker"), ln.get("connected"), ln.get("drops"), ln.get("last_error")))
    h = st["heap"]
    print("heap: %d free of %d" % (h["free"], h["total"]))


# -- acting ---------------------------------------------------------------
def _ensure_app():
    a = app()
    if a is not None:
        return a, False
    from kiosk import app as appmod
    appmod.kiosk = appmod.App()
    return appmod.kiosk, True


def op(kind, args=None, timeout_s=300):
    """Run one controller operation from the REPL: restart the stopped
    controller (without the link), submit, wait for the outcome, stop again
    with the hardware safe. Returns {"id", "state", "info"}. Ctrl-C cancels
    and leaves the hardware safe."""
    import asyncio
    a, _ = _ensure_app()
    ctl = a.ctl
    _n[0] += 1
    op_id = "repl-%d" % _n[0]
    seen = {}
    told = ctl.reply

    def reply(i, state, info):
        if i == op_id:
            seen["state"] = state
            seen["info"] = info
        if told:
            told(i, state, info)

    async def run():
        ctl.reply = reply
        ctl.stopped = False
        ctl.start()
        try:
            ctl.submit(op_id, kind, args or {}, "console", True)
            t0 = time.ticks_ms()
            while seen.get("state") not in _DONE:
                if time.ticks_diff(time.ticks_ms(), t0) > timeout_s * 1000:
                    ctl.submit(op_id + "-cancel", "cancel", {"target": op_id}, "console", True)
                    seen["state"], seen["info"] = "timed_out", {}
                    break
                await asyncio.sleep_ms(20)
        finally:
            ctl.reply = told
            await ctl.stop()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        ctl.reply = told
        asyncio.run(ctl.stop())
        seen["state"], seen["info"] = "cancelled", {"reason": "ctrl-c"}
    finally:
        asyncio.new_event_loop()
        a.journal.flush()
    return {"id": op_id, "state": seen.get("state"), "info": seen.get("info") or {}}


def in_service():
    a = app()
    return bool(a and a.ctl.in_service())


def home():
    return op("home")


def jog(bins=1):
    return op("jog", {"bins": bins})


def selftest():
    return op("selftest")


def unlock(door="service"):
    """Open one door's lock for a door cycle. Only inside a service session
    the host started (signed service_start) before the REPL stopped the
    kiosk: the controller refuses it otherwise, as over the network, and
    journals the refusal."""
    return op("unlock", {"door": door})


# -- following --------------------------------------------------------------
def follow(n=0):
    """Print the last n records, then run the kiosk (main.py's App, link and
    all) and print each record as it is journaled, until Ctrl-C."""
    from kiosk.core import journal
    from kiosk import app as appmod
    for rec in records(n) if n else ():
        print(json.dumps(rec))
    orig = journal.Journal.append

    def append(self, kind, fields=None):
        seq = orig(self, kind, fields)
        try:
            print(json.dumps(records(1, since=seq)[0]))
        except Exception:
            pass
        return seq

    journal.Journal.append = append
    try:
        appmod.main()
    finally:
        journal.Journal.append = orig
