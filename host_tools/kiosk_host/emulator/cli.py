"""`kiosk-bridge emulate` (and `python -m kiosk_host.emulator`): start a
fleet, print each kiosk's console, serve the control routes when asked, and
stop every kiosk safely on Ctrl-C or SIGTERM."""


import argparse
import signal
import sys
import threading

from . import EmulatorError
from .fleet import Fleet


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="kiosk-bridge emulate",
                                description="Run emulated kiosks (the real firmware in MicroPython) against a broker.")
    p.add_argument("--broker", required=True, help="mqtt://[user:pass@]host:port (mqtts://...?ca=FILE for TLS)")
    p.add_argument("--count", type=int, default=3, help="how many kiosks (default 3)")
    p.add_argument("--state-dir", required=True, help="one folder per kiosk: its flash, console pty link, log")
    p.add_argument("--keys", required=True, help="per-kiosk key files <id>.key (created when absent)")
    p.add_argument("--control", help="HOST:PORT to serve the /api/sim control routes on")
    p.add_argument("--board", default="emulator", help="board definition (boards/NAME.json)")
    p.add_argument("--id-prefix", default="kiosk-", help="kiosk ids are PREFIX001, PREFIX002, ...")
    args = p.parse_args(argv)
    if args.control and ":" not in args.control:
        p.error("--control takes HOST:PORT")
    try:
        fleet = Fleet(args.broker, args.count, args.state_dir, args.keys, board=args.board,
                      id_prefix=args.id_prefix).start()
    except EmulatorError as e:
        print(f"emulate: {e}", file=sys.stderr)
        return 2
    for k in fleet.kiosks:
        print(f"{k['id']}  pty {k['pty']}  (link {k['tty']})  flash {k['flash']}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    try:
        if args.control:
            import uvicorn
            from fastapi import FastAPI

            from .routes import sim_router

            host, port = args.control.rsplit(":", 1)
            app = FastAPI(title="Kiosk emulator")
            app.include_router(sim_router(fleet))
            print(f"control API on http://{host}:{port}/api/sim", flush=True)
            server = uvicorn.Server(uvicorn.Config(app, host=host, port=int(port), log_level="warning"))
            signal.signal(signal.SIGTERM, lambda *a: setattr(server, "should_exit", True))
            server.run()
        else:
            while not stop.wait(3600):
                pass
    except KeyboardInterrupt:
        pass
    finally:
        fleet.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
