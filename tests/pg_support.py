"""A throwaway PostgreSQL cluster for tests: initdb into a temp folder, the
server on a free loopback port, trust authentication, gone afterwards. Run as
the `postgres` user when the tests run as root (PostgreSQL refuses root)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import time
from pathlib import Path

from link_support import free_port


def pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError("the PostgreSQL store tests need PostgreSQL: apt-get install postgresql")
    return Path(found[-1]).parent


class Postgres:
    def __init__(self, workdir: Path):
        self.bin = pg_bin()
        self.dir = Path(workdir)
        self.data = self.dir / "data"
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> "Postgres":
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.as_user:
            shutil.chown(self.dir, "postgres", "postgres")
            os.chmod(self.dir, 0o700)
            # the folder must be reachable by postgres through its parents
            p = self.dir.parent
            while p != p.parent:
                os.chmod(p, os.stat(p).st_mode | 0o011)
                p = p.parent
        subprocess.run(self.as_user + [str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                                       "--auth=trust", "-E", "UTF8", "--no-sync"],
                       check=True, capture_output=True)
        log = open(self.dir / "postgres.log", "ab")
        self.proc = subprocess.Popen(self.as_user + [str(self.bin / "postgres"), "-D", str(self.data), "-p",
                                                     str(self.port), "-h", "127.0.0.1", "-k", str(self.dir),
                                                     "-c", "fsync=off"],
                                     stdout=log, stderr=log)
        end = time.monotonic() + 30
        while subprocess.run([str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                             capture_output=True).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError("PostgreSQL did not start: " + (self.dir / "postgres.log").read_text()[-2000:])
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        p, self.proc = self.proc, None
        if p and p.poll() is None:
            p.terminate()
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
