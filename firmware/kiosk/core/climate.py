# Controlled room temperature accounting (USP): keep 20-25 C; excursions to
# 15-30 C are allowed while the mean kinetic temperature (MKT) stays at or
# below 25 C; humidity at or below 60 %RH. Rules and events: docs/climate.md.
#
# Pure logic: the controller samples each sensor on a fixed period and calls
# add(); this keeps per-day statistics and MKT sums, evaluates the alarm
# level and returns the transitions as event dicts to journal. The only I/O
# is the state file (save/load).
#
# RAM is fixed: per sensor a ring of window-days records, each one
# array('f') of 12 numbers (no float kept per sample), so a month of samples
# costs what a day costs. The code is kept short because it must compile
# from source inside the smallest board's heap: few functions (each costs
# RAM) and comments rather than docstrings. Runs under CPython too (host
# tools cross-check with mkt()).
import math
from array import array

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

PATH = "climate.json"
DH_R = 10000.0  # activation energy / gas constant, K (83.144 kJ/mol / 8.3144)
K0 = 273.15
_DAY = const(86400)

# Day record: temperature min, max, sum, readings; missing (faulted)
# samples; MKT sums: sum(t*exp(-DH_R/T)), sum(t) in s; humidity min, max,
# sum, readings, missing.
_MISS = const(4)
_EW = const(5)
_W = const(6)
_HMIN = const(7)
_HMISS = const(11)
_NF = const(12)
_ZEROS = (0.0,) * _NF

# Read from the policy dict (the kiosk's shared policies; others ignored).
DEFAULTS = {
    "temp_ok_low_c": 20.0,
    "temp_ok_high_c": 25.0,
    "temp_excursion_low_c": 15.0,
    "temp_excursion_high_c": 30.0,
    "temp_hysteresis_c": 0.2,
    "rh_max_pct": 60.0,
    "rh_hysteresis_pct": 1.0,
    "mkt_limit_c": 25.0,
    "mkt_window_days": 30,
    "hold_pickups_on_excursion": False,
    "excursions_kept_max": 16,  # ended, uncleared; past this the oldest is dropped
    "sample_period_s": 60,  # the time each reading stands for
}


def _mkt(ew, w):
    return DH_R / -math.log(ew / w) - K0 if w > 0 and ew > 0 else None


# MKT in C of (celsius, weight) pairs, weight = the time a reading stands
# for; None readings are skipped; None without any weight.
def mkt(pairs):
    ew = w = 0.0
    for c, wt in pairs:
        if c is not None:
            ew += wt * math.exp(-DH_R / (c + K0))
            w += wt
    return _mkt(ew, w)


def _r(x):
    return None if x is None else round(x, 2)


# An excursion as events and snapshots show it: bins sorted (bin ids must
# be of one kind), "ev" set if given.
def _public(x, ev=None):
    d = dict(x)
    d["bins"] = sorted(x["bins"])
    if ev:
        d["ev"] = ev
    return d


class _Sensor:
    def __init__(self, name, window):
        self.name = name
        self.days = [-1] * window  # day held by each ring slot
        self.recs = [None] * window  # its record, made on first use
        self.day = -1  # latest day
        self.rec = None
        self.lvl = 0  # temperature: 0 ok, 1 warning, 2 excursion
        self.rhx = False  # humidity excursion
        self.hum = False  # has reported humidity
        self.warn = None  # [start, min, max] while warning
        self.mkth = False  # window MKT over the limit at the last day's close
        self.last = self.rh = self.t = self.exc = None


# sensors: names; policy: dict (keys of DEFAULTS, others ignored);
# stocked_bins: a callable returning the stocked bin ids, or a live set/list
# of them; boot: a token unique to this boot (boot counter), used in
# excursion ids "<boot>-<n>".
class Climate:
    def __init__(self, sensors, policy=None, stocked_bins=None, boot=0):
        p = dict(DEFAULTS)
        for k in DEFAULTS:
            if policy and k in policy:
                p[k] = policy[k]
        self.policy = p
        h = p["temp_hysteresis_c"]
        ol, oh = p["temp_ok_low_c"], p["temp_ok_high_c"]
        xl, xh = p["temp_excursion_low_c"], p["temp_excursion_high_c"]
        # Per level: enter below/above, stay below/above (hysteresis).
        self._lim = ((xl, xh, xl + h, xh - h), (ol, oh, ol + h, oh - h))
        self._win = int(p["mkt_window_days"])
        if not (xl < ol < oh < xh and 0 <= 2 * h < oh - ol and self._win > 0 < p["sample_period_s"]):
            raise ValueError("climate policy: need excursion low < ok low < ok high < excursion"
                             " high, hysteresis under half the ok band, window and period > 0")
        self._bins = stocked_bins
        self._boot = boot
        self._names = list(sensors)
        self.load_error = None
        self._reset()

    def _reset(self):
        self._s = {}
        for n in self._names:
            self._s[n] = _Sensor(n, self._win)
        self._exc = []  # active and uncleared excursions, oldest first
        self._seq = 0
        self._t = None

    # One sample of sensor `name` at unix time t (s): temp in C, or None (or
    # NaN) when the driver reports a fault: counted as missing, never a
    # reading; rh in %RH or None. stocked_bins overrides the constructor's.
    # dated False: t is not known to be the real date yet (the host has not
    # set the clock): alarms only, no day's statistics.
    # Returns the list of events (usually empty).
    def add(self, name, temp, rh, t, stocked_bins=None, dated=True):
        s = self._s[name]
        t = self._t = int(t)
        ev = []
        rec = s.rec if dated else None
        if dated and t // _DAY != s.day:
            rec = self._roll(s, t // _DAY, ev)
        if temp is None or temp != temp:
            s.last = None
            if rec:
                rec[_MISS] += 1
            return ev
        s.last, s.t = temp, t
        if rh is not None:
            s.hum, s.rh = True, rh
        p = self.policy
        if rec:
            rec[_EW] += p["sample_period_s"] * math.exp(-DH_R / (temp + K0))
            rec[_W] += p["sample_period_s"]
            if rh is None and s.hum:
                rec[_HMISS] += 1
            for i, v in ((0, temp), (_HMIN, rh)):
                if v is not None:
                    n = rec[i + 3]  # min, max, sum at i, count at i + 3
                    if not n or v < rec[i]:
                        rec[i] = v
                    if not n or v > rec[i + 1]:
                        rec[i + 1] = v
                    rec[i + 2] += v
                    rec[i + 3] = n + 1
        # Level 2 outside the excursion band, 1 outside the ok band; leaving
        # a level needs the reading back inside by the hysteresis.
        lvl, x, w = s.lvl, s.exc, s.warn
        nl = 0
        for k in (2, 1):
            lo, hi, in_lo, in_hi = self._lim[2 - k]
            if temp < lo or temp > hi or lvl >= k and (temp < in_lo or temp > in_hi):
                nl = k
                break
        rhx = s.rhx
        if rh is not None:
            rhx = rh > p["rh_max_pct"] or rhx and rh > p["rh_max_pct"] - p["rh_hysteresis_pct"]
        s.lvl, s.rhx = nl, rhx
        if nl and not lvl:
            w = s.warn = [t, temp, temp]
            ev.append({"ev": "warning_start", "sensor": name, "t": t, "value": temp})
        if nl:
            w[1] = min(w[1], temp)
            w[2] = max(w[2], temp)
        if nl == 2 or rhx:
            if not x:
                self._seq += 1
                x = s.exc = {"id": "%s-%d" % (self._boot, self._seq), "sensor": name,
                             "start": t, "end": None, "min": temp, "max": temp,
                             "max_rh": rh, "bins": set()}
                self._exc.append(x)
            x["min"] = min(x["min"], temp)
            x["max"] = max(x["max"], temp)
            if rh is not None:
                x["max_rh"] = max(x["max_rh"] or rh, rh)
            # Every bin that held stock at any time during it.
            bins = stocked_bins or self._bins
            for b in (bins() if callable(bins) else bins) or ():
                x["bins"].add(b)
            if x["start"] == t:
                ev.append(_public(x, "excursion_start"))
        elif x:
            s.exc = None
            x["end"] = t
            ev.append(_public(x, "excursion_end"))
            ended = [e for e in self._exc if e["end"]]
            if len(ended) > p["excursions_kept_max"]:
                self._exc.remove(ended[0])
                ev.append({"ev": "excursion_dropped", "id": ended[0]["id"]})
        if lvl and not nl:
            s.warn = None
            ev.append({"ev": "warning_end", "sensor": name, "start": w[0],
                       "end": t, "min": w[1], "max": w[2]})
        return ev

    # The record for `day`. A new latest day closes the previous one: a "day"
    # event with the window MKT, checked against the limit. A day older than
    # the ring gets None (alarms only).
    def _roll(self, s, day, ev):
        i = day % self._win
        held = s.days[i]
        if day > s.day:
            if s.rec:
                d = self.day_stats(s.name)
                m = d["mkt_window"] = _r(self.window_mkt(s.name))
                d["ev"] = "day"
                ev.append(d)
                if m is not None and s.mkth != (m > self.policy["mkt_limit_c"]):
                    s.mkth = not s.mkth
                    ev.append({"ev": "mkt_high_start" if s.mkth else "mkt_high_end",
                               "sensor": s.name, "t": day * _DAY, "mkt": m})
            s.day = day
        elif held > day:
            return None
        rec = s.recs[i]
        if held != day:
            if rec:
                for k in range(_NF):
                    rec[k] = 0.0
            else:
                rec = s.recs[i] = array("f", _ZEROS)
            s.days[i] = day
        if day == s.day:
            s.rec = rec
        return rec

    # MKT in C over the window of days ending with the latest sample's day,
    # or None without data.
    def window_mkt(self, name):
        s = self._s[name]
        ew = w = 0.0
        for i in range(self._win):
            if s.days[i] >= 0 and s.days[i] > s.day - self._win:
                ew += s.recs[i][_EW]
                w += s.recs[i][_W]
        return _mkt(ew, w)

    # One UTC day's statistics (default the latest), as the "day" event
    # carries them, or None if not held. rh_* for humidity sensors only.
    def day_stats(self, name, day=None):
        s = self._s[name]
        day = s.day if day is None else day
        r = s.recs[day % self._win]
        if day < 0 or s.days[day % self._win] != day:
            return None
        d = {"sensor": name, "day": day, "missing": int(r[_MISS]),
             "covered_s": int(r[_W]), "mkt": _r(_mkt(r[_EW], r[_W]))}
        for pre, i in (("", 0), ("rh_", _HMIN))[:1 + s.hum]:
            n = d[pre + "n"] = int(r[i + 3])
            d[pre + "min"], d[pre + "max"], d[pre + "mean"] = (
                (_r(r[i]), _r(r[i + 1]), _r(r[i + 2] / n)) if n else (None, None, None))
        if s.hum:
            d["rh_missing"] = int(r[_HMISS])
        return d

    def pickups_held(self):
        return bool(self.policy["hold_pickups_on_excursion"] and self._exc)

    # Acknowledge an ended excursion by id: returns it as an
    # "excursion_cleared" event, or None if the id is unknown or the
    # excursion still active (nothing to judge yet).
    def ongoing(self, xid):
        for x in self._exc:
            if x["id"] == str(xid) and not x["end"]:
                return True
        return False

    def clear(self, xid):
        for x in self._exc:
            if x["id"] == str(xid) and x["end"]:
                self._exc.remove(x)
                return _public(x, "excursion_cleared")
        return None

    # Snapshot for telemetry: per sensor the latest day's statistics plus
    # level, last reading, window MKT; the active and uncleared excursions.
    def summary(self):
        out = {}
        for n in self._names:
            s = self._s[n]
            m = self.window_mkt(n)
            d = out[n] = self.day_stats(n) or {"sensor": n}
            d["level"] = ("ok", "warning", "excursion")[2 if s.rhx else s.lvl]
            d["last"], d["rh"], d["t"] = s.last, s.rh, s.t
            d["mkt_window"] = _r(m)
            d["mkt_high"] = m is not None and m > self.policy["mkt_limit_c"]
        return {"t": self._t, "held": self.pickups_held(), "sensors": out,
                "excursions": [_public(x) for x in self._exc]}

    # State file: JSON lines, the last {"crc": crc32 of the lines before it},
    # written to path + ".tmp" then renamed over path, so a power cut leaves
    # the old file or the new one; the CRC catches the rest.
    def _lines(self):
        yield {"climate_seq": self._seq, "t": self._t}
        for s in self._s.values():
            yield [s.name, s.day, s.lvl, s.rhx, s.hum, s.mkth, s.warn]
            for i in range(self._win):
                if s.recs[i] and s.days[i] >= 0:
                    yield [s.name, s.days[i]] + list(s.recs[i])
        for x in self._exc:
            yield _public(x)

    # Write the state atomically (kiosk.files); False if the file system
    # refused (the previous file is then left as it was).
    def save(self, path=PATH):
        import json
        from binascii import crc32
        from kiosk.files import atomic
        c = 0
        try:
            with atomic(path) as f:
                for o in self._lines():
                    b = (json.dumps(o) + "\n").encode()
                    f.write(b)
                    c = crc32(b, c)
                f.write(('{"crc": %d}\n' % (c & 0xFFFFFFFF)).encode())
            return True
        except (OSError, MemoryError):
            return False

    # Restore what save() wrote. Returns "ok"; "none" (no file: fresh
    # start); or "corrupt" (torn, damaged, foreign or unreadable: fresh
    # start, the file kept as path + ".bad", load_error says why).
    def load(self, path=PATH):
        import json
        import os
        from binascii import crc32
        self._reset()
        self.load_error = None
        from kiosk.files import open_latest
        c = n = 0
        f = open_latest(path)
        if f is None:
            return "none"
        try:
            with f:
                for line in f:
                    o = json.loads(line)
                    if n == 0:
                        self._seq, self._t = o["climate_seq"], o["t"]
                    elif isinstance(o, dict) and "crc" in o:
                        if o["crc"] != c & 0xFFFFFFFF:
                            raise ValueError("checksum mismatch")
                        n = -2
                    elif isinstance(o, dict):  # an excursion
                        o["bins"] = set(o["bins"])
                        if o["end"] is None and o["sensor"] not in self._s:
                            o["end"] = self._t  # sensor removed while active
                        self._exc.append(o)
                    elif o[0] in self._s:
                        s = self._s[o[0]]
                        day = o[1]
                        i = day % self._win
                        if len(o) == 7:
                            s.day, s.lvl, s.rhx, s.hum, s.mkth, s.warn = o[1:]
                        elif s.days[i] < day:
                            r = s.recs[i] = s.recs[i] or array("f", _ZEROS)
                            for k in range(_NF):
                                r[k] = o[k + 2]
                            s.days[i] = day
                    c = crc32(line, c)
                    n += 1
            if n >= 0:
                raise ValueError("no checksum line (torn write)")
            for x in self._exc:
                if x["end"] is None:
                    self._s[x["sensor"]].exc = x
            for s in self._s.values():
                i = s.day % self._win
                s.rec = s.recs[i] if s.day >= 0 and s.days[i] == s.day else None
            return "ok"
        except Exception as e:  # any damage: start fresh, never crash
            self.load_error = repr(e)
        self._reset()
        try:
            os.rename(path, path + ".bad")
        except OSError:
            pass
        return "corrupt"
