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
from .config import ConfigError, Keys
from .service import Bridge
from .store import Store, StoreError


def _hostport(text: str, parser: argparse.ArgumentParser) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        parser.error(f"--http takes HOST:PORT, not {text!r}")
    return host, int(port)


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


def _serve_http(app, host: str, port: int, on_ready=None) -> None:
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
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
    p.add_argument("--alerts", metavar="FILE",
                   help="alert rules and channels (TOML, docs/alerts.md); default: every alert shown, sent nowhere")
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args(argv)
    host, port = _hostport(a.http, p)
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
        rules = Rules.load(a.alerts, dashboard_url=f"http://{host}:{port}")
        store = Store(a.db)
        bridge = Bridge(a.broker, store, Keys(a.keys), share=a.share, credentials_file=a.broker_credentials,
                        command_ttl_s=a.command_ttl).start()
        bridge.alerter = Alerter(bridge, rules).start()
    except (ConfigError, StoreError) as e:
        print(f"kiosk-bridge: {e}", file=sys.stderr)
        return 2
    from .api import create_app

    print(f"kiosk-bridge: store {store.kind}, broker {bridge.broker['host']}:{bridge.broker['port']}, "
          f"API and dashboard on http://{host}:{port}/", flush=True)
    try:
        _serve_http(create_app(bridge), host, port)
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
        f"  1. Open {url} : the fleet, the most urgent kiosk first. Every kiosk starts empty.",
        f"  2. Open kiosk {first['id']}. In its Service panel start a service session and restock an order into",
        "     a bin. Be the technician in the Simulate panel: scan the package's label (the order id) when asked,",
        "     then open the service door and close it again. End the session.",
        "  3. Request a pickup of that order from that bin, and be the patient: open and close the pickup door.",
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
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args(argv)
    host, port = _hostport(a.http, p)
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
    from ..emulator.routes import sim_router
    from .api import create_app

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
        app = create_app(bridge, [sim_router(fleet)], title="Kiosk bridge (demo)")
        url = f"http://{host}:{port}/"
        _serve_http(app, host, port, on_ready=lambda: print(_banner(url, fleet.kiosks), flush=True))
    except (EmulatorError, RuntimeError, StoreError, ConfigError) as e:
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
