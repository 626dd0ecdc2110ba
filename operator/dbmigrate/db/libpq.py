"""A DSN as libpq's environment variables, for the PostgreSQL client tools we run (pg_dump,
pg_restore, psql): the DSN never reaches a command line, where `ps` and `/proc/*/cmdline` show it.

It is parsed (`conninfo_to_dict`) into PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE,
PGSSLMODE, ... for the child process alone. A parameter libpq has no variable for cannot be
passed that way and is refused by name (its value is not shown), except TCP keepalive settings,
which change nothing about what a tool does.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from psycopg.conninfo import conninfo_to_dict

# libpq connection parameter -> its environment variable (libpq's "Environment Variables").
LIBPQ_ENV = {
    "host": "PGHOST",
    "hostaddr": "PGHOSTADDR",
    "port": "PGPORT",
    "dbname": "PGDATABASE",
    "user": "PGUSER",
    "password": "PGPASSWORD",
    "passfile": "PGPASSFILE",
    "service": "PGSERVICE",
    "options": "PGOPTIONS",
    "application_name": "PGAPPNAME",
    "sslmode": "PGSSLMODE",
    "requiressl": "PGREQUIRESSL",
    "sslcompression": "PGSSLCOMPRESSION",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcrl": "PGSSLCRL",
    "sslcrldir": "PGSSLCRLDIR",
    "sslsni": "PGSSLSNI",
    "requirepeer": "PGREQUIREPEER",
    "ssl_min_protocol_version": "PGSSLMINPROTOCOLVERSION",
    "ssl_max_protocol_version": "PGSSLMAXPROTOCOLVERSION",
    "gssencmode": "PGGSSENCMODE",
    "krbsrvname": "PGKRBSRVNAME",
    "gsslib": "PGGSSLIB",
    "channel_binding": "PGCHANNELBINDING",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "client_encoding": "PGCLIENTENCODING",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "load_balance_hosts": "PGLOADBALANCEHOSTS",
    "require_auth": "PGREQUIREAUTH",
}
# Parameters without a variable that do not change what is dumped.
IGNORED = frozenset(
    {"keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count", "tcp_user_timeout"}
)


class UnexpressibleDsn(ValueError):
    """The DSN sets a parameter no libpq variable carries (its name is said, not its value)."""


def libpq_env(dsn: str, application_name: str | None = None) -> dict[str, str]:
    """The libpq variables that connect as `dsn` does (for a child process's environment)."""
    params = conninfo_to_dict(dsn)
    unknown = sorted(k for k in params if k not in LIBPQ_ENV and k not in IGNORED)
    if unknown:
        raise UnexpressibleDsn(
            "the DSN sets " + ", ".join(unknown) + ", which libpq takes from no environment "
            "variable: a client tool would need it on its command line, where the DSN must "
            "never be"
        )
    env = {LIBPQ_ENV[k]: str(v) for k, v in params.items() if k in LIBPQ_ENV and v is not None}
    if application_name:
        env.setdefault("PGAPPNAME", application_name)
    return env


def tool_env(
    dsn: str, base: Mapping[str, str] | None = None, application_name: str | None = None
) -> dict[str, str]:
    """The environment of a client tool: ours without any PG* variable or secret of our own,
    plus the DSN's libpq variables."""
    source = os.environ if base is None else base
    kept = {k: v for k, v in source.items() if not k.startswith(("PG", "DBMIGRATE_", "AWS_"))}
    return {**kept, **libpq_env(dsn, application_name)}
