"""`kiosk-bridge users|sites|kiosks`: people and places in the bridge's
store, from the shell of the machine that holds it.

    kiosk-bridge users add NAME --role ROLE --db URL [--sites S1,S2] [--password-file FILE]
    kiosk-bridge users token NAME --db URL      (the token alone on the last line)
    kiosk-bridge users list --db URL
    kiosk-bridge users revoke NAME --db URL [--token ID]
    kiosk-bridge users password NAME --db URL [--password-file FILE]
    kiosk-bridge sites add SITE --db URL
    kiosk-bridge sites list --db URL
    kiosk-bridge kiosks assign KIOSK --site SITE --db URL

Passwords come from a file (its first line), never from the command line,
where every user of the machine can read them; without one, a password is
made and printed once. Tokens are printed once; the store keeps hashes."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from .config import KIOSK_ID
from .people import PHARMACY_SYSTEM, ROLES, People, PeopleError, new_password
from .store import Store, StoreError


def _db(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", required=True, help="the bridge's store: sqlite:///PATH or postgresql://...")


def _password(path: str | None) -> tuple[str, bool]:
    """(the password, whether it was made here)."""
    if path is None:
        return new_password(), True
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise PeopleError(2, f"cannot read {path}: {e.strerror}") from None
    if not lines or not lines[0]:
        raise PeopleError(2, f"{path} holds no password on its first line")
    return lines[0], False


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "-"


def _open(url: str) -> People:
    if "://" in url and urlparse(url).password:
        raise PeopleError(2, "put the database password in PGPASSWORD or ~/.pgpass, not in --db")
    return People(Store(url))


def _run(parser: argparse.ArgumentParser, argv: list[str] | None, act) -> int:
    a = parser.parse_args(argv)
    try:
        people = _open(a.db)
        try:
            return act(a, people) or 0
        finally:
            people.store.close()
    except (PeopleError, StoreError) as e:
        print(f"{parser.prog}: {e}", file=sys.stderr)
        return 2 if not isinstance(e, PeopleError) or e.status in (2, 422) else 1


def users_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="kiosk-bridge users", description="The bridge's users and their credentials.")
    sub = p.add_subparsers(dest="cmd", required=True)
    add = sub.add_parser("add", help="add a user")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("--sites", default="", help="comma-separated sites the user is limited to (default: every site)")
    add.add_argument("--password-file", metavar="FILE",
                     help="the password on the file's first line (default: one is made and printed once; "
                          f"a {PHARMACY_SYSTEM} gets none, it uses tokens)")
    tok = sub.add_parser("token", help="issue an API token (printed once, alone on the last line)")
    tok.add_argument("name")
    sub.add_parser("list", help="every user, role, sites and token ids")
    rev = sub.add_parser("revoke", help="revoke a user (every token and session, and the password), or one token")
    rev.add_argument("name")
    rev.add_argument("--token", metavar="ID", help="revoke only this token (an id from `users list`)")
    pw = sub.add_parser("password", help="set a new password (every session of the user ends)")
    pw.add_argument("name")
    pw.add_argument("--password-file", metavar="FILE", help="default: one is made and printed once")
    for s in (add, tok, sub.choices["list"], rev, pw):
        _db(s)

    def act(a, people: People):
        if a.cmd == "add":
            sites = [s for s in a.sites.split(",") if s]
            password, made = (None, False) if a.role == PHARMACY_SYSTEM and not a.password_file \
                else _password(a.password_file)
            people.add_user(a.name, a.role, sites, password)
            print(f"user {a.name} added: {a.role}, " + (f"sites {', '.join(sites)}" if sites else "every site"))
            if made:
                print(f"password (shown once): {password}")
        elif a.cmd == "token":
            tid, token = people.issue_token(a.name)
            print(f"token {tid} for {a.name} (shown once; revoke with `kiosk-bridge users revoke {a.name} "
                  f"--token {tid}`):")
            print(token)
        elif a.cmd == "list":
            print(f"{'name':<24} {'role':<16} {'sites':<20} {'login':<8} {'created':<17} tokens")
            for u in people.users():
                toks = ", ".join(f"{t['id']}" + (" (revoked)" if t["revoked"] else f" (used {_when(t['last_used'])})")
                                 for t in u["tokens"]) or "-"
                state = "revoked" if u["revoked"] else ("password" if u["password"] else "-")
                print(f"{u['name']:<24} {u['role']:<16} {','.join(u['sites']) or '(every site)':<20} {state:<8} "
                      f"{_when(u['created']):<17} {toks}")
        elif a.cmd == "revoke":
            people.revoke(a.name, a.token)
            print(f"token {a.token} of {a.name} revoked" if a.token
                  else f"user {a.name} revoked: every token and session ended, no login")
        elif a.cmd == "password":
            password, made = _password(a.password_file)
            people.set_password(a.name, password)
            print(f"password of {a.name} changed; their sessions ended")
            if made:
                print(f"password (shown once): {password}")

    return _run(p, argv, act)


def sites_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="kiosk-bridge sites", description="Sites: a clinic with its kiosks.")
    sub = p.add_subparsers(dest="cmd", required=True)
    add = sub.add_parser("add", help="add a site")
    add.add_argument("site")
    _db(add)
    _db(sub.add_parser("list", help="every site and its kiosks"))

    def act(a, people: People):
        if a.cmd == "add":
            people.add_site(a.site)
            print(f"site {a.site} added")
        else:
            for s in people.sites():
                print(f"{s['name']}: {', '.join(s['kiosks']) or '(no kiosks)'}")

    return _run(p, argv, act)


def kiosks_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="kiosk-bridge kiosks", description="Which site each kiosk belongs to.")
    sub = p.add_subparsers(dest="cmd", required=True)
    asg = sub.add_parser("assign", help="put a kiosk in a site (a kiosk belongs to one site)")
    asg.add_argument("kiosk")
    asg.add_argument("--site", required=True)
    _db(asg)

    def act(a, people: People):
        if not KIOSK_ID.match(a.kiosk):
            raise PeopleError(422, f"not a kiosk id: {a.kiosk!r}")
        people.assign(a.kiosk, a.site)
        print(f"kiosk {a.kiosk} is in site {a.site}")

    return _run(p, argv, act)
