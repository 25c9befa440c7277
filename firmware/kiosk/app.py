# Boot: bring the kiosk up in a safe order. Pins are inputs after reset (the
# lock drivers' pull-downs keep coils off), so a bad config or board file
# leaves the hardware safe and the REPL free for the field team. The
# watchdog starts last, once nothing that can fail at boot is left: a kiosk
# that cannot start stays at the REPL instead of resetting every few
# seconds.
import asyncio
import gc
import sys
from kiosk.version import VERSION
from kiosk.contract import K_BOOT, K_OP, K_TEMP

kiosk = None   # the running App, for the REPL (kiosk.service.debug uses it)


class App:
    def __init__(self, cfg_path="config.json"):
        from kiosk import config
        from kiosk.hw import board as boardmod, hal
        from kiosk.core import journal, jobs, climate
        from kiosk.hw import stepper, lock, sensors, scanner, button
        from kiosk.core.controller import Controller
        from kiosk.core.stock import Stock
        self.ended = None   # why the run ended: "ctrl-c", or the exception (bootsel reads it)
        self.cfg = config.load(cfg_path)
        self.board = boardmod.load("boards/%s.json" % self.cfg.board)
        b = self.board
        # Safe state first: drivers de-energise locks and disable motors as
        # they are built, before anything else can act.
        self.locks = {}
        held = self.cfg.policies["door_held_open_s"] * 1000
        for c in b["locks"]:
            self.locks[c["name"]] = lock.from_board(b, c, held_open_ms=held)
        self.carousels = [stepper.from_board(b, c) for c in b["carousels"]]
        from kiosk import clock
        pol = self.cfg.policies
        self.journal = journal.Journal(segment_bytes=pol["journal_segment_bytes"],
                                       max_segments=max(2, pol["journal_segments"]),
                                       clock=clock.now)   # host-corrected time
        self.journal.append(K_BOOT, {"cause": hal.reset_cause(), "fw": VERSION, "board": b["board"]})
        # Close what a reset cut short, once (the journal is checked first):
        # the stock book on flash first, then the records, and only then is
        # the operation forgotten. A cut at any instant of this leaves the
        # next boot to finish it, with nothing counted twice.
        gone = jobs.interrupted(self.journal)
        book = Stock()
        closing = [(g, book.settle(g)) for g in gone]
        for g, records in closing:
            for kind, fields in records:
                self.journal.append(kind, fields)
            rec = dict(g)
            rec["op"] = rec.pop("kind")
            rec.pop("recorded", None)
            self.journal.append(K_OP, rec)
        jobs.forget()
        self.sensors = sensors.from_board(b, roms=self.cfg.sensor_roms)
        self.climate = climate.Climate(self.sensors.names(), self.cfg.policies, boot=self.journal.boot)
        if self.climate.load(climate.PATH) == "corrupt":
            self.journal.append(K_TEMP, {"ev": "history_lost", "why": str(self.climate.load_error)})
        self.wdt_ms = min(b["wdt_max_ms"], 8000)
        self.wdt = None
        self.ctl = Controller(b, self.cfg, self.journal, self.carousels, self.locks,
                              self.sensors, self.climate, None, self.wdt_ms,
                              scanner=scanner.from_board(b), buttons=button.from_board(b))
        self.link = self.ota = None
        try:
            from kiosk.link.session import Link
        except ImportError:  # a port without umqtt: the kiosk runs offline
            return
        self.link = Link(self.cfg, self.journal, self.ctl, VERSION, self.board["board"])
        from kiosk.link.ota import Updater   # firmware updates over the link (docs/ota.md)
        self.ota = Updater(self.link, self.ctl, self.journal, VERSION)
        self.link.attach = self.ctl.scans.reveal   # a scanned code's text, sent once in its event

    def start(self):
        """Start the watchdog, then every task under the controller's
        supervisor (the link adds its own)."""
        from kiosk.hw import hal
        if self.wdt is None:
            self.wdt = hal.watchdog(self.wdt_ms)
        self.ctl.start(self.wdt)
        if self.link:
            self.link.start(self.ctl.supervisor)
            self.ota.start(self.ctl.supervisor)

    async def stop(self):
        from kiosk.hw import hal
        await self.ctl.stop()
        if self.link:
            self.link.stop()
        self.journal.flush()
        if self.wdt is not None:
            hal.feed_while_idle(self.wdt)


async def _run(app):
    app.start()
    while True:
        await asyncio.sleep(3600)


def _safe_outputs(cfg_path):
    """After a boot that stopped on the config: when the board file the
    config names is itself valid, drive its locks and motors to their safe
    state rather than rely on the wiring's resistors alone. A broken board
    file names no pin that can be trusted, so nothing is driven then."""
    from kiosk.hw import board as boardmod, lock, stepper
    from kiosk.schema import read_file
    try:
        b = boardmod.load("boards/%s.json" % read_file(cfg_path)["board"])
        for c in b["locks"]:
            lock.from_board(b, c)
        for c in b["carousels"]:
            stepper.from_board(b, c)
    except Exception:
        pass


def main(cfg_path="config.json"):
    """Boot the kiosk and run until Ctrl-C, which leaves the hardware safe."""
    global kiosk
    try:
        kiosk = App(cfg_path)
    except Exception as e:
        print("kiosk: not started:", e)
        from kiosk import config
        if isinstance(e, config.ConfigError):
            _safe_outputs(cfg_path)
        return None
    gc.collect()
    try:
        asyncio.run(_run(kiosk))
    except KeyboardInterrupt:
        kiosk.ended = "ctrl-c"
        print("kiosk: stopping (Ctrl-C): locks de-energised, motors disabled")
    except Exception as e:
        kiosk.ended = "%s: %s" % (type(e).__name__, e)
        sys.print_exception(e)
    finally:
        asyncio.run(kiosk.stop())
        asyncio.new_event_loop()
    return kiosk
