"""How database errors are told: the server's own words, never the connection string and never a
row's values.

- `check_dsn` refuses a DSN that does not parse, or parses a password's pieces into the host,
  port or database name (an unescaped `@`, `:` or `/` in a URL's password), with a message that
  quotes nothing of it: libpq's own parse errors quote the piece they choke on, which is often
  the password.
- `redact_dsn` takes the DSN, its password and any quoted piece of a driver message that occurs
  in the DSN out of a message (user, host and database names the DSN parsed into stay).
- `describe_error` drops row data from data and integrity errors (SQLSTATE classes 22 and 23):
  their DETAIL is `Failing row contains (…)` or `Key (email)=(…) already exists`, and their
  primary message may quote the offending value. The SQLSTATE and the names of the table,
  column and constraint stay.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

import psycopg
from psycopg.conninfo import conninfo_to_dict

REDACTED = "***"
# SQLSTATE classes whose messages carry the values of a row: data exception, integrity violation.
ROW_DATA_CLASSES = ("22", "23")
_QUOTED = re.compile(r'"([^"]+)"|\'([^\']+)\'')  # libpq quotes with ", psycopg with '
_URL = re.compile(r"^postgres(ql)?://", re.IGNORECASE)
_HOST = re.compile(r"[A-Za-z0-9._%:-]+")  # a name, an IPv4 or an IPv6 address (with %zone)
_NAMED_FIELDS = ("user", "dbname", "host", "hostaddr", "port", "application_name")


class MalformedDsn(ValueError):
    """A DSN that cannot be used; its message says where the DSN is, nothing of what it is."""


def check_dsn(dsn: str, where: str) -> None:
    """Raise MalformedDsn unless libpq parses `dsn` into host names and ports that are ones.

    `where` names the DSN's place for the message ("Secret db key dsn"). The driver's own
    message is not kept, not even as the exception's cause: it quotes the DSN.
    """
    try:
        params = conninfo_to_dict(dsn)
    except (psycopg.Error, ValueError):
        raise MalformedDsn(f"the DSN in {where} is malformed") from None
    if _URL.match(dsn):
        # libpq ends the user info at the first '@' and the authority at the first '/': an
        # unescaped '@' or '/' in the password moves its pieces into the host or the database
        # name, where a connection error would quote them.
        rest = dsn.split("://", 1)[1].split("?", 1)[0]
        if rest.count("@") > 1 or ("@" in rest and "/" in rest.split("@", 1)[0]):
            raise MalformedDsn(
                f"the DSN in {where} is malformed: percent-encode '@', ':' and '/' in a URL's "
                "password"
            ) from None
    for key in ("host", "hostaddr"):
        for host in str(params.get(key) or "").split(","):
            if host and not host.startswith("/") and not _HOST.fullmatch(host):
                raise MalformedDsn(
                    f"the DSN in {where} is malformed: its {key} is not a host name "
                    "(percent-encode '@', ':' and '/' in a URL's password)"
                ) from None
    for port in str(params.get("port") or "").split(","):
        if port and not port.isdigit():
            raise MalformedDsn(
                f"the DSN in {where} is malformed: its port is not a number "
                "(percent-encode '@', ':' and '/' in a URL's password)"
            ) from None


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text, or its type's name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def describe_error(exc: psycopg.Error) -> str:
    """`SQLSTATE: message (detail) hint: …` from the server's diagnostics, without row data."""
    diag = exc.diag
    message = diag.message_primary or first_line(exc)
    sqlstate = exc.sqlstate
    if sqlstate and sqlstate[:2] in ROW_DATA_CLASSES:
        return _describe_row_error(exc, sqlstate, message)
    text = f"{sqlstate}: {message}" if sqlstate else message
    if diag.message_detail:
        text += f" ({diag.message_detail})"
    if diag.message_hint:
        text += f" hint: {diag.message_hint}"
    return text


def _describe_row_error(exc: psycopg.Error, sqlstate: str, message: str) -> str:
    diag = exc.diag
    named = {
        "table": diag.table_name,
        "column": diag.column_name,
        "constraint": diag.constraint_name,
    }
    names = {n for n in (*named.values(), diag.schema_name, diag.datatype_name) if n}
    # Quoted names of objects stay; any other quoted piece is a value.
    message = _QUOTED.sub(lambda m: m.group(0) if _piece(m) in names else '"…"', message)
    text = f"{sqlstate}: {message}"
    where = ", ".join(f"{what} {name}" for what, name in named.items() if name)
    if where:
        text += f" ({where})"
    return text + " [row values not shown]"


def redact_dsn(message: str, dsn: str | None) -> str:
    """A message safe to show: the DSN, its password and every quoted piece of the message that
    occurs in the DSN replaced by `***` (a quoted user, host or database name it parsed into
    stays)."""
    if not dsn:
        return message
    try:
        params = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
    except (psycopg.Error, ValueError):
        params = {}
    secrets = [dsn]
    password = params.get("password")
    if password and len(password) >= 4:  # shorter: every "a" of a message would go
        secrets.append(password)
    for secret in sorted(secrets, key=len, reverse=True):
        message = message.replace(secret, REDACTED)
    keep = {params[k] for k in _NAMED_FIELDS if params.get(k)} - ({password} if password else set())
    decoded = unquote(dsn)

    def quoted(m: re.Match[str]) -> str:
        piece = _piece(m)
        if piece in keep or (piece not in dsn and piece not in decoded):
            return m.group(0)
        return f'"{REDACTED}"'

    return _QUOTED.sub(quoted, message)


def _piece(m: re.Match[str]) -> str:
    return m.group(1) if m.group(1) is not None else m.group(2)
