"""A PgBouncer from Debian's packages in front of a test PostgreSQL, on a free loopback port.

The pooling mode is the point: with `pool_mode = transaction` a client's consecutive
transactions may run on different server processes, which is what the operator must notice
(its migration lock is session-level). PgBouncer refuses to run as root, so as root it runs as
the `postgres` system user, like the test server.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from dbmigrate_dev.postgres import PASSWORD, SUPERUSER, free_port


def find_pgbouncer() -> str:
    found = shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
    )
    if found is None:
        raise RuntimeError("pgbouncer not found: apt-get install pgbouncer (make test does)")
    return found


@dataclass
class PgBouncer:
    workdir: Path
    server_port: int
    pool_mode: str = "transaction"
    port: int = 0
    host: str = "127.0.0.1"

    def dsn(self, dbname: str) -> str:
        return f"postgresql://{SUPERUSER}:{PASSWORD}@{self.host}:{self.port}/{dbname}"

    def start(self) -> None:
        self.port = self.port or free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "userlist.txt").write_text(f'"{SUPERUSER}" "{PASSWORD}"\n')
        (self.workdir / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host=127.0.0.1 port={self.server_port}\n"
            "[pgbouncer]\n"
            f"listen_addr = {self.host}\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = plain\n"
            f"auth_file = {self.workdir / 'userlist.txt'}\n"
            f"pool_mode = {self.pool_mode}\n"
            "default_pool_size = 4\n"
            "server_round_robin = 0\n"
            f"logfile = {self.workdir / 'pgbouncer.log'}\n"
            f"pidfile = {self.workdir / 'pgbouncer.pid'}\n"
        )
        argv = [find_pgbouncer(), "-d", str(self.workdir / "pgbouncer.ini")]
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            for path in [self.workdir, *self.workdir.iterdir()]:
                os.chown(path, pw.pw_uid, pw.pw_gid)
            argv[1:1] = ["-u", "postgres"]
        subprocess.run(argv, check=True, capture_output=True, timeout=30)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), 1):
                return
            time.sleep(0.1)
        raise RuntimeError(f"pgbouncer did not listen on {self.port}")

    def stop(self) -> None:
        pidfile = self.workdir / "pgbouncer.pid"
        if not pidfile.exists():
            return
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and pidfile.exists():
            time.sleep(0.1)
