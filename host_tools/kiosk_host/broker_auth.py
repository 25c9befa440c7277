"""Broker credentials for the locked-down mosquitto in deploy/mosquitto/.

    python -m kiosk_host.broker_auth add-kiosk ID --passwords FILE --secrets DIR [--acl FILE] [--rotate]
    python -m kiosk_host.broker_auth add-bridge NAME --passwords FILE --secrets DIR --acl FILE [--rotate]
    python -m kiosk_host.broker_auth remove NAME --passwords FILE [--acl FILE]
    python -m kiosk_host.broker_auth make-certs DIR [--host NAME ...] [--days N]
    python -m kiosk_host.broker_auth render-conf OUT [--conf FILE] [--set DIRECTIVE=VALUE ...]

A kiosk's MQTT username is its kiosk id: the ACL's `pattern` lines give
every user `kiosk/<username>/...` and nothing else. A bridge is a user with
a `user NAME` block in the ACL granting the fleet-wide rights; add-bridge
appends that block. Each new password comes from `secrets`, is written to
SECRETS/NAME.mqtt-password (mode 0600) and is never printed. It is hashed by
`mosquitto_passwd -U` on a private temporary file, so it never appears on a
command line. The broker reads the changed files on SIGHUP (or
`systemctl reload mosquitto`). See docs/security.md.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from . import paths

DEPLOY_DIR = paths.REPO_ROOT / "deploy" / "mosquitto"
SHIPPED_CONF = DEPLOY_DIR / "mosquitto.conf"
SHIPPED_ACL = DEPLOY_DIR / "acl"

# Kiosk ids and bridge names become MQTT usernames and topic levels: no MQTT
# wildcards or level separators (the ACL patterns substitute them into
# topics), no ':' (the password file's separator), nothing a shell or URL
# would mangle.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

BRIDGE_RIGHTS = (
    "topic read kiosk/+/state",
    "topic read kiosk/+/evt",
    "topic read kiosk/+/reply",
    "topic read kiosk/+/tele",
    "topic write kiosk/+/cmd",
    "topic write kiosk/+/ack",
    "topic write kiosk/+/ota",
)


class AuthError(Exception):
    """A provisioning step that cannot be done; the message says why."""


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise AuthError(f"{name!r} cannot be an MQTT username here: use 1-64 letters, digits, '.', '_' "
                        "or '-', starting with a letter or digit")
    return name


def mosquitto_passwd_exe() -> str:
    found = shutil.which("mosquitto_passwd") or (
        "/usr/bin/mosquitto_passwd" if os.access("/usr/bin/mosquitto_passwd", os.X_OK) else None)
    if not found:
        raise AuthError("mosquitto_passwd is not installed (apt-get install mosquitto)")
    return found


# -- password file -----------------------------------------------------------

def password_users(passwords: Path) -> list[str]:
    if not passwords.exists():
        return []
    return [ln.split(":", 1)[0] for ln in passwords.read_text().splitlines() if ":" in ln]


def _hash_line(user: str, password: str) -> str:
    """`user:$7$...`: mosquitto's own hash, made by `mosquitto_passwd -U` on a
    0600 file in a 0700 temporary directory (no password on any argv)."""
    with tempfile.TemporaryDirectory(prefix="broker-auth-") as tmp:
        f = Path(tmp) / "one"
        fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{user}:{password}\n")
        r = subprocess.run([mosquitto_passwd_exe(), "-U", str(f)], capture_output=True, text=True)
        line = f.read_text().strip()
        if r.returncode != 0 or not line.startswith(f"{user}:$"):
            raise AuthError(f"mosquitto_passwd -U failed: {(r.stderr or r.stdout).strip()}")
        return line


def _write_atomic(path: Path, text: str, mode: int) -> None:
    """Replace path with text; keeps the old file's mode and group if it had
    them (the broker's group must keep read access), else uses mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    st = path.stat() if path.exists() else None
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, st.st_mode & 0o777 if st else mode)
        if st is not None and os.geteuid() == 0:
            os.chown(tmp, st.st_uid, st.st_gid)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def set_password(passwords: Path, user: str, password: str) -> None:
    _put_line(passwords, user, _hash_line(user, password))


def _put_line(passwords: Path, user: str, line: str) -> None:
    kept = [ln for ln in (passwords.read_text().splitlines() if passwords.exists() else [])
            if ln.strip() and ln.split(":", 1)[0] != user]
    _write_atomic(passwords, "\n".join(kept + [line]) + "\n", 0o640)


def _save_secret(secrets_dir: Path, user: str, password: str) -> Path:
    secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = secrets_dir / f"{user}.mqtt-password"
    tmp = path.with_name(path.name + ".new")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(password + "\n")
    os.replace(tmp, path)
    return path


# -- ACL file ----------------------------------------------------------------

def acl_users(acl: Path) -> list[str]:
    if not acl.exists():
        return []
    out = []
    for ln in acl.read_text().splitlines():
        parts = ln.split(None, 1)
        if len(parts) == 2 and parts[0] == "user":
            out.append(parts[1].strip())
    return out


def add_bridge_acl(acl: Path, name: str) -> bool:
    """Append `user NAME` with the fleet-wide rights; False if already there."""
    if name in acl_users(acl):
        return False
    text = acl.read_text() if acl.exists() else SHIPPED_ACL.read_text()
    if not text.endswith("\n"):
        text += "\n"
    block = "\n".join([f"user {name}", *BRIDGE_RIGHTS])
    _write_atomic(acl, text + "\n" + block + "\n", 0o640)
    return True


def remove_acl_user(acl: Path, name: str) -> bool:
    """Drop the `user NAME` block (its line and the topic lines after it)."""
    if not acl.exists():
        return False
    out, skipping, found = [], False, False
    for ln in acl.read_text().splitlines():
        parts = ln.split(None, 1)
        if parts and parts[0] in ("user", "pattern"):
            skipping = parts[0] == "user" and len(parts) == 2 and parts[1].strip() == name
            found = found or skipping
        if not skipping:
            out.append(ln)
    if found:
        _write_atomic(acl, "\n".join(out).rstrip("\n") + "\n", 0o640)
    return found


# -- commands ----------------------------------------------------------------

def add_user(kind: str, name: str, passwords: Path, secrets_dir: Path, acl: Path | None = None,
             rotate: bool = False) -> Path:
    """Create (or with rotate, replace) NAME's password; returns the secret's path."""
    check_name(name)
    exists = name in password_users(passwords)
    if exists and not rotate:
        raise AuthError(f"{name} already has a password in {passwords}; use --rotate to replace it")
    if not exists and rotate:
        raise AuthError(f"{name} has no password in {passwords} to rotate")
    bridges = acl_users(acl) if acl else []
    if kind == "kiosk" and name in bridges:
        raise AuthError(f"{name} is a bridge in {acl}: a kiosk with that id would get the bridge's rights")
    if kind == "bridge":
        if acl is None:
            raise AuthError("add-bridge needs --acl: the bridge's rights are a `user` block there")
        if exists and name not in bridges:
            raise AuthError(f"{name} is a kiosk in {passwords}, not a bridge")
    password = secrets.token_urlsafe(24)   # 192 bits; safe inside mqtt://user:pass@host URLs
    line = _hash_line(name, password)      # first: if hashing fails, nothing has changed
    secret = _save_secret(secrets_dir, name, password)
    _put_line(passwords, name, line)
    if kind == "bridge":
        add_bridge_acl(acl, name)
    return secret


def remove_user(name: str, passwords: Path, acl: Path | None = None) -> bool:
    users = password_users(passwords)
    found = name in users
    if found:
        kept = [ln for ln in passwords.read_text().splitlines()
                if ln.strip() and ln.split(":", 1)[0] != name]
        _write_atomic(passwords, "".join(ln + "\n" for ln in kept), 0o640)
    if acl is not None and remove_acl_user(acl, name):
        found = True
    return found


def make_certs(out: Path, hosts: list[str], days: int = 825) -> dict[str, Path]:
    """A throwaway CA and a server certificate for hosts (EC P-256, with
    subjectAltName), made with the `openssl` command. For demos and tests:
    a real deployment uses its own CA (docs/security.md)."""
    exe = shutil.which("openssl")
    if not exe:
        raise AuthError("the openssl command is not installed (apt-get install openssl)")
    if not hosts:
        raise AuthError("make-certs needs at least one --host")
    out.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (out / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem"))
    sans = []
    for h in hosts:
        try:
            ipaddress.ip_address(h)
            sans.append(f"IP:{h}")
        except ValueError:
            sans.append(f"DNS:{h}")
    ext = out / "server.ext"
    ext.write_text("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                   "extendedKeyUsage=serverAuth\nsubjectAltName=" + ",".join(sans) + "\n")
    old = os.umask(0o077)
    try:
        def run(*args: str) -> None:
            r = subprocess.run([exe, *args], capture_output=True, text=True)
            if r.returncode != 0:
                raise AuthError(f"openssl {args[0]} failed: {r.stderr.strip()}")

        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        run("req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca), "-days", str(days),
            "-subj", "/CN=kiosk fleet throwaway CA", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        run("req", "-new", *ec, "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={hosts[0]}")
        run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
            "-out", str(cert), "-days", str(days), "-sha256", "-extfile", str(ext))
    finally:
        os.umask(old)
    csr.unlink(missing_ok=True)
    ext.unlink(missing_ok=True)
    (out / "ca.srl").unlink(missing_ok=True)
    for p in (ca, cert):
        p.chmod(0o644)
    return {"ca": ca, "ca_key": ca_key, "cert": cert, "key": key}


def render_conf(text: str, settings: dict[str, str]) -> str:
    """The config text with each named directive's value replaced (the first
    occurrence, commented or not) or, if absent, appended. `listener` takes
    "PORT [ADDRESS]"."""
    lines = text.splitlines()
    for name, value in settings.items():
        for i, ln in enumerate(lines):
            parts = ln.split(None, 1)
            if parts and parts[0] == name:
                lines[i] = f"{name} {value}"
                break
        else:
            lines.append(f"{name} {value}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kiosk_host.broker_auth",
                                 description="Passwords, ACL entries and throwaway certificates for the "
                                             "kiosk fleet's mosquitto (deploy/mosquitto/).")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for kind in ("kiosk", "bridge"):
        s = sub.add_parser(f"add-{kind}", help=f"create a {kind}'s broker password"
                           + (" and its ACL block" if kind == "bridge" else ""))
        s.add_argument("name", metavar="ID" if kind == "kiosk" else "NAME")
        s.add_argument("--passwords", required=True, type=Path, help="mosquitto password_file")
        s.add_argument("--secrets", required=True, type=Path,
                       help="directory for NAME.mqtt-password (mode 0600)")
        s.add_argument("--acl", type=Path, required=kind == "bridge", help="mosquitto acl_file")
        s.add_argument("--rotate", action="store_true", help="replace an existing password")
    s = sub.add_parser("remove", help="delete a kiosk's or bridge's password (and a bridge's ACL block)")
    s.add_argument("name")
    s.add_argument("--passwords", required=True, type=Path)
    s.add_argument("--acl", type=Path)
    s = sub.add_parser("make-certs", help="throwaway CA and server certificate, for demos and tests")
    s.add_argument("dir", type=Path)
    s.add_argument("--host", action="append", default=[],
                   help="DNS name or IP for the server certificate (repeatable; default localhost, 127.0.0.1)")
    s.add_argument("--days", type=int, default=825)
    s = sub.add_parser("render-conf", help="write the shipped mosquitto.conf with some directives replaced")
    s.add_argument("out", type=Path)
    s.add_argument("--conf", type=Path, default=SHIPPED_CONF)
    s.add_argument("--set", action="append", default=[], metavar="DIRECTIVE=VALUE")
    args = ap.parse_args(argv)
    try:
        if args.cmd in ("add-kiosk", "add-bridge"):
            secret = add_user(args.cmd[4:], args.name, args.passwords, args.secrets, args.acl, args.rotate)
            print(f"{args.name}: password {'replaced' if args.rotate else 'created'} in {args.passwords}; "
                  f"the password is in {secret}")
            if args.cmd == "add-bridge":
                print(f"{args.name}: fleet-wide rights in {args.acl}")
            print("reload the broker to apply: systemctl reload mosquitto (or kill -HUP its pid)")
        elif args.cmd == "remove":
            if not remove_user(args.name, args.passwords, args.acl):
                raise AuthError(f"{args.name} not found")
            print(f"{args.name}: removed; reload the broker to apply")
        elif args.cmd == "make-certs":
            made = make_certs(args.dir, args.host or ["localhost", "127.0.0.1"], args.days)
            for what, p in made.items():
                print(f"{what}: {p}")
        elif args.cmd == "render-conf":
            settings = {}
            for kv in args.set:
                k, sep, v = kv.partition("=")
                if not sep:
                    raise AuthError(f"--set wants DIRECTIVE=VALUE, got {kv!r}")
                settings[k] = v
            args.out.write_text(render_conf(args.conf.read_text(), settings))
            print(f"wrote {args.out}")
    except (AuthError, OSError) as e:
        print(f"broker_auth: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
