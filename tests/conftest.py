"""Fixtures shared by every tier: real PostgreSQL (and, in their own modules, Prometheus and the
local Kubernetes control plane), each started once per session and torn down at the end."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from dbmigrate_dev.postgres import PostgresServer, free_port

pytest_plugins = [
    "tests.fixtures.prometheus",
    "tests.fixtures.cluster",
    "tests.fixtures.operator",
    "tests.fixtures.image",
    "tests.fixtures.chart",
    "tests.fixtures.app",
    "tests.fixtures.s3",
    "tests.fixtures.argocd",
]


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """One PostgreSQL 15 server for the whole session, on a free loopback port.

    Its directory is its own (not pytest's rotating basetemp, which a concurrent pytest run
    may prune while the server still runs).
    """
    root = Path(tempfile.mkdtemp(prefix="dbmigrate-pg-"))
    server = PostgresServer(root / "data", free_port())
    server.init()
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_dsn(pg_server: PostgresServer) -> Iterator[str]:
    """A DSN to a fresh, empty database of its own for this test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    dsn = pg_server.create_database(name)
    try:
        yield dsn
    finally:
        pg_server.drop_database(name)


@pytest.fixture
def pg_conn(pg_dsn: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection to this test's database."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        yield conn


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    exhaustive = os.environ.get("DBMIGRATE_EXHAUSTIVE") == "1"
    for item in items:
        path = Path(str(item.fspath))
        if "integration" in path.parts:
            item.add_marker(pytest.mark.integration)
        elif "e2e" in path.parts:
            item.add_marker(pytest.mark.e2e)
        if item.get_closest_marker("exhaustive") and not exhaustive:
            item.add_marker(
                pytest.mark.skip(reason="the exhaustive fault matrix: DBMIGRATE_EXHAUSTIVE=1")
            )


def pytest_sessionfinish(session: pytest.Session) -> None:
    """With DBMIGRATE_WRITE_RELIABILITY=1, docs/reliability.md from the fault matrix's cells."""
    if os.environ.get("DBMIGRATE_WRITE_RELIABILITY") != "1":
        return
    from tests.e2e.fault_matrix import RESULTS, write_reliability

    if RESULTS:
        write_reliability(RESULTS)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Keep each phase's report on the item, so fixtures can tell whether the test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report
