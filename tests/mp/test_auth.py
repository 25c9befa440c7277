# Signing on the kiosk must agree byte for byte with the host's
# (tests/vectors/canonical.json is produced and checked by the host side).
import json
import os
from kiosk.link import auth


def _vectors():
    with open(os.getenv("KIOSK_REPO") + "/tests/vectors/canonical.json") as f:
        return json.load(f)


def test_canonical_matches_host_vectors():
    for v in _vectors():
        assert auth.canonical(v["obj"]).decode() == v["canonical"], v["canonical"]


def test_signature_matches_host_vectors():
    import binascii
    for v in _vectors():
        key = binascii.unhexlify(v["key"])
        signed = auth.sign(key, dict(v["obj"]))
        assert signed["sig"] == v["sig"]
        assert auth.verify(key, signed)


def test_tampering_and_wrong_key_fail():
    key = b"k" * 32
    msg = auth.sign(key, {"op": "pickup", "args": {"bin": 3}, "id": "a"})
    assert auth.verify(key, msg)
    bad = dict(msg)
    bad["args"] = {"bin": 4}
    assert not auth.verify(key, bad)
    assert not auth.verify(b"x" * 32, msg)
    for sig in (None, 5, "", "00" * 31, msg["sig"][:-1] + "0" if msg["sig"][-1] != "0" else msg["sig"][:-1] + "1"):
        forged = dict(msg)
        forged["sig"] = sig
        assert not auth.verify(key, forged)
    assert not auth.verify(key, "not a dict")


def test_floats_and_deep_nesting_are_unsignable():
    key = b"k"
    assert not auth.verify(key, {"t": 21.5, "sig": "0" * 64})
    deep = {}
    cur = deep
    for _ in range(20):
        cur["a"] = {}
        cur = cur["a"]
    deep["sig"] = "0" * 64
    assert not auth.verify(key, deep)
    try:
        auth.sign(key, {"t": 1.5})
        assert False, "a float must not be signable"
    except auth.Unsignable:
        pass
