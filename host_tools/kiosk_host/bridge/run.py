"""`kiosk-bridge serve` and `kiosk-bridge demo`."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import tempfile
import threading
from pathlib import Path

from .config import ConfigError, Keys
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
    p.add_argument("--share", metavar="GROUP",
                   help="share the work with other bridges through MQTT v5 shared subscriptions ($share/GROUP/...)")
    p.add_argument("--command-ttl", type=int, default=60, help="seconds a command stays valid (default 60, at most 300)")
    _web_options(p)
    p.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate chain (and --tls-key)")
    p.add_argument("--tls-key", metavar="PEM", help="the certificate's private key")
    p.add_argument("--secure-cookies", action="store_true",
                   help="clients reach the bridge over HTTPS through a TLS-terminating proxy: session cookies "
                        "only over HTTPS (implied by --tls-cert)")
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args(argv)
    host, port = _hostport(a.http, p)
    hosts = allowed_hosts(host, a.allowed_host, p)
    if bool(a.tls_cert) != bool(a.tls_key):
        p.error("--tls-cert and --tls-key go together")
    if not 5 <= a.command_ttl <= 300:
        p.error("--command-ttl must be between 5 and 300 seconds (the kiosk refuses longer)")
    _logging(a.verbose)
    from urllib.parse import urlparse

    if "://" in a.db and urlparse(a.db).password:
        print("kiosk-bridge: put the database password in PGPASSWORD or ~/.pgpass, not in --db", file=sys.stderr)
        return 2
    try:
        store = Store(a.db)
        bridge = Bridge(a.broker, store, Keys(a.keys), share=a.share, credentials_file=a.broker_credentials,
                        command_ttl_s=a.command_ttl).start()
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
        bridge.stop()
        store.close()
    return 0


def demo_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="kiosk-bridge demo",
                                description="A demo fleet: a local broker, the bridge, emulated kiosks and the dashboard.")
    p.add_argument("--http", default="127.0.0.1:8080", help="HOST:PORT for the API, dashboard and /api/sim")
    p.add_argument("--count", type=int, default=3, help="emulated kiosks (default 3)")
    p.add_argument("--state-dir", help="where the kiosks' flash, keys and the store live (default: a temp folder)")
    p.add_argument("--broker", choices=("auto", "mosquitto", "amqtt"), default="auto")
    _web_options(p)
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args(argv)
    host, port = _hostport(a.http, p)
    hosts = allowed_hosts(host, a.allowed_host, p, demo=True)
    _logging(a.verbose)

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
        for k in fleet.kiosks:
            print(f"demo: kiosk {k['id']}  console {k['pty']}", flush=True)
        people = People(store)
        demo_people(people, [k["id"] for k in fleet.kiosks])
        app = demo_app(bridge, fleet, people, Web(hosts))
        url = f"http://{hosts[0] if ':' not in hosts[0] else f'[{hosts[0]}]'}:{port}/"
        _serve_http(app, host, port, on_ready=lambda: print(
            f"demo: dashboard {url}  (API docs {url}docs)\ndemo: Ctrl-C stops everything", flush=True))
    except (EmulatorError, RuntimeError, StoreError, ConfigError, PeopleError) as e:
        print(f"demo: {e}", file=sys.stderr)
        return 2
    finally:
        print("demo: stopping", file=sys.stderr, flush=True)
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
