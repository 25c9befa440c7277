# The code scanner's side of the controller. A scanned pickup code becomes
# a journaled `scan` record holding only a short hash of its text; the
# text itself waits in RAM, for the link to send once inside that record's
# signed event, until the host answers: a pickup naming the scan, or
# scan_refused. Wrong codes in a row (and codes the host never answered)
# lock the scanner out for a while on the kiosk's own count, kept on flash,
# so neither a slow or hostile host nor a power cycle changes how fast codes
# can be tried. One code is checked at a time. In a service session the
# scanner reads package labels instead, for a restock's label check.
import time
import binascii
import hashlib
from kiosk import files
from kiosk.contract import K_SCAN, SCAN_WRONG
from kiosk.core.jobs import Refused

PATH = "scans.json"


def short_hash(text):
    """8 hex digits of the text's SHA-256: enough to tie a record to a code
    the host issued, far too few to recover the code from."""
    return binascii.hexlify(hashlib.sha256(text.encode()).digest()[:4]).decode()


class Scans:
    def __init__(self, policies, event, path=PATH):
        """event(kind, fields) journals and returns the record's seq."""
        self.answer_ms = policies["scan_answer_s"] * 1000
        self.lock_after = policies["scan_lockout_after"]
        self.lock_ms = policies["scan_lockout_s"] * 1000
        self._event = event
        self.path = path
        saved = files.read_json(path, {})
        fails = saved.get("fails") if isinstance(saved, dict) else 0
        self.fails = fails if isinstance(fails, int) and fails > 0 else 0
        self.pending = None         # [seq, text, ticks] of the code waiting for its answer
        self.locked_until = None    # ticks the lockout ends, while locked out
        self.label = None           # (text, ticks) of the last label read in a service session
        self.codes = 0              # codes sent to the host since boot
        self.ignored = 0            # codes read during the current lockout
        self.busy = 0               # codes read while another waited for its answer
        if isinstance(saved, dict) and saved.get("locked"):
            # A reset does not end a lockout: it starts again, in full.
            self._lock(time.ticks_ms(), True)

    # -- what the scanner reads ----------------------------------------------
    def read(self, text, service, now):
        """One line from the scanner. Returns the seq of its scan record, or
        None when it was a label, or dropped (locked out, one waiting)."""
        if service:
            self.label = (text, now)
            return None
        if self.locked_until is not None:
            self.ignored += 1
            return None
        if self.pending is not None:
            self.busy += 1
            return None
        seq = self._event(K_SCAN, {"ev": "code", "h": short_hash(text)})
        self.pending = [seq, text, now]
        self.codes += 1
        return seq

    def reveal(self, seq):
        """For the link, about to publish record seq for the first time:
        the text of the scan it records while that scan still waits for its
        answer, else None. The link attaches it only to a record's first
        publish, never a replay, so it reaches the host once."""
        p = self.pending
        if p is not None and p[0] == seq:
            return {"text": p[1]}
        return None

    # -- the host's answers ----------------------------------------------------
    def _waiting(self, seq):
        p = self.pending
        if p is None or p[0] != seq:
            raise Refused("scan_not_pending", "that scan is no longer waiting for an answer")
        self.pending = None

    def claim(self, seq):
        """A pickup answers scan seq: accepted only while that scan waits
        (a late answer must not open a door for someone who left). A right
        code clears the count of wrong ones."""
        self._waiting(seq)
        if self.fails:
            self.fails = 0
            self._save()

    def refused(self, seq, why, now):
        """The host refused scan seq's code; a wrong code counts."""
        self._waiting(seq)
        rec = {"ev": "refused", "scan": seq, "why": why}
        if why in SCAN_WRONG:
            self._fail(now, rec)
        else:
            self._event(K_SCAN, rec)

    # -- time --------------------------------------------------------------------
    def tick(self, now):
        """Every few tens of ms: an unanswered code counts as a wrong one
        once scan_answer_s passed; a lockout ends when its time is up."""
        p = self.pending
        if p is not None and time.ticks_diff(now, p[2]) >= self.answer_ms:
            self.pending = None
            self._fail(now, {"ev": "no_answer", "scan": p[0]})
        if self.locked_until is not None and time.ticks_diff(now, self.locked_until) >= 0:
            self.locked_until = None
            self.fails = 0
            self._save()
            self._event(K_SCAN, {"ev": "lockout_end", "ignored": self.ignored})
            self.ignored = 0

    def _fail(self, now, rec):
        self.fails += 1
        rec["fails"] = self.fails
        locks = self.fails >= self.lock_after
        self._save(locks)         # on flash before it is told: a reset keeps the count
        self._event(K_SCAN, rec)
        if locks:
            self._lock(now)

    def _lock(self, now, resumed=False):
        self.locked_until = time.ticks_add(now, self.lock_ms)
        self.ignored = 0
        f = {"ev": "lockout", "fails": self.fails, "for_s": self.lock_ms // 1000}
        if resumed:
            f["resumed"] = True
        self._event(K_SCAN, f)

    def _save(self, locked=None):
        if locked is None:
            locked = self.locked_until is not None
        files.write_json(self.path, {"fails": self.fails, "locked": locked})

    # -- labels --------------------------------------------------------------------
    def take_label(self, since):
        """The label read in a service session since ticks `since`, once."""
        lb = self.label
        if lb is not None and time.ticks_diff(lb[1], since) >= 0:
            self.label = None
            return lb[0]
        return None

    # -- reporting -------------------------------------------------------------------
    def locked_s(self, now=None):
        if self.locked_until is None:
            return 0
        now = time.ticks_ms() if now is None else now
        return max(0, time.ticks_diff(self.locked_until, now) + 999) // 1000

    def state(self):
        return {"locked_s": self.locked_s(), "fails": self.fails, "waiting": self.pending is not None,
                "codes": self.codes, "ignored": self.ignored, "busy": self.busy}
