"""The bridge's configuration: where the broker is and how to log in to it,
and the per-kiosk keys. Read before the MQTT service starts, so a mistake
stops `kiosk-bridge serve` with a message that names it (ConfigError)."""

from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

log = logging.getLogger("kiosk_bridge")

KIOSK_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class ConfigError(Exception):
    pass


def broker_settings(url: str, credentials_file: str | None = None, env=os.environ) -> dict[str, Any]:
    """host, port, tls CA, user and password for a broker URL. Passwords come
    from a file (one line `user:password`, or the password alone) or from
    KIOSK_BRIDGE_MQTT_USER / KIOSK_BRIDGE_MQTT_PASSWORD, never from the
    command line, where any user of the machine can read them."""
    u = urlparse(url)
    if u.scheme not in ("mqtt", "mqtts"):
        raise ConfigError(f"broker URL must start with mqtt:// or mqtts://, not {url!r}")
    if u.password:
        raise ConfigError("put the broker password in a file (--broker-credentials) or in "
                          "KIOSK_BRIDGE_MQTT_PASSWORD, not in the URL")
    if not u.hostname:
        raise ConfigError(f"broker URL {url!r} names no host")
    try:
        port = u.port or (8883 if u.scheme == "mqtts" else 1883)
    except ValueError:
        raise ConfigError(f"broker URL {url!r} has a bad port") from None
    user = unquote(u.username) if u.username else env.get("KIOSK_BRIDGE_MQTT_USER")
    password = env.get("KIOSK_BRIDGE_MQTT_PASSWORD")
    if credentials_file:
        try:
            text = Path(credentials_file).read_text().strip()
        except OSError as e:
            raise ConfigError(f"cannot read broker credentials {credentials_file}: {e.strerror}") from None
        if ":" in text:
            user, password = text.split(":", 1)
        else:
            password = text
    ca = parse_qs(u.query).get("ca", [None])[0]
    if u.scheme == "mqtts" and ca and not Path(ca).is_file():
        raise ConfigError(f"broker CA file {ca} does not exist")
    return {"host": u.hostname, "port": port, "tls": u.scheme == "mqtts", "ca": ca, "user": user, "password": password}


SHARE_GROUP = re.compile(r"^[A-Za-z0-9_-]{22,64}$")


def read_share_group(path: str) -> str:
    """The bridges' shared-subscription group, a secret kept in a file.

    mosquitto's ACL never sees the `$share/GROUP/` prefix of a SUBSCRIBE, so
    any login that may read `kiosk/+/evt` through the group's filter, a
    kiosk's included (the broker then drops what the kiosk may not read),
    can join a group it can name and take part of the fleet's messages from
    the bridges. A random name of 128 bits or more that kiosks are never
    told closes that: it is as hard to guess as a password, and kiosks can
    neither read `$SYS` nor list subscriptions. So it is kept like a
    password: in a file no one else can read, never on the command line."""
    try:
        st = os.stat(path)
        text = Path(path).read_text().strip()
    except OSError as e:
        raise ConfigError(f"cannot read the share group {path}: {e.strerror}") from None
    if st.st_mode & 0o077:
        raise ConfigError(f"the share group {path} is readable by others (mode {st.st_mode & 0o777:o}): "
                          f"chmod 600 {path}")
    if not SHARE_GROUP.match(text):
        raise ConfigError(f"the share group in {path} must be 22 to 64 letters, digits, '-' or '_', random: "
                          "python3 -c 'import secrets; print(secrets.token_urlsafe(24))'")
    return text


class Keys:
    """Per-kiosk HMAC keys: <dir>/<kiosk id>.key, 64 hex digits (what
    `kiosk-bridge emulate` and `kioskctl provision` write). Files are read
    when first needed and again when they change, so a kiosk provisioned
    while the bridge runs is picked up."""

    def __init__(self, folder: str | os.PathLike[str]):
        self.dir = Path(folder)
        if not self.dir.is_dir():
            raise ConfigError(f"keys folder {self.dir} does not exist")
        self._cache: dict[str, tuple[float, bytes | None]] = {}
        self.lock = threading.Lock()

    def get(self, kiosk: str) -> bytes | None:
        if not KIOSK_ID.match(kiosk):
            return None
        path = self.dir / f"{kiosk}.key"
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return None
        with self.lock:
            hit = self._cache.get(kiosk)
            if hit and hit[0] == mtime:
                return hit[1]
            try:
                text = path.read_text().strip()
                key = bytes.fromhex(text) if len(text) >= 32 else None
            except (OSError, ValueError):
                key = None
            if key is None:
                log.error("key file %s is not hex (at least 16 bytes): kiosk %s ignored", path, kiosk)
            self._cache[kiosk] = (mtime, key)
            return key

    def ids(self) -> list[str]:
        return sorted(p.stem for p in self.dir.glob("*.key") if KIOSK_ID.match(p.stem))
