"""A throw-away PostgreSQL server from the Debian `postgresql` package, on loopback, for tests and local runs.

``PostgresServer.start_new(workdir)`` runs initdb once and starts ``postgres`` on a free 127.0.0.1 port; ``stop()``
and ``start()`` keep the data (outage tests). PostgreSQL refuses to run as root, so as root the server runs as the
``postgres`` system user with its data in a directory that user owns."""
from __future__ import annotations

import glob
import hashlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from streams.launcher import process
from streams.launcher.errors import LauncherError


def find_bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        raise LauncherError("PostgreSQL is not installed: `apt-get install postgresql` (scripts/bootstrap.sh test does)")
    return Path(found[-1]).parent


@dataclass
class PostgresServer:
    workdir: Path
    port: int
    proc: subprocess.Popen | None = None
    startup_seconds: float = 0.0

    @classmethod
    def start_new(cls, workdir: Path, port: int = 0, timeout: float = 60) -> "PostgresServer":
        server = cls(Path(workdir), port or process.free_port())
        server.start(timeout)
        return server

    @property
    def user(self) -> str | None:
        return "postgres" if os.geteuid() == 0 else None

    @property
    def data(self) -> Path:
        if self.user is None:
            return self.workdir / "pgdata"
        # the workdir may sit below a root-only directory (pytest's tmp): keep the data where postgres can reach it
        tag = hashlib.sha1(str(self.workdir.resolve()).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"jamsostek-pgdata-{tag}"

    @property
    def log(self) -> Path:
        return self.workdir / "postgres.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _own(self, path: Path) -> None:
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def start(self, timeout: float = 60) -> None:
        bindir = find_bindir()
        process.require_free(self.port, "PostgreSQL")
        self.workdir.mkdir(parents=True, exist_ok=True)
        sockets = self.data.with_name(self.data.name + "-sock")
        for d in (self.data, sockets):
            d.mkdir(mode=0o700, exist_ok=True)
            self._own(d)
        if not (self.data / "PG_VERSION").exists():
            done = subprocess.run([str(bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                                   "-E", "UTF8", "--no-locale", "--no-sync"],
                                  capture_output=True, text=True, user=self.user, timeout=120)
            if done.returncode != 0:
                raise LauncherError(f"initdb failed:\n{done.stdout}{done.stderr}")
        self.proc = process.spawn(
            [str(bindir / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(sockets),
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "full_page_writes=off",
             "-c", "max_connections=200"],
            self.log, user=self.user)
        self.startup_seconds = process.wait_until(self.accepts_queries, self.proc, f"PostgreSQL on port {self.port}",
                                                  self.log, timeout)

    def accepts_queries(self) -> bool:
        import psycopg
        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                             connect_timeout=2) as conn:
            return conn.execute("select 1").fetchone() == (1,)

    def create_database(self, name: str) -> str:
        """A fresh database (tests: one per test); returns its SQLAlchemy URL."""
        import psycopg
        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self, timeout: float = 30) -> None:
        process.stop(self.proc, timeout, sig=signal.SIGINT)  # SIGINT = "fast" shutdown: don't wait for clients
        self.proc = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.data, ignore_errors=True)
        shutil.rmtree(self.data.with_name(self.data.name + "-sock"), ignore_errors=True)
