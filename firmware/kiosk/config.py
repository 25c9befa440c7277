# The kiosk's own configuration (config.json on flash): identity, keys,
# broker, board name and policies. Validated at boot with messages that name
# the field; secrets are kept out of every printout and report.
from kiosk.schema import check, read_file, SchemaError

PATH = "config.json"
SECRET_FIELDS = ("key", "password", "psk")
_MASK = "***"


class ConfigError(SchemaError):
    pass


DEFAULT_POLICIES = {
    "hold_pickups_on_excursion": False,
    "door_open_timeout_s": 60,      # the patient has this long to open the door
    "door_held_open_s": 120,        # alarm when the door stays open longer
    "relock_verify_s": 3,           # bolt must report engaged this soon after relock
    "sample_period_s": 60,          # temperature sampling period
    "service_session_max_s": 1800,  # an authorised service session ends by itself
    "command_max_age_s": 300,       # a command older than this is stale
    "telemetry_period_s": 60,
    "scan_answer_s": 10,            # a scanned code waits this long for the host's answer
    "scan_lockout_after": 5,        # wrong (or unanswered) codes in a row that lock the scanner
    "scan_lockout_s": 300,          # for this long
    "restock_label_check": True,    # a restock's package label must be scanned and match
    "label_scan_timeout_s": 120,    # the technician has this long to scan it
    "button_repeat_s": 10,          # a button's presses are journaled at most this often
    "journal_segment_bytes": 8192,  # the journal's flash budget: segments of this size ...
    "journal_segments": 8,          # ... this many of them (at least 2)
}

_TOP = {
    "kiosk_id": ("str", 1), "board": ("str", 1), "key": ("hex", 1),
    "broker": ("dict", 0), "wifi": ("dict", 0), "policies": ("dict", 0),
    "sensor_roms": ("dict", 0),
}
_BROKER = {
    "host": ("str", 1), "port": ("pos", 0), "tls": ("bool", 0), "ca": ("str", 0),
    "user": ("str", 0), "password": ("str", 0), "keepalive_s": ("pos", 0),
}
_WIFI = {"ssid": ("str", 1), "password": ("str", 0)}
_POLICIES = {
    "hold_pickups_on_excursion": ("bool", 0), "door_open_timeout_s": ("pos", 0),
    "door_held_open_s": ("pos", 0), "relock_verify_s": ("pos", 0),
    "sample_period_s": ("pos", 0), "service_session_max_s": ("pos", 0),
    "command_max_age_s": ("pos", 0), "telemetry_period_s": ("pos", 0),
    "scan_answer_s": ("pos", 0), "scan_lockout_after": ("pos", 0), "scan_lockout_s": ("pos", 0),
    "restock_label_check": ("bool", 0), "label_scan_timeout_s": ("pos", 0), "button_repeat_s": ("pos", 0),
    "journal_segment_bytes": ("pos", 0), "journal_segments": ("pos", 0),
}


def _id_ok(s):
    if not 0 < len(s) <= 32:
        return False
    for c in s:
        if not ("a" <= c <= "z" or "0" <= c <= "9" or c == "-"):
            return False
    return True


def validate(cfg, where=PATH):
    errors = []
    check(cfg, _TOP, where, errors)
    if isinstance(cfg, dict):
        for name, schema in (("broker", _BROKER), ("wifi", _WIFI), ("policies", _POLICIES)):
            if isinstance(cfg.get(name), dict):
                check(cfg[name], schema, "%s.%s" % (where, name), errors)
        kid = cfg.get("kiosk_id")
        if isinstance(kid, str) and kid and not _id_ok(kid):
            errors.append("%s.kiosk_id: use 1-32 characters a-z, 0-9 and '-'" % where)
        key = cfg.get("key")
        if isinstance(key, str) and len(key) < 32:
            errors.append("%s.key: must be at least 16 bytes (32 hex digits)" % where)
        roms = cfg.get("sensor_roms")
        if isinstance(roms, dict):
            for n, r in roms.items():
                if not isinstance(r, str) or len(r) != 16:
                    errors.append("%s.sensor_roms.%s: must be 16 hex digits" % (where, n))
    if errors:
        raise ConfigError("; ".join(errors))
    return cfg


class Config:
    """Validated configuration. Secrets are reachable only through
    attributes meant for them (key_bytes, broker_password)."""

    def __init__(self, data, where=PATH):
        validate(data, where)
        self._data = data
        self.kiosk_id = data["kiosk_id"]
        self.board = data["board"]
        pol = dict(DEFAULT_POLICIES)
        pol.update(data.get("policies") or {})
        self.policies = pol
        self.broker = data.get("broker") or {}
        self.wifi = data.get("wifi")
        self.sensor_roms = data.get("sensor_roms") or {}

    def key_bytes(self):
        import binascii
        return binascii.unhexlify(self._data["key"])

    def public(self):
        """The configuration with every secret masked: safe to print or
        report."""
        return mask(self._data)

    def __repr__(self):
        return "Config(%r)" % self.public()


def mask(obj):
    if isinstance(obj, dict):
        return {k: (_MASK if k in SECRET_FIELDS and obj[k] else mask(obj[k])) for k in obj}
    if isinstance(obj, list):
        return [mask(x) for x in obj]
    return obj


def load(path=PATH):
    return Config(read_file(path, ConfigError), path)


def save(data, path=PATH):
    """Validate, then replace the file atomically (a power cut leaves the old
    or the new file, never half of one)."""
    from kiosk import files
    validate(data)
    files.write_json(path, data)
