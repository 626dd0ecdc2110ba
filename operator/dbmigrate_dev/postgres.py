"""A throwaway PostgreSQL server from Debian's packages, on a free loopback port.

PostgreSQL refuses to run as root, so when we are root the data directory is owned by the
`postgres` system user (created by the Debian package) and the server runs as that user.
Used by the pytest fixtures and by the demo (`python -m dbmigrate_dev.postgres up DIR`).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

SUPERUSER = "postgres"
PASSWORD = "dbmigrate-local-only"  # noqa: S105 - loopback-only throwaway server


def find_pg_bin() -> Path:
    """The newest installed PostgreSQL server binaries (Debian: /usr/lib/postgresql/N/bin)."""
    override = os.environ.get("DBMIGRATE_PG_BIN")
    if override:
        return Path(override)
    root = Path("/usr/lib/postgresql")
    versions = sorted(
        (p for p in root.glob("*/bin") if (p / "postgres").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not versions:
        found = shutil.which("pg_ctl")
        if found:
            return Path(found).resolve().parent
        raise RuntimeError(
            "PostgreSQL server binaries not found: apt-get install postgresql-15 (make test does)"
        )
    return versions[-1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_as() -> tuple[int, int] | None:
    if os.geteuid() != 0:
        return None
    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "postgres"], check=True, capture_output=True
        )
        pw = pwd.getpwnam("postgres")
    return pw.pw_uid, pw.pw_gid


def _demote(ids: tuple[int, int] | None):  # type: ignore[no-untyped-def]
    if ids is None:
        return None

    def set_ids() -> None:
        os.setgid(ids[1])
        os.setuid(ids[0])

    return set_ids


@dataclass
class PostgresServer:
    datadir: Path
    port: int
    host: str = "127.0.0.1"
    pg_bin: Path | None = None
    # More addresses to listen on, and the networks (CIDR) allowed to log in from them with the
    # password: what pods of a kind cluster need to reach a database on the host.
    listen: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()

    def dsn(self, dbname: str = "postgres", host: str | None = None) -> str:
        """A DSN for `dbname`, through `host` (one of `listen`) or the loopback address."""
        return (
            f"postgresql://{SUPERUSER}:{PASSWORD}@{host or self.host}:{self.port}/{dbname}"
            "?connect_timeout=5"
        )

    # --- lifecycle -------------------------------------------------------------------------

    def init(self) -> None:
        pg_bin = self.pg_bin or find_pg_bin()
        ids = _run_as()
        self.datadir.mkdir(parents=True, exist_ok=True)
        if ids:
            # The server's user must be able to reach its data directory.
            for parent in [self.datadir, *self.datadir.parents]:
                if parent == Path("/"):
                    break
                mode = parent.stat().st_mode
                if not mode & 0o001:
                    with contextlib.suppress(PermissionError):
                        os.chmod(parent, mode | 0o001)
            os.chown(self.datadir, *ids)
        os.chmod(self.datadir, 0o700)
        if (self.datadir / "PG_VERSION").exists():
            return
        pwfile = self.datadir.parent / f".{self.datadir.name}.pw"
        pwfile.write_text(PASSWORD)
        if ids:
            os.chown(pwfile, *ids)
        try:
            subprocess.run(
                [
                    str(pg_bin / "initdb"),
                    "-D",
                    str(self.datadir),
                    "-U",
                    SUPERUSER,
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
                check=True,
                capture_output=True,
                preexec_fn=_demote(ids),
            )
        finally:
            pwfile.unlink(missing_ok=True)
        conf = self.datadir / "postgresql.conf"
        with conf.open("a") as f:
            f.write(
                "\n# dbmigrate test server\n"
                f"listen_addresses = '{','.join(('127.0.0.1', *self.listen))}'\n"
                f"unix_socket_directories = '{self.datadir}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "max_connections = 200\nshared_buffers = 256MB\n"
                "shared_preload_libraries = 'pg_stat_statements'\n"
                "max_wal_size = 2GB\n"
                "log_min_messages = warning\n"
            )
        with (self.datadir / "pg_hba.conf").open("a") as f:
            for network in self.allow:
                f.write(f"host all all {network} scram-sha-256\n")

    def start(self) -> None:
        pg_bin = self.pg_bin or find_pg_bin()
        ids = _run_as()
        log = self.datadir / "server.log"
        subprocess.run(
            [
                str(pg_bin / "pg_ctl"),
                "-D",
                str(self.datadir),
                "-l",
                str(log),
                "-o",
                f"-p {self.port}",
                "-w",
                "-t",
                "60",
                "start",
            ],
            check=True,
            capture_output=True,
            preexec_fn=_demote(ids),
        )
        self.wait_ready()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), timeout=1),
            ):
                return
            time.sleep(0.1)
        raise RuntimeError(f"PostgreSQL did not start on port {self.port}")

    def stop(self) -> None:
        pidfile = self.datadir / "postmaster.pid"
        if not pidfile.exists():
            return
        pid = int(pidfile.read_text().splitlines()[0])
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)  # fast shutdown
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and pidfile.exists():
            time.sleep(0.1)

    # --- helpers ---------------------------------------------------------------------------

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main(argv: list[str]) -> int:
    """`up DIR [PORT]` starts (or reuses) a server and prints its DSN; `down DIR` stops it."""
    if len(argv) < 2 or argv[0] not in ("up", "down"):
        print("usage: python -m dbmigrate_dev.postgres up|down DIR [PORT]", file=sys.stderr)
        return 2
    datadir = Path(argv[1]).absolute() / "pgdata"
    portfile = Path(argv[1]).absolute() / "port"
    if argv[0] == "down":
        if portfile.exists():
            PostgresServer(datadir, int(portfile.read_text())).stop()
        return 0
    port = (
        int(argv[2])
        if len(argv) > 2
        else (int(portfile.read_text()) if portfile.exists() else free_port())
    )
    server = PostgresServer(datadir, port)
    server.init()
    if not (datadir / "postmaster.pid").exists():
        server.start()
    portfile.write_text(str(port))
    print(server.dsn())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
