"""`kiosk-bridge serve` and `kiosk-bridge demo`."""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
import tempfile
import threading
from pathlib import Path

from .alerts import Alerter, Rules
from .config import ConfigError, Keys, read_share_group
from .people import ADMIN, PHARMACIST, PHARMACY_SYSTEM, TECHNICIAN, VIEWER, People, PeopleError, new_password
from .service import Bridge
from .store import Store, StoreError

LOOPBACK = ("127.0.0.1", "localhost", "::1")
WILDCARD = ("0.0.0.0", "::", "")


def _hostport(text: str, parser: argparse.ArgumentParser) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        parser.error(f"--http takes HOST:PORT, not {text!r}")
    return host.strip("[]"), int(port)


def _loopback(host: str) -> bool:
    return host in LOOPBACK or host.startswith("127.")


def allowed_hosts(http_host: str, given: list[str] | None, parser: argparse.ArgumentParser,
                  demo: bool = False) -> tuple[str, ...]:
    """The host names the bridge answers to (the Host header): those given
    with --allowed-host, else the --http address, with its loopback aliases
    when it is a loopback address (a page on another site cannot make a
    browser send Host: localhost, so they are as safe as 127.0.0.1)."""
    if given:
        return tuple(h.lower().strip("[]") for h in given)
    if _loopback(http_host):
        return tuple(dict.fromkeys((http_host, *LOOPBACK)))
    if demo:
        parser.error(f"the demo prints passwords: on a non-loopback address ({http_host}) it needs "
                     "--allowed-host NAME for each host name its users type")
    if http_host in WILDCARD:
        parser.error(f"--http {http_host} listens on every address: name the host names clients use "
                     "with --allowed-host (a request for any other Host is refused)")
    return (http_host.lower(),)


def _web_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allowed-host", action="append", metavar="NAME",
                   help="a host name clients use to reach the bridge (repeatable); requests naming any other "
                        "Host are refused. Default: the --http address (and localhost aliases for a loopback one)")


def _unusable(host: str, port: int) -> str | None:
    """Why HOST:PORT cannot be listened on (say, another demo holds it), or None.
    Checked before anything is started, so a clash costs nothing to undo."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        return f"cannot resolve {host}: {e.strerror}"
    for family, kind, proto, _, addr in infos:
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as uvicorn does
            try:
                s.bind(addr)
            except OSError as e:
                return e.strerror or str(e)
    return None


def _free_port_after(host: str, port: int) -> int | None:
    for p in range(port + 1, min(port + 50, 65536)):
        if _unusable(host, p) is None:
            return p
    return None


def _port_problem(host: str, port: int, how: str) -> str | None:
    """A message for a port that is taken, naming a free one and how to ask for it."""
    why = _unusable(host, port)
    if why is None:
        return None
    alt = _free_port_after(host, port) or port + 1
    return (f"cannot listen on {host}:{port}: {why} (is another demo or bridge running there?). "
            f"Stop it, or pick another port: {how.format(http=f'{host}:{alt}')}")


def _serve_http(app, host: str, port: int, on_ready=None, tls: tuple[str, str] | None = None) -> None:
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            ssl_certfile=tls[0] if tls else None, ssl_keyfile=tls[1] if tls else None)
    server = uvicorn.Server(config)

    def stop(*_):
        server.should_exit = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if on_ready:
        threading.Thread(target=lambda: (_wait_started(server), on_ready()), daemon=True).start()
    server.run()


def _wait_started(server) -> None:
    import time

    while not server.started and not server.should_exit:
        time.sleep(0.05)


def _logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")


def serve_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="kiosk-bridge serve", description="Run the bridge against a broker.")
    p.add_argument("--broker", required=True, help="mqtt://[user@]host:port or mqtts://host:port?ca=CA.pem")
    p.add_argument("--broker-credentials", metavar="FILE",
                   help="file holding user:password (or the password); else KIOSK_BRIDGE_MQTT_USER/_PASSWORD")
    p.add_argument("--db", default="sqlite:///kiosk-bridge.sqlite3",
                   help="sqlite:///PATH (default kiosk-bridge.sqlite3) or postgresql://...")
    p.add_argument("--http", default="127.0.0.1:8080", help="HOST:PORT for the API and dashboard (default 127.0.0.1:8080)")
    p.add_argument("--keys", required=True, help="folder of per-kiosk keys <id>.key")
    share = p.add_mutually_exclusive_group()
    share.add_argument("--share-file", metavar="FILE",
                       help="share the work with other bridges through MQTT v5 shared subscriptions "
                            "($share/GROUP/...), GROUP being the random secret in FILE (mode 600): a kiosk's "
                            "broker login cannot join a group it cannot name (docs/bridge-scaling.md)")
    share.add_argument("--share", metavar="GROUP",
                       help="the same with a group named here: only where no kiosk shares the broker (a kiosk's "
                            "login can join a group it can guess and take messages from the bridges)")
    p.add_argument("--command-ttl", type=int, default=60, help="seconds a command stays valid (default 60, at most 300)")
    p.add_argument("--alerts", metavar="FILE",
                   help="alert rules and channels (TOML, docs/alerts.md); default: every alert shown, sent nowhere")
    _web_options(p)
    p.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate chain (and --tls-key)")
    p.add_argument("--tls-key", metavar="PEM", help="the certificate's private key")
    p.add_argument("--secure-cookies", action="store_true",
                   help="clients reach the bridge over HTTPS through a TLS-terminating proxy: session cookies "
                        "only over HTTPS (implied by --tls-cert)")
    p.add_argument("--webhook", metavar="URL", help="POST every order change to this URL (the pharmacy system)")
    p.add_argument("--webhook-secret", metavar="FILE",
                   help="file holding the webhooks' shared signing secret (needed with --webhook)")
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args(argv)
    host, port = _hostport(a.http, p)
    hosts = allowed_hosts(host, a.allowed_host, p)
    if bool(a.tls_cert) != bool(a.tls_key):
        p.error("--tls-cert and --tls-key go together")
    if a.webhook and not a.webhook_secret:
        p.error("--webhook needs --webhook-secret FILE (the secret never goes on the command line)")
    if not 5 <= a.command_ttl <= 300:
        p.error("--command-ttl must be between 5 and 300 seconds (the kiosk refuses longer)")
    _logging(a.verbose)
    busy = _port_problem(host, port, "--http {http}")
    if busy:
        print(f"kiosk-bridge: {busy}", file=sys.stderr)
        return 2
    from urllib.parse import urlparse

    if "://" in a.db and urlparse(a.db).password:
        print("kiosk-bridge: put the database password in PGPASSWORD or ~/.pgpass, not in --db", file=sys.stderr)
        return 2
    try:
        rules = Rules.load(a.alerts, dashboard_url=f"{'https' if a.tls_cert else 'http'}://{hosts[0]}:{port}")
        secret = None
        if a.webhook:
            from .webhooks import read_secret
            secret = read_secret(a.webhook_secret)
        group = read_share_group(a.share_file) if a.share_file else a.share
        if a.share:
            print(f"kiosk-bridge: --share {a.share}: a kiosk's broker login that guesses the group can join it and "
                  "take part of the fleet's messages from the bridges; use --share-file with a random secret",
                  file=sys.stderr, flush=True)
        store = Store(a.db)
        bridge = Bridge(a.broker, store, Keys(a.keys), share=group, credentials_file=a.broker_credentials,
                        command_ttl_s=a.command_ttl, webhook_url=a.webhook, webhook_secret=secret).start()
        bridge.alerter = Alerter(bridge, rules).start()
    except (ConfigError, StoreError) as e:
        print(f"kiosk-bridge: {e}", file=sys.stderr)
        return 2
    from .api import create_app
    from .api.auth import Web

    tls = (a.tls_cert, a.tls_key) if a.tls_cert else None
    web = Web(hosts, secure_cookies=bool(tls) or a.secure_cookies)
    scheme = "https" if tls else "http"
    print(f"kiosk-bridge: store {store.kind}, broker {bridge.broker['host']}:{bridge.broker['port']}, "
          f"API and dashboard on {scheme}://{hosts[0] if ':' not in hosts[0] else f'[{hosts[0]}]'}:{port}/ "
          f"(hosts: {', '.join(hosts)})", flush=True)
    people = People(store)
    if not people.users():
        print("kiosk-bridge: no users yet: add one with `kiosk-bridge users add NAME --role admin --db ...`",
              file=sys.stderr, flush=True)
    try:
        _serve_http(create_app(bridge, people=people, web=web), host, port, tls=tls)
    finally:
        bridge.alerter.stop()
        bridge.stop()
        store.close()
    return 0


def _banner(url: str, kiosks: list[dict]) -> str:
    """What the demo says once it serves: where to look and what to try."""
    first = kiosks[0]
    return "\n".join([
        f"demo: dashboard {url}  (API docs {url}docs)",
        "demo: next steps",
        f"  1. Open {url} and log in as demo-technician (its password is above): the fleet, the most urgent",
        "     kiosk first. Every kiosk starts empty.",
        f"  2. Open kiosk {first['id']}. In its Service panel start a service session; under Orders to stock,",
        "     stock demo-rx-2 (the bridge picks the bin). Be the technician in the Simulate panel: scan the",
        "     package's label (demo-rx-2) when asked, then open the service door and close it. End the session.",
        "  3. Log in as demo-pharmacist. In the Pharmacy queue release demo-rx-2 (it needs counselling: say how it",
        f"     went); on kiosk {first['id']}'s page request its pickup from its bin, and be the patient: open and",
        "     close the pickup door. Reports shows every movement, with who and when.",
        "  4. Try what goes wrong: force a door open, heat a sensor past 30 °C, cut a kiosk's power.",
        "  5. A kiosk's console over its USB-like tty, as a technician on site sees it:",
        f"     .venv/bin/kioskctl --port {first['tty']} status",
        "demo: Ctrl-C stops everything",
    ])


def demo_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="kiosk-bridge demo",
                                description="A demo fleet: a local broker, the bridge, emulated kiosks and the dashboard.")
    p.add_argument("--http", default="127.0.0.1:8080", help="HOST:PORT for the API, dashboard and /api/sim")
    p.add_argument("--count", type=int, default=3, help="emulated kiosks (default 3)")
    p.add_argument("--state-dir", help="where the kiosks' flash, keys and the store live (default: a temp folder)")
    p.add_argument("--broker", choices=("auto", "mosquitto", "amqtt"), default="auto")
    p.add_argument("--alerts", metavar="FILE", help="alert rules and channels (TOML, docs/alerts.md)")
    _web_options(p)
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args(argv)
    host, port = _hostport(a.http, p)
    hosts = allowed_hosts(host, a.allowed_host, p, demo=True)
    _logging(a.verbose)
    busy = _port_problem(host, port, 'make demo DEMO_ARGS="--http {http}" (or kiosk-bridge demo --http {http})')
    if busy:
        print(f"demo: {busy}", file=sys.stderr)
        return 2
    try:
        rules = Rules.load(a.alerts, dashboard_url=f"http://{host}:{port}")
    except ConfigError as e:
        print(f"demo: {e}", file=sys.stderr)
        return 2

    from ..broker import LocalBroker
    from ..emulator import EmulatorError
    from ..emulator.fleet import Fleet
    from .api.auth import Web

    tmp = None
    if a.state_dir:
        root = Path(a.state_dir)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="kiosk-demo-")
        root = Path(tmp.name)
    keys = root / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    broker = fleet = bridge = store = None
    try:
        broker = LocalBroker(root / "broker", prefer=None if a.broker == "auto" else a.broker).start()
        print(f"demo: broker {broker.kind} on {broker.url}", flush=True)
        store = Store(f"sqlite:///{root / 'bridge.sqlite3'}")
        fleet = Fleet(broker.url, a.count, root / "kiosks", keys, id_prefix="demo-").start()
        bridge = Bridge(broker.url, store, Keys(keys)).start()
        bridge.alerter = Alerter(bridge, rules).start()
        for k in fleet.kiosks:
            print(f"demo: kiosk {k['id']}  console {k['tty']}  (now {k['pty']})", flush=True)
        people = People(store)
        demo_people(people, [k["id"] for k in fleet.kiosks])
        app = demo_app(bridge, fleet, people, Web(hosts))
        url = f"http://{hosts[0] if ':' not in hosts[0] else f'[{hosts[0]}]'}:{port}/"

        def ready() -> None:
            print(_banner(url, fleet.kiosks), flush=True)
            from .demo_pickup import prepare
            prepare(bridge, fleet, url, lambda line: print(line, flush=True))

        _serve_http(app, host, port, on_ready=ready)
    except (EmulatorError, RuntimeError, StoreError, ConfigError, PeopleError) as e:
        print(f"demo: {e}", file=sys.stderr)
        return 2
    finally:
        print("demo: stopping", file=sys.stderr, flush=True)
        if bridge and bridge.alerter:
            bridge.alerter.stop()
        if bridge:
            bridge.stop()
        if fleet:
            fleet.stop()
        if broker:
            broker.stop()
        if store:
            store.close()
        if tmp:
            tmp.cleanup()
    return 0


def demo_app(bridge: Bridge, fleet, people: People, web):
    """The demo's app: the bridge's, plus the emulator's /api/sim routes for
    those who may simulate."""
    from ..emulator.routes import sim_router
    from .api import create_app
    from .api.auth import guarded

    return create_app(bridge, [guarded(sim_router(fleet), "simulate")], title="Kiosk bridge (demo)",
                      people=people, web=web)


DEMO_SITE = "demo-clinic"
DEMO_USERS = (("demo-admin", ADMIN), ("demo-pharmacist", PHARMACIST), ("demo-technician", TECHNICIAN),
              ("demo-viewer", VIEWER), ("demo-system", PHARMACY_SYSTEM))


def demo_people(people: People, kiosks: list[str]) -> None:
    """A demo site holding the kiosks and one user per role, with new
    passwords (and a token for the pharmacy system) every run, printed once."""
    if DEMO_SITE not in [s["name"] for s in people.sites()]:
        people.add_site(DEMO_SITE)
    for kid in kiosks:
        people.assign(kid, DEMO_SITE)
    print(f"demo: site {DEMO_SITE}: {', '.join(kiosks)}", flush=True)
    for name, role in DEMO_USERS:
        if people.user(name) is None:
            people.add_user(name, role)
        if role == PHARMACY_SYSTEM:
            for t in people.user(name)["tokens"]:
                if t["revoked"] is None:
                    people.revoke(name, t["id"])
            print(f"demo: user {name:<16} {role:<16} API token {people.issue_token(name)[1]}", flush=True)
        else:
            password = new_password()
            people.set_password(name, password)
            print(f"demo: user {name:<16} {role:<16} password {password}", flush=True)
    print("demo: these passwords and the token are new each run and shown only here", flush=True)
