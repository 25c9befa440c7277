# Message authentication shared by kiosk and host: HMAC-SHA256 under the
# kiosk's key over a canonical encoding (keys sorted, no spaces, integers
# only: floats print differently on MicroPython and CPython, so signed
# messages carry centi-units). host_tools/kiosk_host/protocol.py implements
# the same rules; tests/vectors/canonical.json keeps both honest.
import hashlib
import binascii
import io

_BLOCK = 64


def hmac_sha256(key, msg):
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key + bytes(_BLOCK - len(key))
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    inner.update(msg)
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
    outer.update(inner.digest())
    return outer.digest()


class Unsignable(ValueError):
    pass


def _str(s, out):
    w = out.write
    w('"')
    start = 0
    for i, ch in enumerate(s):
        if ch == '"' or ch == "\\" or ch < " ":
            w(s[start:i])
            w("\\u%04x" % ord(ch))
            start = i + 1
    w(s[start:])
    w('"')


def _enc(v, out, depth):
    if depth > 8:
        raise Unsignable("nested too deep")
    w = out.write
    if v is None:
        w("null")
    elif v is True:
        w("true")
    elif v is False:
        w("false")
    elif isinstance(v, int):
        w(str(v))
    elif isinstance(v, str):
        _str(v, out)
    elif isinstance(v, (list, tuple)):
        w("[")
        for i, x in enumerate(v):
            if i:
                w(",")
            _enc(x, out, depth + 1)
        w("]")
    elif isinstance(v, dict):
        w("{")
        first = True
        for k in sorted(v):
            if not isinstance(k, str):
                raise Unsignable("non-string key")
            if not first:
                w(",")
            first = False
            _str(k, out)
            w(":")
            _enc(v[k], out, depth + 1)
        w("}")
    else:
        raise Unsignable("cannot sign a %s" % type(v).__name__)


def canonical(obj):
    """The bytes that are signed: obj without its "sig" field. Written into
    one growing buffer, not a list of pieces: a birth message is large."""
    out = io.StringIO()
    if isinstance(obj, dict) and "sig" in obj:
        obj = {k: obj[k] for k in obj if k != "sig"}
    _enc(obj, out, 0)
    return out.getvalue().encode()


def sign(key, obj):
    """Add "sig" (hex HMAC) to obj and return it."""
    obj["sig"] = binascii.hexlify(hmac_sha256(key, canonical(obj))).decode()
    return obj


def verify(key, obj):
    """True when obj carries a valid "sig" for key. Compares in constant
    time so a forger learns nothing from timing."""
    sig = obj.get("sig") if isinstance(obj, dict) else None
    if not isinstance(sig, str) or len(sig) != 64:
        return False
    try:
        want = binascii.hexlify(hmac_sha256(key, canonical(obj))).decode()
    except Unsignable:
        return False
    diff = 0
    for a, b in zip(want, sig):
        diff |= ord(a) ^ ord(b)
    return diff == 0
