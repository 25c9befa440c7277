# The one contract the kiosk and its host share: the protocol version, the
# operations a host may ask for with the arguments each takes, the states
# an operation reports, and the kinds of journal record. The firmware
# imports it; the bridge loads this same file (kiosk_host/contract.py), so
# the two can never disagree. Plain data, no imports: it runs under
# MicroPython and CPython alike. Wire formats: docs/protocol.md.

VERSION = 1            # "v" of every message
MAX_PAYLOAD = 1024     # largest command or ack a kiosk accepts, bytes
TEXT_MAX = 64          # longest id or text argument

# Operation states (AWS IoT Jobs' vocabulary): one terminal state each.
QUEUED = "queued"
IN_PROGRESS = "in_progress"
SUCCEEDED = "succeeded"
FAILED = "failed"
TIMED_OUT = "timed_out"
REJECTED = "rejected"
CANCELLED = "cancelled"
TERMINAL = (SUCCEEDED, FAILED, TIMED_OUT, REJECTED, CANCELLED)
STATES = (QUEUED, IN_PROGRESS) + TERMINAL

# Operations that move or unlock something: queued, run one at a time.
# name -> {argument: type}; ids and text arguments are 1..TEXT_MAX long.
PHYSICAL = {
    "pickup": {"order": str, "bin": int},
    "restock": {"order": str, "bin": int},
    "retrieve": {"order": str, "bin": int},
    "home": {},
    "jog": {"bins": int},
    "selftest": {},
    "unlock": {"door": str},
}
# Operations that finish at once, without moving anything.
IMMEDIATE = {
    "service_start": {"session": str},
    "service_end": {},
    "clear_excursion": {"excursion": str},
    "cancel": {"target": str},
    "verify_bin": {"bin": int, "present": bool},
    "scan_refused": {"scan": int, "why": str},
}
# Arguments an operation may also take. A pickup that answers a patient's
# scan names it (the seq of its `scan` record): the kiosk then releases
# only while that scan is still waiting for its answer.
OPTIONAL = {"pickup": {"scan": int}}
# Only inside a service session a host opened for a technician.
NEEDS_SERVICE = ("restock", "retrieve", "jog", "selftest", "unlock", "verify_bin")
# Operations that unlock a door: on flash from accepted to ended, so a
# reset in between is closed once with what it means for the medicine.
DOOR_CYCLE = ("pickup", "restock", "retrieve", "unlock")
# Door cycles that move an order in or out of a bin, each journaled as a
# record of its own name (K_PICKUP, K_RESTOCK, K_RETRIEVE) once the book
# changed.
STOCK_MOVES = ("pickup", "restock", "retrieve")
# Handled by the link itself, never by the controller. "ota" offers a
# firmware release: its id and version, the sha256 and size of its slot
# manifest, the bytes of the whole release, and how long the new firmware
# has to prove itself on trial; "ota_abort" drops a release being staged.
# docs/ota.md
LINK_OPS = {"resend": {"from": int, "to": int},
            "ota": {"release": str, "version": str, "manifest": str, "msize": int, "size": int,
                    "trial_s": int},
            "ota_abort": {"release": str}}
OTA_TOPIC = "ota"        # kiosk/<id>/ota: a release's chunks, host to kiosk
OTA_CHUNK = 1024         # data bytes in one chunk
# The steps of an update, each a K_OTA record ("ev").
OTA_STAGING = "staging"          # an offer taken: the release is being received
OTA_RESUMED = "resumed"          # staging goes on after a reset
OTA_REFUSED = "refused"          # an offer or a release refused ("why"), before any switch
OTA_STAGED = "staged"            # every file received and checked against the manifest
OTA_SWITCHING = "switching"      # idle: the kiosk restarts into the new firmware, on trial
OTA_TRIAL = "trial"              # the new firmware booted on trial
OTA_CONFIRMED = "confirmed"      # ... and proved itself: it is the firmware now
OTA_TRIAL_FAILED = "trial_failed"  # ... and was not healthy in time ("why")
OTA_ROLLED_BACK = "rolled_back"  # the previous firmware runs again ("why")
OTA_ABORTED = "aborted"          # the host dropped the release, or a new one replaced it
OTA_CURRENT = "current"          # the kiosk already runs that release
OTA_EVENTS = (OTA_STAGING, OTA_RESUMED, OTA_REFUSED, OTA_STAGED, OTA_SWITCHING, OTA_TRIAL,
              OTA_CONFIRMED, OTA_TRIAL_FAILED, OTA_ROLLED_BACK, OTA_ABORTED, OTA_CURRENT)


def op_args(op):
    """The argument table of a controller operation, or None."""
    spec = PHYSICAL.get(op)
    return IMMEDIATE.get(op) if spec is None else spec


# Why a host refuses a scanned code (scan_refused "why"). The first four
# are wrong codes: they count toward the scanner's local lockout.
SCAN_WRONG = ("unknown_code", "other_kiosk", "used", "expired")
SCAN_REASONS = SCAN_WRONG + ("replaced", "cancelled", "not_stocked", "not_released", "counselling",
                             "busy", "unavailable", "locked_out")
# Buttons a board may have, by name.
BUTTONS = ("call_pharmacist",)


# Journal record kinds ("k"). Every record the kiosk keeps is one of these.
K_BOOT = "boot"                # a boot: cause, firmware, board
K_OP = "op"                    # an operation's terminal state
K_REFUSED = "refused"          # a refused command, ack or request, with why
K_PICKUP = "pickup"            # an order left its bin through the pickup door
K_RESTOCK = "restock"          # an order was put into a bin
K_STOCK = "stock"              # a bin made uncertain by a reset, or verified
K_DOOR = "door"                # a door or bolt change, or a door alarm
K_MOTOR = "motor"              # a carousel motion began, ended or stopped
K_FAULT = "fault"              # a driver fault (motor, lock, sensor bus)
K_SENSOR = "sensor"            # a sensor faulted or recovered
K_TEMP = "temp"                # climate: warnings, excursions, days, MKT
K_SERVICE = "service"          # a service session started, ended or expired
K_SELFTEST = "selftest"        # a self-test's results
K_CLOCK = "clock"              # the clock stepped to the host's time
K_JOURNAL_OVERFLOW = "journal_overflow"  # unacknowledged records lost to rotation
K_RETRIEVE = "retrieve"        # an order was taken back out of its bin (return to stock)
K_SCAN = "scan"                # the code scanner: a code (its short hash), an answer, a lockout, a label
K_BUTTON = "button"            # a button at the kiosk was pressed (call a pharmacist)
K_OTA = "ota"                  # a firmware update's step (OTA_EVENTS)
K_JOURNAL_LOST = "journal_lost"  # unacknowledged records found unreadable (bad CRC)
K_STORAGE = "storage"          # the flash filled up, or has room again
KINDS = (K_BOOT, K_OP, K_REFUSED, K_PICKUP, K_RESTOCK, K_STOCK, K_DOOR, K_MOTOR, K_FAULT,
         K_SENSOR, K_TEMP, K_SERVICE, K_SELFTEST, K_CLOCK, K_JOURNAL_OVERFLOW,
         K_RETRIEVE, K_SCAN, K_BUTTON, K_OTA, K_JOURNAL_LOST, K_STORAGE)

# Refusals that say nothing about the command whose id they carry: the
# message was not authenticated (anyone can put any id in it), or it is a
# copy of a command already seen (or an old ack of another journal). A host
# never lets one of these change a command's outcome; the kiosk journals
# them within a budget, so no flood of them can push unacknowledged records
# off the flash.
COPY_REFUSALS = ("oversized", "bad_json", "bad_version", "bad_signature", "replayed",
                 "duplicate", "memory_lost", "wrong_journal")
# A refusal record that stands for many: {"why": COALESCED, "count": n,
# "reasons": {why: n}, "since": t}.
COALESCED = "coalesced"


# Floats have no canonical form across MicroPython and CPython (they print
# differently), so records and signed messages carry them as integer
# hundredths under a key that says so: a float field `x` becomes `x_centi`,
# a float inside a list its hundredths.
def centi(x):
    try:
        return int(round(x * 100))
    except (ValueError, OverflowError):  # nan, inf
        return None


def signable(v, inplace=False):
    """v with floats turned into hundredths and tuples into lists, ready
    for the canonical encoding. Nested containers are copied (they may be
    the controller's own); the top dict is changed in place if asked."""
    if isinstance(v, float):
        return centi(v)
    if isinstance(v, dict):
        d = v if inplace else {}
        for k in list(v):
            x = v[k]
            if isinstance(x, float):
                if inplace:
                    del d[k]
                d[str(k) + "_centi"] = centi(x)
            else:
                if inplace and not isinstance(k, str):
                    del d[k]
                d[str(k)] = signable(x) if isinstance(x, (dict, list, tuple)) else x
        return d
    if isinstance(v, (list, tuple)):
        return [signable(x) if isinstance(x, (float, dict, list, tuple)) else x for x in v]
    return v
