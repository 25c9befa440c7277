"""`kiosk-bridge serve --share-file`: the bridges' shared-subscription
group is a secret (tests/test_locked_broker.py shows why: a kiosk's login
joins any group it can name). serve refuses a group file others can read,
a name too short or with other characters than a random one has, and a
group given both ways; nothing connects before."""

from __future__ import annotations

import subprocess

from bridge_support import VENV_BIN
from link_support import free_port


def _serve(tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV_BIN / "kiosk-bridge"), "serve", "--broker", f"mqtt://127.0.0.1:{free_port()}",
                           "--db", f"sqlite:///{tmp_path / 'b.sqlite3'}", "--keys", str(tmp_path / "keys"),
                           "--http", f"127.0.0.1:{free_port()}", *args],
                          capture_output=True, text=True, timeout=60)


def test_serve_keeps_the_share_group_a_secret(tmp_path):
    group = tmp_path / "share-group"
    group.write_text("Zq3v0Lr1_kX9-Yb2Wc7Nd4Pf5Ms\n")
    group.chmod(0o644)
    r = _serve(tmp_path, "--share-file", str(group))
    assert r.returncode == 2 and "readable by others (mode 644): chmod 600" in r.stderr, r.stderr
    for bad in ("bridges", "a/b+c#d-" * 4, ""):
        group.write_text(bad + "\n")
        group.chmod(0o600)
        r = _serve(tmp_path, "--share-file", str(group))
        assert r.returncode == 2 and "must be 22 to 64 letters" in r.stderr, (bad, r.stderr)
    r = _serve(tmp_path, "--share-file", str(tmp_path / "none"))
    assert r.returncode == 2 and "cannot read the share group" in r.stderr
    r = _serve(tmp_path, "--share-file", str(group), "--share", "bridges")
    assert r.returncode == 2 and "not allowed with argument" in r.stderr
    assert not (tmp_path / "b.sqlite3").exists(), "nothing is opened before the configuration is good"
