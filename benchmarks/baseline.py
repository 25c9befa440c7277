"""The firmware as an earlier commit had it, for before/after figures.

A benchmark that shows what a change bought runs the same measurement on
the current build and on the tree of the commit before the change: the
commit is found by a phrase of its message (hashes change when a branch is
rebased, messages do not), its firmware/ is taken with `git archive` and
compiled with the current build tool into a scratch folder. The simulated
board (build/sim) and the harnesses are always the current ones.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

from kiosk_host import build, paths


def commit_of(phrase: str) -> str:
    """The newest commit whose message holds phrase (its full hash)."""
    out = subprocess.run(["git", "log", "--format=%H", "-1", "--fixed-strings", f"--grep={phrase}"],
                         cwd=paths.REPO_ROOT, capture_output=True, text=True, check=True).stdout.strip()
    if not out:
        raise SystemExit(f"no commit says {phrase!r}: the baseline for this figure is gone from history")
    return out


def firmware_at(commit: str, scratch: Path) -> Path:
    """Build the firmware of commit into scratch/firmware-<hash>; returns the tree."""
    src = scratch / f"src-{commit[:10]}"
    out = scratch / f"firmware-{commit[:10]}"
    if out.is_dir():
        return out
    data = subprocess.run(["git", "archive", "--format=tar", commit, "firmware"],
                          cwd=paths.REPO_ROOT, capture_output=True, check=True).stdout
    src.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(src, filter="data")
    build.build(out_dir=out, firmware_dir=src / "firmware")
    return out
