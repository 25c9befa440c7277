"""kioskctl: the field team's tool for one kiosk board on USB (or an
emulated kiosk's pty). Every command works over the board's REPL, through
mpremote's serial transport (kiosk_host.board_link) and the firmware's
kiosk.service.debug module.

    kioskctl --port /dev/ttyACM0 status [--json]
    kioskctl --port PORT deploy [--from DIR] [--no-build] [--dry-run]
    kioskctl --port PORT logs [-n N] [--since SEQ] [--kind KIND] [-f]
    kioskctl --port PORT config get [NAME] | config set NAME VALUE|@FILE   (secrets: @FILE only)
    kioskctl --port PORT provision --id ID --keys DIR [--board B] [--broker URL] [--broker-password @FILE]
                                   [--wifi-ssid S] [--wifi-password @FILE]
    kioskctl --port PORT selftest | home | jog [--bins N] | unlock [--door DOOR] | reboot

Connecting stops the firmware (Ctrl-C: locks de-energised, motors
disabled). When kioskctl stopped a running kiosk it starts it again at the
end (soft reset), unless --stay leaves it at the REPL; a kiosk found at the
REPL is left there. The port comes from --port or $KIOSK_PORT.
Exit status: 0 done, 1 refused or failed, 2 bad usage, 3 no board answers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from . import build, layout, paths
from .board_link import BoardError, BoardLink, NoBoard

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NO_BOARD = 3
SECRET_NAMES = ("key", "password", "psk")


class Failed(Exception):
    """The board answered, and the answer is no (or the operation failed)."""


# -- output helpers -----------------------------------------------------------
def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.2f}"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (dict, list)):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


def _table(rows: list[list[Any]], header: list[str] | None = None) -> str:
    cells = ([header] if header else []) + [[_fmt(c) for c in r] for r in rows]
    if not cells:
        return ""
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    if header:
        lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_status(st: dict[str, Any]) -> str:
    out = [_table([
        ["kiosk", st.get("kiosk_id")], ["firmware", st.get("fw")], ["board", st.get("board")],
        ["boot", st.get("boot")], ["reset cause", st.get("reset_cause")],
        ["controller", st.get("controller")],
    ])]
    fw = st.get("firmware") or {}
    if fw.get("layout") == "slots":
        slots = fw.get("slots") or {}
        staged = fw.get("staged") or {}
        trial = fw.get("trial") or {}
        rb = fw.get("rolled_back") or {}
        out.append(_table([
            ["running", f"{fw.get('running_version')} (slot {fw.get('running')})"],
            ["active slot", fw.get("active")],
            *[[f"slot {n}", v or "empty"] for n, v in sorted(slots.items())],
            ["staged", f"{staged.get('version')} ({staged.get('state')}, release {staged.get('release')}, "
                       f"slot {staged.get('slot')})" if staged else None],
            ["on trial", f"{trial.get('version')} (slot {trial.get('slot')}, "
                         f"{'started' if trial.get('started') else 'at the next boot'})" if trial else None],
            ["last rollback", f"{rb.get('version')}: {rb.get('why')}" if rb else None],
        ], ["firmware", ""]))
    elif fw.get("layout") == "flat":
        out.append(_table([["running", f"{fw.get('running_version')} (flat layout: no slots; "
                                       "kioskctl deploy moves it into slot a)"]], ["firmware", ""]))
    s = st.get("state")
    if s:
        op = s.get("op")
        out.append(_table([
            ["homed", s.get("homed")], ["bin at door", s.get("bin_at_door")],
            ["service session", s.get("service")],
            ["operation", f"{op['kind']} {op['id']} ({op['step']})" if op else None],
            ["queued", ", ".join(s.get("queue") or []) or None],
            ["stocked bins", ", ".join(sorted(s.get("stock") or {}, key=int)) or None],
        ]))
    alarms = st.get("alarms") or []
    out.append("ALARMS\n" + ("\n".join(f"  ! {a}" for a in alarms) if alarms else "  none"))
    if st.get("doors"):
        out.append(_table([[n, d.get("door"), d.get("bolt"), "ENERGISED" if d.get("energized") else "off",
                            ", ".join(d.get("alarms") or []) or None]
                           for n, d in sorted(st["doors"].items())],
                          ["door", "state", "bolt", "lock", "alarms"]))
    if st.get("sensors"):
        levels = {n: s.get("level") for n, s in ((st.get("climate") or {}).get("sensors") or {}).items()}
        out.append(_table([[n, d.get("value"), d.get("rh"), d.get("status"), levels.get(n), d.get("error")]
                           for n, d in sorted(st["sensors"].items())],
                          ["sensor", "celsius", "%RH", "status", "level", "error"]))
    ln = st.get("link") or {}
    out.append(_table([
        ["broker", ln.get("broker")], ["connected", ln.get("connected")],
        ["connects / drops", f"{_fmt(ln.get('connects'))} / {_fmt(ln.get('drops'))}"],
        ["last error", ln.get("last_error")], ["unacked events", ln.get("pending")],
        ["rssi", ln.get("rssi")],
    ], ["link", ""]))
    h = st.get("heap") or {}
    fl = st.get("flash") or {}
    out.append(_table([
        ["heap free", f"{h.get('free')} of {h.get('total')} bytes"],
        ["flash free", f"{fl.get('free')} of {fl.get('total')} bytes" if fl else None],
    ], ["memory", ""]))
    return "\n\n".join(out)


def _parse_value(text: str) -> Any:
    """JSON when it parses (numbers, true/false, null, objects), else text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


# -- commands -------------------------------------------------------------------
def cmd_status(board: BoardLink, args) -> int:
    st = board.call("debug.status()")
    print(json.dumps(st, indent=2, sort_keys=True) if args.json else render_status(st))
    return 0


def cmd_logs(board: BoardLink, args) -> int:
    kind = repr(args.kind)
    if args.follow:
        def show(b: bytes) -> None:
            sys.stdout.write(b.decode(errors="replace").replace("\r\n", "\n"))
            sys.stdout.flush()
        try:
            board.exec(f"from kiosk.service import debug\ndebug.follow({args.n})", timeout=None, consumer=show)
        except KeyboardInterrupt:
            board.interrupt()
            try:
                board.t.follow(15)
            except Exception:
                pass
            board.was_running = True  # the kiosk ran while following: start it again
        return 0
    since = "None" if args.since is None else int(args.since)
    recs = board.call(f"debug.records({args.n}, {since}, {kind})")
    for r in recs:
        print(json.dumps(r, sort_keys=True) if args.json else _log_line(r))
    return 0


def _log_line(r: dict[str, Any]) -> str:
    t = r.get("t")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) if isinstance(t, (int, float)) else "-"
    rest = {k: v for k, v in sorted(r.items()) if k not in ("s", "b", "t", "k")}
    return f"{r.get('s'):>6} {when} boot {r.get('b')} {r.get('k'):<8} " + \
        " ".join(f"{k}={_fmt(v)}" for k, v in rest.items())


def cmd_config(board: BoardLink, args) -> int:
    if args.action == "get":
        expr = "debug.config()" if not args.name else f"debug.config_get({args.name!r})"
        try:
            value = board.call(expr)
        except BoardError as e:
            raise Failed(_last_line(str(e))) from None
        print(json.dumps(value, indent=2, sort_keys=True) if isinstance(value, (dict, list)) else _fmt(value))
        return 0
    if args.value is None:
        raise Failed("config set needs NAME and VALUE")
    if args.name.split(".")[-1] in SECRET_NAMES:
        value: Any = _secret(args.value, args.name)
    elif args.value.startswith("@"):   # @FILE: the value from a file, kept out of shell history
        value = _secret(args.value, args.name)
    else:
        value = _parse_value(args.value)
    try:
        board.call(f"debug.config_set({args.name!r}, json.loads({json.dumps(json.dumps(value))}))")
    except BoardError as e:
        raise Failed(f"not changed: {_last_line(str(e))}") from None
    shown = "***" if args.name.split(".")[-1] in SECRET_NAMES else _fmt(value)
    print(f"{args.name} = {shown} (takes effect at the next boot)")
    return 0


def _secret(arg: str, what: str) -> str:
    """A secret from @FILE: never from the command line itself, where the
    process list and the shell's history show it to others."""
    if not arg.startswith("@"):
        raise Failed(f"{what}: give secrets as @FILE (a file holding it), never on the command line, "
                     "where the process list shows it")
    try:
        return Path(arg[1:]).read_text().strip()
    except OSError as e:
        raise Failed(f"cannot read {arg[1:]}: {e.strerror}") from None


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else text


def _op(board: BoardLink, expr: str, what: str, json_out: bool) -> int:
    try:
        r = board.call(expr, timeout=None)
    except BoardError as e:
        raise Failed(f"{what}: {_last_line(str(e))}") from None
    if json_out:
        print(json.dumps(r, sort_keys=True))
    state = r.get("state")
    info = r.get("info") or {}
    if state == "succeeded":
        if not json_out:
            extra = " ".join(f"{k}={_fmt(v)}" for k, v in sorted(info.items()))
            print(f"{what}: done{(' ' + extra) if extra else ''}")
        return 0
    reason = info.get("reason") or info.get("error") or state
    detail = info.get("detail")
    msg = f"{what}: {state}: {reason}" + (f" ({detail})" if detail else "")
    if reason == "no_service_session":
        msg += ". Start a service session from the pharmacy system first; the kiosk refuses this without one."
    raise Failed(msg)


def cmd_home(board: BoardLink, args) -> int:
    return _op(board, "debug.home()", "home", args.json)


def cmd_jog(board: BoardLink, args) -> int:
    return _op(board, f"debug.jog({int(args.bins)})", f"jog {args.bins}", args.json)


def cmd_selftest(board: BoardLink, args) -> int:
    return _op(board, "debug.selftest()", "selftest", args.json)


def cmd_unlock(board: BoardLink, args) -> int:
    return _op(board, f"debug.unlock({args.door!r})", f"unlock {args.door}", args.json)


def cmd_reboot(board: BoardLink, args) -> int:
    board.t.exec_raw_no_follow("import machine\nmachine.reset()")
    board.t.in_raw_repl = False
    board.was_running = False  # the reset restarts it
    print("rebooting")
    return 0


def cmd_deploy(board: BoardLink, args) -> int:
    """Install a build in the slot layout (kiosk_host.layout, docs/ota.md):
    the firmware goes into the slot that is not running and becomes the
    active one only once every file is verified there, so a cable pulled
    halfway leaves the board on its old firmware; then the boot selector and
    board files at the root, main.py last. A board in the old flat layout
    moves into slot a."""
    src = Path(args.src) if args.src else paths.FIRMWARE_BUILD_DIR
    if not args.no_build and not args.src:
        print("building firmware (mpy-cross) ...", flush=True)
        build.build(src)
    mpath = src / build.MANIFEST
    if not mpath.is_file():
        raise Failed(f"{src} has no {build.MANIFEST}: build first (make build) or give --from")
    manifest = json.loads(mpath.read_text())
    slot_files, root_files = layout.split(manifest["files"])
    smanifest = layout.slot_manifest(manifest)
    raw = board.read_file(layout.STATE)
    try:
        st: dict[str, Any] | None = json.loads(raw) if raw is not None else None
    except ValueError:
        st = None
    running = layout.running_slot(st)
    print(f"firmware {manifest.get('version')}: {len(slot_files)} firmware and {len(root_files)} root files; "
          f"the board runs {'slot ' + running if running else 'the flat layout'}; comparing ...", flush=True)
    root_have = board.hashes(sorted(root_files))
    root_todo = [n for n in sorted(root_files) if root_have.get(n) != root_files[n]["sha256"]]
    if running:
        run_dir = layout.slot_dir(running)
        have = board.hashes([f"{run_dir}/{n}" for n in sorted(slot_files)] + [f"{run_dir}/{layout.SLOT_MANIFEST}"])
        current = all(have.get(f"{run_dir}/{n}") == m["sha256"] for n, m in slot_files.items()) and \
            have.get(f"{run_dir}/{layout.SLOT_MANIFEST}") == layout.digest(smanifest)
        if current and not root_todo and st.get("active") == running and not st.get("trial"):
            print("board is up to date: nothing to copy")
            return 0
        target = running if current else ("b" if running == "a" else "a")
    else:
        run_dir, have, current, target = "", {}, False, "a"
    tdir = layout.slot_dir(target)
    slot_todo: list[str] = []
    local: list[str] = []
    if not current:
        there = board.hashes([f"{tdir}/{n}" for n in sorted(slot_files)])
        for n in sorted(slot_files):
            if there.get(f"{tdir}/{n}") == slot_files[n]["sha256"]:
                continue
            if run_dir and have.get(f"{run_dir}/{n}") == slot_files[n]["sha256"]:
                local.append(n)      # the running slot has it: copy it on the board
            else:
                slot_todo.append(n)
    send = slot_todo + root_todo
    total = sum(manifest["files"][n]["size"] for n in send)
    print(f"{len(send)} of {len(manifest['files'])} files differ ({total} bytes); "
          f"{len(local)} copied on the board from slot {running}; firmware into slot {target}", flush=True)
    if args.dry_run:
        for n in slot_todo:
            print(f"  would copy {n} -> {tdir}/{n}")
        for n in root_todo:
            print(f"  would copy {n}")
        return 0
    made: set[str] = set()

    def parent_of(dest: str) -> None:
        parent = dest.rsplit("/", 1)[0] if "/" in dest else ""
        if parent and parent not in made:
            board.makedirs(parent)
            made.add(parent)

    if not current:
        board.remove_tree(f"{tdir}/{layout.SLOT_MANIFEST}")   # the slot is not complete until it is written again
        for n in local:
            parent_of(f"{tdir}/{n}")
            board.copy_file(f"{run_dir}/{n}", f"{tdir}/{n}")
    done_bytes = 0
    for i, n in enumerate(send, 1):
        if n == "main.py":
            continue     # last, below: it starts the selector
        dest = f"{tdir}/{n}" if layout.in_slot(n) else n
        parent_of(dest)
        data = (src / n).read_bytes()
        board.write_file(dest, data)
        done_bytes += len(data)
        print(f"[{i}/{len(send)}] {dest} ({len(data)} bytes, {100 * done_bytes // max(total, 1)}%)", flush=True)
    print("verifying every file against the manifest ...", flush=True)
    want = {f"{tdir}/{n}": m["sha256"] for n, m in slot_files.items()}
    want.update({n: m["sha256"] for n, m in root_files.items() if n != "main.py"})
    after = board.hashes(sorted(want))
    bad = [n for n in sorted(want) if after.get(n) != want[n]]
    if bad:
        raise Failed(f"verify failed for {len(bad)} file(s): {', '.join(bad[:10])}; run deploy again "
                     "(the board still runs its previous firmware)")
    # The slot is complete: its manifest says so, then the selector runs it.
    board.write_file(f"{tdir}/{layout.SLOT_MANIFEST}", smanifest)
    state = dict(st) if isinstance(st, dict) else {}
    state.update({"active": target, "trial": None, "trying": False, "tries": 0, "why": None})
    board.write_file(layout.STATE, json.dumps(state).encode())
    if "main.py" in root_todo:
        board.write_file("main.py", (src / "main.py").read_bytes())
        print(f"[{len(send)}/{len(send)}] main.py", flush=True)
    for name in layout.LEGACY:
        board.remove_tree(name)
    after = board.hashes(["main.py", f"{tdir}/{layout.SLOT_MANIFEST}"])
    if after.get(f"{tdir}/{layout.SLOT_MANIFEST}") != layout.digest(smanifest) or \
            ("main.py" in root_files and after.get("main.py") != root_files["main.py"]["sha256"]):
        raise Failed("verify failed for main.py or the slot manifest; run deploy again")
    print(f"deployed firmware {manifest.get('version')} into slot {target}: {len(send)} file(s) sent, "
          f"{len(manifest['files'])} verified")
    board.was_running = board.was_running or args.restart
    return 0


def cmd_provision(board: BoardLink, args) -> int:
    from .emulator import EmulatorError, broker_config, ensure_key
    if not (0 < len(args.id) <= 32 and all(c.isdigit() or "a" <= c <= "z" or c == "-" for c in args.id)):
        raise Failed(f"kiosk id {args.id!r}: use 1-32 characters a-z, 0-9 and '-'")
    if args.broker and urlparse(args.broker).password is not None:
        raise Failed("--broker: the URL carries a password, and the process list shows it to every local user; "
                     "give the user in the URL and the password as --broker-password @FILE")
    try:
        broker = broker_config(args.broker) if args.broker else None
        if broker is not None and args.broker_password:
            if "user" not in broker:
                raise Failed("--broker-password needs a user in the broker URL (mqtts://USER@host:8883)")
            broker["password"] = _secret(args.broker_password, "--broker-password")
        key = ensure_key(Path(args.keys), args.id)
        data: dict[str, Any] = {"kiosk_id": args.id, "key": key}
        if args.board:
            data["board"] = args.board
        if broker:
            data["broker"] = broker
    except EmulatorError as e:
        raise Failed(str(e)) from None
    if args.wifi_ssid:
        data["wifi"] = {"ssid": args.wifi_ssid}
        if args.wifi_password:
            data["wifi"]["password"] = _secret(args.wifi_password, "--wifi-password")
    try:
        cfg = board.call(f"debug.provision(json.loads({json.dumps(json.dumps(data))}))")
    except BoardError as e:
        raise Failed(f"not provisioned: {_last_line(str(e))}") from None
    print(json.dumps(cfg, indent=2, sort_keys=True))
    print(f"provisioned {args.id}; its key is {Path(args.keys) / (args.id + '.key')} "
          "(give the bridge the same file). Takes effect at the next boot: kioskctl reboot")
    return 0


COMMANDS = {
    "status": cmd_status, "logs": cmd_logs, "config": cmd_config, "deploy": cmd_deploy,
    "provision": cmd_provision, "selftest": cmd_selftest, "home": cmd_home, "jog": cmd_jog, "unlock": cmd_unlock, "reboot": cmd_reboot,
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kioskctl", description="Flash, inspect and fix one kiosk board over USB.")
    p.add_argument("-p", "--port", default=os.environ.get("KIOSK_PORT"),
                   help="serial port or emulated kiosk pty (default $KIOSK_PORT)")
    p.add_argument("--baud", type=int, default=115200)
    p.add_argument("--timeout", type=float, default=8.0, help="seconds to wait for the board to answer")
    p.add_argument("--stay", action="store_true", help="leave the board at the REPL (do not restart the firmware)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    s = sub.add_parser("status", help="state, alarms, sensors, link, heap")
    s.add_argument("--json", action="store_true")
    s = sub.add_parser("logs", help="the journal (last records, or follow)")
    s.add_argument("-n", type=int, default=20, help="how many records (default 20)")
    s.add_argument("--since", type=int, help="every record from this sequence number on")
    s.add_argument("--kind", help="only records of this kind (door, temp, op, boot, ...)")
    s.add_argument("-f", "--follow", action="store_true", help="run the kiosk and print records as they come (Ctrl-C ends)")
    s.add_argument("--json", action="store_true")
    s = sub.add_parser("config", help="get or set config.json settings (secrets never shown)")
    s.add_argument("action", choices=("get", "set"))
    s.add_argument("name", nargs="?", help="dotted name, e.g. broker.host or policies.door_held_open_s")
    s.add_argument("value", nargs="?", help="new value (JSON, or text)")
    s = sub.add_parser("provision", help="write the kiosk's identity, key and broker into config.json")
    s.add_argument("--id", required=True, help="kiosk id (a-z, 0-9, '-')")
    s.add_argument("--keys", required=True, help="folder of <id>.key files (the key is made there if absent)")
    s.add_argument("--board", help="board definition name (pico2w, esp32s3, ...)")
    s.add_argument("--broker", help="mqtt://[user@]host:port or mqtts://[user@]host:8883?ca=/ca.pem (no password)")
    s.add_argument("--broker-password", metavar="@FILE", help="the broker password, from a file")
    s.add_argument("--wifi-ssid")
    s.add_argument("--wifi-password", metavar="@FILE", help="the Wi-Fi password, from a file")
    s = sub.add_parser("deploy", help="build, copy changed files, verify the manifest on the board")
    s.add_argument("--from", dest="src", help="a built flash tree (default: build it into build/firmware)")
    s.add_argument("--no-build", action="store_true", help="use build/firmware as it is")
    s.add_argument("--dry-run", action="store_true", help="only list what would be copied")
    s.add_argument("--restart", action="store_true", help="start the firmware afterwards even if it was stopped")
    for name, help_text in (("selftest", "test every sensor, lock and carousel (service session)"),
                            ("home", "home the carousel")):
        s = sub.add_parser(name, help=help_text)
        s.add_argument("--json", action="store_true")
    s = sub.add_parser("jog", help="move the carousel by bins (service session)")
    s.add_argument("--bins", type=int, default=1)
    s.add_argument("--json", action="store_true")
    s = sub.add_parser("unlock", help="unlock a door for one door cycle (service session only)")
    s.add_argument("--door", default="service", choices=("service", "pickup"))
    s.add_argument("--json", action="store_true")
    sub.add_parser("reboot", help="hard-reset the board")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.command == "config" and args.action == "set" and not args.name:
        p.error("config set needs NAME and VALUE")
    if not args.port:
        print("kioskctl: no port: give --port PATH (e.g. /dev/ttyACM0, or an emulated kiosk's pty) "
              "or set KIOSK_PORT", file=sys.stderr)
        return EXIT_USAGE
    board = None
    try:
        board = BoardLink(args.port, args.baud, args.timeout)
        board.enter()
        return COMMANDS[args.command](board, args)
    except NoBoard as e:
        print(f"kioskctl: {e}", file=sys.stderr)
        return EXIT_NO_BOARD
    except Failed as e:
        print(f"kioskctl: {e}", file=sys.stderr)
        return EXIT_FAILED
    except BoardError as e:
        print(f"kioskctl: the board raised:\n{e}", file=sys.stderr)
        return EXIT_FAILED
    except build.BuildError as e:
        print(f"kioskctl: build failed: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("kioskctl: interrupted", file=sys.stderr)
        return EXIT_FAILED
    finally:
        if board is not None:
            board.close(restart=board.was_running and not args.stay)


if __name__ == "__main__":
    sys.exit(main())
