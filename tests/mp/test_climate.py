# kiosk.core.climate under MicroPython: one VM per test with the smallest board's
# heap, a fresh temp dir as the board's flash. Kept terse on purpose: this
# module and kiosk.core.climate are both compiled from source inside that heap.
import gc
import os

gc.collect()
from kiosk.core import climate

T0 = 1767225600  # 2026-01-01 00:00 UTC
D0 = T0 // 86400
S3 = ("top", "bottom", "cab")


def near(a, b, tol=0.01):
    assert a is not None and abs(a - b) <= tol, (a, b)


def feed(c, name, t, temps, step=60, rh=None):
    # Sample every step s from t: (next t, events, their names).
    ev = []
    for v in temps:
        ev += c.add(name, v, rh, t)
        t += step
    return t, ev, [e["ev"] for e in ev]


def test_mkt_worked_examples():
    near(climate.mkt([(25.0, 1)] * 5), 25.0)
    near(climate.mkt([(20.0, 12), (30.0, 12), (None, 9)]), 26.26)
    assert climate.mkt([]) is None
    # The same through the per-day accumulators (float32 on boards).
    c = climate.Climate(["a", "b"], {"sample_period_s": 600})
    feed(c, "a", T0, [25.0] * 144, 600)
    feed(c, "b", T0, [20.0] * 72 + [30.0] * 72, 600)
    near(c.window_mkt("a"), 25.0)
    near(c.window_mkt("b"), 26.26)
    d = c.day_stats("b")
    near(d["mkt"], 26.26)
    assert d["mean"] == 25.0 and d["covered_s"] == 86400


def test_window_mkt_drops_day_31():
    c = climate.Climate(["a"], {"sample_period_s": 3600})
    t = T0
    days = []
    for v in [30.0] + [20.0] * 29:  # the first day hot
        t, ev, k = feed(c, "a", t, [v] * 24, 3600)
        days += [(e["ev"], e.get("mkt_window")) for e in ev if e["ev"][0] in "dm"]
    near(c.window_mkt("a"), climate.mkt([(30.0, 1), (20.0, 29)]))  # 30 days
    assert days[:3] == [("day", 30.0), ("mkt_high_start", None), ("day", 26.26)], days
    assert len(days) == 31 and ("mkt_high_end", None) in days
    t, ev, k = feed(c, "a", t, [20.0] * 24, 3600)  # day 31: the hot day leaves
    near(c.window_mkt("a"), 20.0)
    assert c.day_stats("a", D0) is None and c.day_stats("a", D0 + 1)["n"] == 24
    c.add("a", 22.0, None, t + 40 * 86400)  # after a long gap nothing old counts
    near(c.window_mkt("a"), 22.0)


def test_daily_stats_across_utc_midnight():
    c = climate.Climate(S3)
    t = T0 + 86400 - 120  # 23:58
    ev = c.add("top", 21.0, None, t) + c.add("top", 23.0, None, t + 60)
    ev += c.add("cab", 22.0, 40.0, t) + c.add("cab", 22.0, 44.0, t + 60)
    assert ev == []
    d = c.add("top", 24.0, None, t + 120)[0]  # 00:00
    assert (d["ev"], d["day"], d["min"], d["max"], d["mean"], d["n"]) == ("day", D0, 21.0, 23.0, 22.0, 2), d
    c.add("top", 22.0, None, t + 180)
    del d["ev"], d["mkt_window"]
    assert c.day_stats("top", D0) == d and "rh_min" not in d
    s = c.summary()["sensors"]
    assert (s["top"]["min"], s["top"]["max"], s["top"]["mean"], s["top"]["last"]) == (22.0, 24.0, 23.0, 22.0)
    cab = s["cab"]
    assert (cab["rh_min"], cab["rh_max"], cab["rh_mean"], cab["rh"]) == (40.0, 44.0, 42.0, 44.0), cab
    assert s["bottom"]["last"] is None and "min" not in s["bottom"]


def test_warning_transitions_with_hysteresis():
    c = climate.Climate(["a"])
    t, ev, k = feed(c, "a", T0, [22.0, 25.0, 25.1, 24.9, 25.3, 24.85, 25.2])
    assert k == ["warning_start"] and ev[0]["t"] == T0 + 120, k  # no spam on the limit
    t, ev, k = feed(c, "a", t, [24.7])
    assert k == ["warning_end"] and (ev[0]["start"], ev[0]["min"], ev[0]["max"]) == (T0 + 120, 24.85, 25.3)
    t, ev, k = feed(c, "a", t, [19.9, 20.1, 19.95, 20.15, 20.3])
    assert k == ["warning_start", "warning_end"] and ev[1]["min"] == 19.9, k
    c = climate.Climate(["a"], {"temp_hysteresis_c": 0.0})
    assert feed(c, "a", T0, [25.1, 25.0])[2] == ["warning_start", "warning_end"]


def test_excursion_transitions_with_hysteresis():
    c = climate.Climate(["a"])
    t, ev, k = feed(c, "a", T0, [22.0, 30.0, 30.1, 29.9, 30.4, 29.85])  # 30.0 is allowed
    assert k == ["warning_start", "excursion_start"], k
    assert (ev[1]["id"], ev[1]["start"], ev[1]["max"]) == ("0-1", T0 + 120, 30.1)
    assert c.summary()["sensors"]["a"]["level"] == "excursion"
    t, ev, k = feed(c, "a", t, [29.7, 22.0])
    assert k == ["excursion_end", "warning_end"], k
    t, ev, k = feed(c, "a", t, [14.9, 15.1, 22.0])
    assert k == ["warning_start", "excursion_start", "excursion_end", "warning_end"], k
    assert (ev[2]["id"], ev[2]["min"], ev[2]["max"]) == ("0-2", 14.9, 15.1)


def test_humidity_excursion_above_60():
    c = climate.Climate(["cab"])
    t, ev, k = feed(c, "cab", T0, [22.0], rh=60.0)  # at the limit is fine
    t, ev2, k2 = feed(c, "cab", t, [22.0], rh=60.5)
    t, ev3, k3 = feed(c, "cab", t, [22.0, 22.4], rh=59.5)
    t, ev3, k4 = feed(c, "cab", t, [22.0], rh=61.2)
    t, ev3, k5 = feed(c, "cab", t, [22.0], rh=None)  # missing rh: still on
    assert k + k3 + k4 + k5 == [] and k2 == ["excursion_start"], (k, k2)
    t, ev, k = feed(c, "cab", t, [22.0], rh=58.9)
    e = ev[0]
    assert k == ["excursion_end"] and (e["max_rh"], e["min"], e["max"]) == (61.2, 22.0, 22.4), e
    d = c.day_stats("cab")
    assert (d["rh_max"], d["rh_min"], d["rh_missing"], d["rh_n"]) == (61.2, 58.9, 1, 6), d


def test_excursion_end_carries_window_range_and_bins():
    stock = {3, 1}
    c = climate.Climate(["a"], None, stock, 7)
    t, ev, k = feed(c, "a", T0, [24.0, 31.0])
    stock.add(9)  # restocked during the excursion
    t, ev, k = feed(c, "a", t, [32.5])
    stock.discard(1)  # picked up during it: it held stock all the same
    t, ev, k = feed(c, "a", t, [30.6, 24.0])
    e = ev[0]
    assert k[0] == "excursion_end", k
    assert (e["id"], e["sensor"], e["start"], e["end"]) == ("7-1", "a", T0 + 60, T0 + 240), e
    assert (e["min"], e["max"], e["max_rh"], e["bins"]) == (30.6, 32.5, None, [1, 3, 9]), e
    c = climate.Climate(["a"], None, lambda: ("A3", "A1"))  # a short bump counts
    t, ev, k = feed(c, "a", T0, [15.5, 14.0, 22.0])
    assert k[1:3] == ["excursion_start", "excursion_end"] and ev[2]["bins"] == ["A1", "A3"], ev


def test_hold_pickups_policy_and_clear_by_id():
    c = climate.Climate(["a", "b"], {"hold_pickups_on_excursion": True, "door_open_timeout_s": 5})
    t, ev, k = feed(c, "a", T0, [31.0])
    x = ev[-1]["id"]
    assert c.pickups_held() and c.clear(x) is None  # active: nothing to judge yet
    t, ev, k = feed(c, "a", t, [22.0])
    assert c.pickups_held() and c.clear("nope") is None  # uncleared
    assert c.clear(x)["ev"] == "excursion_cleared" and not c.pickups_held()
    assert c.clear(x) is None and c.summary()["excursions"] == []
    for n, v in (("a", 31.0), ("b", 14.0), ("a", 22.0), ("b", 22.0)):
        c.add(n, v, None, t)
    ids = [e["id"] for e in c.summary()["excursions"]]
    assert c.clear(ids[0]) and c.pickups_held() and c.clear(ids[1]) and not c.pickups_held()
    c = climate.Climate(["a"], {"excursions_kept_max": 2})  # policy off
    t, ev, k = feed(c, "a", T0, [31.0, 22.0, 31.0, 22.0, 31.0, 22.0])
    assert not c.pickups_held() and {"ev": "excursion_dropped", "id": "0-1"} in ev, ev
    assert len(c.summary()["excursions"]) == 2


def test_faulted_sensor_is_missing_not_a_reading():
    c = climate.Climate(["a", "b"])
    t, ev, k = feed(c, "a", T0, [22.0, None, None, float("nan"), 23.0])
    d = c.day_stats("a")
    assert k == [] and (d["min"], d["max"], d["mean"], d["n"]) == (22.0, 23.0, 22.5, 2), d
    assert (d["missing"], d["covered_s"]) == (3, 120), d  # only readings cover time
    near(c.window_mkt("a"), climate.mkt([(22.0, 1), (23.0, 1)]), 0.001)
    feed(c, "b", T0, [None] * 5)
    d = c.summary()["sensors"]["b"]
    assert (d["n"], d["missing"], d["min"], d["mkt"], d["last"]) == (0, 5, None, None, None), d
    t, ev, k = feed(c, "a", t, [31.0, None, None, 22.0])  # a fault does not end it
    assert k[2] == "excursion_end" and ev[2]["end"] == t - 60, k


def busy(c):
    # Two days of data, an uncleared and an active excursion, a warning.
    t = T0
    for n in S3:
        feed(c, n, t, [21.0, 22.5, None] * 16, 3600, 45.0 if n == "cab" else None)
    t += 2 * 86400
    for n, v, rh in (("top", 31.0, None), ("bottom", 26.0, None), ("cab", 22.0, 65.0), ("top", 22.0, None)):
        c.add(n, v, rh, t)
    return t


def test_save_load_round_trip():
    c = climate.Climate(S3, None, {4}, 1)
    t = busy(c)
    assert c.save("climate.json") and os.listdir() == ["climate.json"]
    before = c.summary()
    c = climate.Climate(S3, None, {4}, 2)
    assert c.load("climate.json") == "ok", c.load_error
    after = c.summary()
    for n in S3:  # readings are not restored: none since the reboot
        assert after["sensors"][n]["last"] is None
        for k in ("last", "rh", "t"):
            after["sensors"][n][k] = before["sensors"][n][k]
    assert after == before, after
    assert c.day_stats("cab", D0)["rh_n"] == 16 and len(before["excursions"]) == 2
    ev = c.add("cab", 22.0, 50.0, t + 60)  # the restored excursion goes on
    e = ev[0]
    assert (e["ev"], e["start"], e["max_rh"], e["bins"]) == ("excursion_end", t, 65.0, [4]), ev
    assert c.add("bottom", 22.0, None, t + 60)[0]["start"] == t  # so does the warning
    assert c.add("top", 31.0, None, t + 60)[-1]["id"] == "2-3"  # ids go on counting


def test_corrupt_or_torn_state_file_starts_fresh():
    c = climate.Climate(S3)
    busy(c)
    c.save("climate.json")
    with open("climate.json", "rb") as f:
        data = f.read()
    i = data.index(b"31.0")  # one digit off: still JSON, caught by the CRC
    errs = []
    for junk in (data[:i] + b"39" + data[i + 2:], data[:-3], data[:len(data) // 2], b"\xffjunk", b""):
        with open("climate.json", "wb") as f:
            f.write(junk)
        c = climate.Climate(S3, {"hold_pickups_on_excursion": True})
        assert c.load("climate.json") == "corrupt" and c.load_error, junk
        errs.append(c.load_error)
        assert c.summary()["excursions"] == [] and not c.pickups_held() and c.day_stats("top") is None
        assert "climate.json.bad" in os.listdir()
    assert "mismatch" in errs[0] and "torn" in errs[-1], errs
    assert c.load("climate.json") == "none" and c.add("top", 22.0, None, T0) == []
    assert c.save("climate.json") and climate.Climate(S3).load("climate.json") == "ok"


def test_memory_bounded_10000_samples():
    c = climate.Climate(S3, {"sample_period_s": 900}, {1, 2})
    gc.collect()
    base = gc.mem_alloc()
    t = T0
    for i in range(3334):  # 10,002 samples over 34.7 days
        v = 31.0 if i % 500 == 250 else 20.0 + (i % 13) * 0.5  # warnings, excursions
        for n in S3:
            for e in c.add(n, None if i % 97 == 0 and n == "bottom" else v, 50.0 if n == "cab" else None, t):
                if e["ev"] == "excursion_end":
                    c.clear(e["id"])
        t += 900
        if i == 3000:  # day 31: every ring slot in use
            gc.collect()
            mid = gc.mem_alloc()
    gc.collect()
    end = gc.mem_alloc()
    assert end - mid <= 256 and end - base < 12000, (base, mid, end)
    assert c.day_stats("bottom")["missing"] > 0
