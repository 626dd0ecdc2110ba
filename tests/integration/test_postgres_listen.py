"""The PostgreSQL fixture server on a second address with a password rule for a network: what
the demo's kind mode needs so that pods reach a database on the host (their traffic arrives at
the host's address on kind's network). Here the second address is another loopback address."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from dbmigrate_dev.postgres import PostgresServer, free_port

SECOND = "127.0.0.2"


@pytest.mark.parametrize(
    ("listen", "allow", "reachable"),
    [
        pytest.param((SECOND,), ("10.89.0.0/24",), True, id="listening-and-allowed"),
        pytest.param((), (), False, id="loopback-only-by-default"),
    ],
)
def test_second_address(
    tmp_path: Path, listen: tuple[str, ...], allow: tuple[str, ...], reachable: bool
) -> None:
    server = PostgresServer(tmp_path / "pg", free_port(), listen=listen, allow=allow)
    server.init()
    server.start()
    try:
        dsn = server.dsn("postgres", host=SECOND)
        assert SECOND in dsn
        if reachable:
            with psycopg.connect(dsn) as conn:
                row = conn.execute("SELECT host(inet_server_addr())").fetchone()
                # the server took the rule for the pods' network as written
                rules = conn.execute(
                    "SELECT address, netmask, auth_method FROM pg_hba_file_rules "
                    "WHERE type = 'host' AND error IS NULL"
                ).fetchall()
            assert row == (SECOND,)
            assert ("10.89.0.0", "255.255.255.0", "scram-sha-256") in rules
        else:
            with pytest.raises(psycopg.OperationalError):
                psycopg.connect(dsn)
        # the loopback address works either way
        with psycopg.connect(server.dsn("postgres")) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        server.stop()
