"""Host-side signing: the canonical encoding and HMAC agree with the
vectors the firmware is tested against, and anything tampered fails."""
import hashlib
import hmac
import json
from pathlib import Path

import pytest

from kiosk_host import protocol

VECTORS = json.loads((Path(__file__).parent / "vectors" / "canonical.json").read_text())


@pytest.mark.parametrize("vec", VECTORS, ids=lambda v: v["canonical"][:30])
def test_vectors(vec):
    key = bytes.fromhex(vec["key"])
    assert protocol.canonical(vec["obj"]).decode() == vec["canonical"]
    # The signature is plain HMAC-SHA256 over the canonical bytes.
    assert vec["sig"] == hmac.new(key, vec["canonical"].encode(), hashlib.sha256).hexdigest()
    assert protocol.verify(key, dict(vec["obj"], sig=vec["sig"]))


def test_canonical_is_order_independent_and_excludes_sig():
    a = {"b": 1, "a": [1, {"y": 2, "x": 1}], "sig": "ignored"}
    b = {"a": [1, {"x": 1, "y": 2}], "b": 1}
    assert protocol.canonical(a) == protocol.canonical(b) == b'{"a":[1,{"x":1,"y":2}],"b":1}'


def test_tampered_or_unsignable_is_rejected():
    key = b"k" * 32
    msg = protocol.sign(key, {"op": "pickup", "args": {"bin": 3}})
    assert protocol.verify(key, msg)
    assert not protocol.verify(key, {**msg, "args": {"bin": 4}})
    assert not protocol.verify(b"other", msg)
    assert not protocol.verify(key, {**msg, "sig": 5})
    assert not protocol.verify(key, {"t": 1.5, "sig": "0" * 64})
    with pytest.raises(protocol.Unsignable):
        protocol.canonical({"t": 1.5})


def test_text_without_a_utf8_form_or_a_non_hex_sig_is_refused_not_raised():
    # What a broken or hostile peer can put in JSON: a lone surrogate, a
    # signature that is not ASCII. verify() answers False; sign() refuses.
    key = b"k" * 32
    msg = protocol.sign(key, {"op": "pickup", "args": {"order": "rx-\U0001F48A"}})
    assert protocol.verify(key, msg)
    assert not protocol.verify(key, {**msg, "args": {"order": "rx-\ud83d"}})
    assert not protocol.verify(key, {**msg, "sig": "é" * 64})
    assert not protocol.verify(key, {**msg, "sig": "\udc80"})
    with pytest.raises(protocol.Unsignable):
        protocol.sign(key, {"order": "\ud800"})
