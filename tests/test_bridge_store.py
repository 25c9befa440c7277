"""The bridge's store on both backends (a SQLite file, a real PostgreSQL):
events exactly once, the acknowledged prefix never past a gap, lost ranges,
commands that only move forward, births and deaths in boot order, and two
processes advancing one kiosk's prefix without losing or reordering it."""

from __future__ import annotations

import multiprocessing
import time

import pytest

from kiosk_host.bridge.store import Store, StoreError
from pg_support import Postgres


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    pg = Postgres(tmp_path_factory.mktemp("pg")).start()
    yield pg
    pg.stop()


_n = 0


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path, postgres):
    global _n
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'bridge.sqlite3'}"
    # a fresh database per test on the shared cluster
    _n += 1
    import psycopg

    name = f"t{_n}_{int(time.time() * 1000) % 100000}"
    with psycopg.connect(postgres.url, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    return postgres.url.rsplit("/", 1)[0] + "/" + name


def ev(s, k="door", **f):
    return dict({"s": s, "b": 1, "t": 1767225600 + s, "k": k}, **f)


def test_events_are_stored_once_and_acked_only_up_to_a_gap(url):
    st = Store(url)
    assert st.add_events("k1", [ev(1), ev(2), ev(4)])[:2] == (3, 2)
    assert st.first_after("k1", 2) == 4            # the hole is at 3
    new, acked, _ = st.add_events("k1", [ev(2), ev(4), ev(1)])
    assert (new, acked) == (0, 2)                   # replays change nothing
    assert st.add_events("k1", [ev(3)])[:2] == (1, 4)
    assert st.seqs("k1") == [1, 2, 3, 4]
    assert st.acked("k2") == 0 and st.add_events("k2", [ev(1)])[1] == 1   # per kiosk
    page = st.events("k1", after=1, limit=2)
    assert [e["seq"] for e in page] == [2, 3] and page[0]["body"]["s"] == 2
    assert [e["seq"] for e in st.events("k1", after=3, limit=10, newest_first=True)] == [2, 1]
    st.close()
    again = Store(url)                              # durable
    assert again.acked("k1") == 4 and again.count_events("k1") == 4


def test_a_lost_range_is_acked_past_and_a_known_prefix_adopted(url):
    st = Store(url)
    st.add_events("k1", [ev(1), ev(2)])
    # records 3..9 were rotated off the kiosk's flash before anyone got them
    _, acked, _ = st.add_events("k1", [ev(10, "journal_overflow", lost_from=3, lost_to=9), ev(11)],
                                lost=[(3, 9)])
    assert acked == 11
    # a kiosk new to this store whose records up to 50 another store acked
    assert st.adopt_acked("k9", 50) == 50
    assert st.add_events("k9", [ev(52)])[1] == 50 and st.add_events("k9", [ev(51)])[1] == 52


def test_events_fold_into_status_and_commands_in_seq_order(url):
    st = Store(url)
    st.add_command("c1", "k1", "pickup", {"order": "rx-1", "bin": 3}, 2000000000)
    # The op event arrives before the door events it follows: nothing is
    # applied until the prefix is whole, then all of it in order.
    _, acked, done = st.add_events("k1", [ev(3, "pickup", id="c1", order="rx-1", bin=3),
                                          ev(4, "op", id="c1", op="pickup", state="succeeded", opened=True)])
    assert acked == 0 and done == [] and st.command("c1")["state"] == "queued"
    _, acked, done = st.add_events("k1", [ev(1, door="pickup", ev="door_opened"),
                                          ev(2, door="pickup", ev="door_closed")])
    assert acked == 4 and [c["command_id"] for c in done] == ["c1"] and done[0]["state"] == "succeeded"
    k = st.kiosk("k1")
    assert k["status"]["doors"]["pickup"]["door"] == "closed"
    assert k["status"]["last_pickup"]["command_id"] == "c1"
    # Terminal is final; later news is history only.
    cmd, became = st.update_command("c1", "in_progress", by="reply")
    assert cmd["state"] == "succeeded" and not became
    assert st.update_command("c1", "failed", "x", by="reply", kiosk="other-kiosk") is None


def test_births_and_deaths_count_only_for_the_current_boot(url):
    # Kiosks older than connection nonces: deaths by boot.
    st = Store(url)
    birth2 = {"online": True, "boot": 2, "fw": "0.1.0", "board": "emulator", "journal": {"last": 7, "acked": 7},
              "snap": {"doors": {"pickup": {"door": "closed", "bolt": "engaged"}}, "faults": []}}
    assert st.set_state("k1", birth2)[0] is True
    assert st.set_state("k1", {"online": False, "boot": 1, "why": "lost"})[0] is True     # an old will
    assert st.set_state("k1", dict(birth2, boot=1))[0] is True and st.kiosk("k1")["boot"] == 2
    assert st.set_state("k1", {"online": False, "boot": 2, "why": "stopped"})[0] is False
    k = st.kiosk("k1")
    assert not k["online"] and k["why"] == "stopped"
    assert k["status"]["doors"]["pickup"] == {"door": "closed", "bolt": "engaged", "energized": None, "alarms": []}


def test_commands_no_kiosk_took_are_found_for_timing_out(url):
    st = Store(url)
    st.add_command("old", "k1", "home", {}, int(time.time()) - 10)
    st.add_command("new", "k1", "home", {}, int(time.time()) + 60)
    assert [c["command_id"] for c in st.stale_commands(time.time())] == ["old"]
    st.update_command("old", "timed_out", "no_answer", by="bridge")
    assert st.stale_commands(time.time()) == []
    assert st.command_counts()[("home", "timed_out")] == 1


def _writer(url, first, n, out):
    st = Store(url)
    for s in range(first, first + n, 2):       # every other seq: the two writers interleave
        st.add_events("k1", [ev(s)])
    out.put(st.acked("k1"))


def test_two_processes_share_one_kiosks_prefix(url):
    Store(url).close()
    q = multiprocessing.get_context("spawn").Queue()
    procs = [multiprocessing.get_context("spawn").Process(target=_writer, args=(url, first, 200, q))
             for first in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    st = Store(url)
    assert st.seqs("k1") == list(range(1, 201))
    assert st.acked("k1") == 200


def test_bad_store_urls_are_refused_clearly(tmp_path):
    with pytest.raises(StoreError, match="unsupported store URL"):
        Store("mysql://x")
    with pytest.raises(StoreError, match="cannot open"):
        Store("postgresql://nobody@127.0.0.1:1/none")


def test_alerts_are_one_per_condition_and_their_outbox_is_taken_once(url):
    """The alert store on both backends: one open alert per condition (the
    deduplication, across bridges too), escalation and resolving once, the
    outbox's messages claimed by one sender, retried, then sent."""
    from kiosk_host.bridge.alerts import AlertStore

    st = Store(url)
    a, b = AlertStore(st), AlertStore(Store(url))          # two bridges on one store
    p = {"code": "door_forced", "level": "alarm", "text": "pickup door forced open", "subject": "pickup", "since": None}
    first = a.raise_("door|k1|door_forced|pickup", "door", "k1", p, 100.0, ("ops", "mail"))
    assert first and first["opened"] == 100.0
    assert b.raise_("door|k1|door_forced|pickup", "door", "k1", p, 101.0, ("ops", "mail")) is None
    assert [x["id"] for x in b.open_alerts()] == [first["id"]]
    assert a.count_open() == {"open": 1, "unacknowledged": 1, "alarm": 1}
    assert b.escalate(first["id"], 200.0, ("boss",)) and not a.escalate(first["id"], 201.0, ("boss",))
    due = a.due(300.0)
    assert sorted((d[2], d[3]) for d in due) == [("boss", "escalated"), ("mail", "raised"), ("ops", "raised")]
    ops = [d for d in due if d[2] == "ops"][0]
    assert a.claim(ops[0], ops[5], 300.0) and not b.claim(ops[0], ops[5], 300.0)   # one sender
    a.failed(ops[0], 1, "the webhook answered 500", 300.0)
    assert ops[0] not in [d[0] for d in a.due(305.0)] and ops[0] in [d[0] for d in a.due(311.0)]
    a.delivered(ops[0], 311.0)
    msgs = a.deliveries([first["id"]])[first["id"]]
    assert [(m["channel"], m["state"], m["attempts"]) for m in msgs if m["channel"] == "ops"] == [("ops", "sent", 2)]
    assert a.ack(first["id"], "pat", "on it", 320.0)["acked_by"] == "pat"
    assert a.ack(first["id"], "sam", None, 321.0)["acked_by"] == "pat"          # the first stands
    assert a.resolve(first["id"], 400.0, ("ops",)) and not b.resolve(first["id"], 401.0, ("ops",))
    # Gone and back: a new alert for the same condition.
    again = b.raise_("door|k1|door_forced|pickup", "door", "k1", p, 500.0, ("ops",))
    assert again and again["id"] != first["id"] and len(a.alerts()) == 2 and a.count_open()["open"] == 1
def test_people_users_tokens_sessions_sites_and_the_access_log_on_both_stores(url):
    from kiosk_host.bridge.people import People, PeopleError

    people = People(Store(url))
    people.add_site("clinic-1")
    people.assign("k1", "clinic-1")
    people.add_user("ana", "admin", password="a long password 1")
    people.add_user("pat", "pharmacist", ["clinic-1"], password="a long password 2")
    with pytest.raises(PeopleError, match="already exists"):
        people.add_user("pat", "viewer")
    tid, token = people.issue_token("pat")
    actor = people.by_token(token)
    assert (actor.name, actor.role, actor.sites, actor.via) == ("pat", "pharmacist", ("clinic-1",), "token")
    assert people.may_see(actor, "k1") and not people.may_see(actor, "k2")
    assert people.by_token(token + "x") is None
    # Only hashes are kept.
    with people.store.lock:
        stored = [str(c) for r in people.store._all("SELECT * FROM tokens") for c in r]
        stored += [str(c) for r in people.store._all("SELECT password FROM users") for c in r]
    assert token not in " ".join(stored) and "a long password" not in " ".join(stored)
    assert all(p.startswith("$argon2id$") for p in stored[-2:])
    who, cookie = people.login("pat", "a long password 2", "10.0.0.9")
    assert who.name == "pat" and people.by_session(cookie)[0].via == "session"
    for _ in range(5):
        with pytest.raises(PeopleError) as e:
            people.login("ana", "wrong", "10.0.0.9")
        assert e.value.status == 401
    with pytest.raises(PeopleError) as e:
        people.login("ana", "a long password 1", "10.0.0.9")
    assert e.value.status == 429 and e.value.retry_after >= 1
    people.revoke("pat")
    assert people.by_token(token) is None and people.by_session(cookie) is None
    assert people.user("pat")["revoked"] and people.user("pat")["tokens"][0]["revoked"]
    people.log_access(actor, "POST", "/api/kiosks/k1/pickups", 202, "10.0.0.9")
    people.log_access(None, "POST", "/api/kiosks/k1/pickups", 401, "10.0.0.8", "no credentials")
    log = people.access_log(limit=10)
    assert [(e["actor"], e["status"], e["ip"]) for e in log] == [(None, 401, "10.0.0.8"), ("pat", 202, "10.0.0.9")]
    assert people.access_log(before=log[0]["id"], limit=10)[0]["id"] == log[1]["id"]
    # The command row keeps who asked, on a store made before there were users too.
    st = people.store
    st.add_command("c1", "k1", "pickup", {"order": "o", "bin": 1}, 9999999999, "pat", None)
    assert (st.command("c1")["actor"], st.command("c1")["note"]) == ("pat", None)
    st.close()
    again = Store(url)
    assert again.command("c1")["actor"] == "pat"
    again.close()


def _birth(boot, conn, conns, jid, last, acked, lost=()):
    return {"online": True, "boot": boot, "conn": conn, "conns": conns, "fw": "0.2.0", "board": "emulator",
            "journal": {"id": jid, "last": last, "acked": acked, "lost": [list(r) for r in lost]},
            "snap": {"doors": {"pickup": {"door": "closed", "bolt": "engaged"}}, "faults": []}}


def test_a_will_counts_only_for_its_own_connection(url):
    # Finding 6: a replayed genuine will (signed, of an earlier connection of
    # the same boot) marked a running kiosk offline.
    st = Store(url)
    assert st.set_state("k1", _birth(3, "aaaa", 1, "j1", 5, 5))[0]
    old_will = {"online": False, "boot": 3, "conn": "aaaa", "conns": 1, "why": "lost"}
    assert st.set_state("k1", old_will)[0] is False          # that connection did end
    assert st.set_state("k1", _birth(3, "bbbb", 2, "j1", 6, 6))[0]
    assert st.set_state("k1", old_will)[0] is True and st.kiosk("k1")["online"]   # replayed later: ignored
    assert st.set_state("k1", _birth(3, "aaaa", 1, "j1", 5, 5))[0] is True       # the old birth too
    assert st.kiosk("k1")["birth"]["conn"] == "bbbb"
    assert st.set_state("k1", dict(old_will, conn="bbbb", conns=2))[0] is False   # its own will counts


def test_a_new_journal_never_collides_with_the_old_one(url):
    # Finding 3: a board re-provisioned with the old id and key starts again
    # at seq 1; the store dropped its records as duplicates of the old ones.
    st = Store(url)
    st.set_state("k1", _birth(9, "n1", 1, "old-journal", 40, 40))
    assert st.add_events("k1", [ev(s) for s in range(1, 41)], journal="old-journal")[1] == 40
    assert st.set_state("k1", _birth(1, "n2", 1, "new-journal", 1, 0))[0]     # boot 1 again: a new board
    new, acked, _ = st.add_events("k1", [ev(1, "boot"), ev(2, door="pickup", ev="door_forced"), ev(3)],
                                  journal="new-journal")
    assert (new, acked) == (3, 3)
    assert st.current("k1") == ("new-journal", 3)
    assert st.seqs("k1") == [1, 2, 3] and st.seqs("k1", "old-journal") == list(range(1, 41))
    assert st.events("k1", 1, 10)[0]["body"]["ev"] == "door_forced"
    assert "forced" in st.kiosk("k1")["status"]["doors"]["pickup"]["alarms"]
    # The old board's birth, replayed, does not take the kiosk back.
    assert st.set_state("k1", _birth(9, "n1", 1, "old-journal", 40, 40))[0]
    assert st.current("k1") == ("new-journal", 3)
    assert [(j["journal"], j["retired"]) for j in st.journals("k1")] == [("old-journal", True), ("new-journal", False)]


def test_lost_ranges_from_births_and_replies_become_custody_gaps(url):
    # Finding 2: a hole the kiosk no longer holds stopped the prefix for good.
    st = Store(url)
    st.set_state("k1", _birth(1, "n", 1, "j", 0, 0))
    assert st.add_events("k1", [ev(1, "boot"), ev(2, "boot"), ev(6, "boot"),
                                ev(10, door="service", ev="door_forced")], journal="j")[1] == 2
    assert "service" not in st.kiosk("k1")["status"]["doors"]
    # The kiosk's next birth says 3..5 are gone (rotated before anyone got them).
    _, done = st.set_state("k1", _birth(1, "n", 2, "j", 2, 2, lost=[(3, 5)]))
    assert st.current("k1") == ("j", 6)
    # A resend reply says 7..9 are unreadable on its flash.
    acked, _ = st.mark_lost("k1", "j", [(7, 9)])
    assert acked == 10
    assert "forced" in st.kiosk("k1")["status"]["doors"]["service"]["alarms"]
    gaps = [(g["from"], g["to"], g["why"]) for g in st.gaps("k1")]
    assert gaps == [(3, 5, "reported"), (7, 9, "reported")]
    assert st.kiosk("k1")["gaps"][0]["journal"] == "j"


def test_a_legacy_journal_is_claimed_by_its_first_birth_with_an_id(url):
    # A kiosk updated to firmware with journal ids keeps its seqs: the store's
    # records of it (journal "") become that journal's, nothing is sent twice.
    st = Store(url)
    st.set_state("k1", {"online": True, "boot": 4, "journal": {"last": 20, "acked": 20}, "snap": {}})
    assert st.add_events("k1", [ev(s) for s in range(1, 21)])[1] == 20
    st.set_state("k1", _birth(5, "n", 1, "jid", 21, 20))
    assert st.current("k1") == ("jid", 20)
    assert st.add_events("k1", [ev(21)], journal="jid")[1] == 21
    assert st.seqs("k1") == list(range(1, 22)) and st.seqs("k1", "") == []


def test_a_store_made_by_the_previous_schema_is_migrated(url):
    # The schema before journal ids: events and lost keyed by (kiosk, seq).
    import sqlite3
    if url.startswith("sqlite"):
        db = sqlite3.connect(url[len("sqlite:///"):])
        run = db.execute
    else:
        import psycopg
        db = psycopg.connect(url, autocommit=True)
        run = db.execute
    for stmt in (
            """CREATE TABLE kiosks (id TEXT PRIMARY KEY, online INTEGER NOT NULL DEFAULT 0, boot INTEGER, fw TEXT,
               board TEXT, birth TEXT, tele TEXT, why TEXT, seen DOUBLE PRECISION, acked BIGINT NOT NULL DEFAULT 0,
               journal_last BIGINT NOT NULL DEFAULT 0, status TEXT)""",
            """CREATE TABLE events (kiosk TEXT NOT NULL, seq BIGINT NOT NULL, boot INTEGER, t BIGINT, kind TEXT,
               body TEXT NOT NULL, stored DOUBLE PRECISION NOT NULL, PRIMARY KEY (kiosk, seq))""",
            "CREATE INDEX events_kind ON events (kiosk, kind, seq)",
            "CREATE TABLE lost (kiosk TEXT NOT NULL, first BIGINT NOT NULL, last BIGINT NOT NULL, PRIMARY KEY (kiosk, first))",
            "INSERT INTO kiosks (id, online, boot, acked, journal_last) VALUES ('k1', 1, 2, 12, 12)",
            "INSERT INTO lost (kiosk, first, last) VALUES ('k1', 3, 9)"):
        run(stmt)
    for s in (1, 2, 10, 11, 12):
        run("INSERT INTO events (kiosk, seq, boot, t, kind, body, stored) VALUES ('k1', %d, 2, 1, 'door', "
            "'{\"s\": %d, \"k\": \"door\"}', 1.0)" % (s, s))
    if hasattr(db, "commit"):
        db.commit()
    db.close()
    st = Store(url)
    assert st.current("k1") == ("", 12) and st.seqs("k1") == [1, 2, 10, 11, 12]
    assert [(g["from"], g["to"]) for g in st.gaps("k1")] == [(3, 9)]
    assert st.add_events("k1", [ev(13)])[1] == 13               # the legacy journal goes on
    assert st.events("k1", 10, 10, "door")[0]["seq"] == 11
    st.close()
    again = Store(url)                                          # opening it again changes nothing
    assert again.current("k1") == ("", 13) and again.count_events("k1") == 6
    # ... and the kiosk's first birth with an id carries it over.
    again.set_state("k1", _birth(3, "n", 1, "jid", 13, 13))
    assert again.current("k1") == ("jid", 13) and again.seqs("k1") == [1, 2, 10, 11, 12, 13]
