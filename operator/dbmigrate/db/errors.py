"""How database errors are told: the server's own words, never the connection string."""

from __future__ import annotations

import psycopg
from psycopg.conninfo import conninfo_to_dict


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text, or its type's name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def describe_error(exc: psycopg.Error) -> str:
    """`SQLSTATE: message (detail) hint: …` from the server's diagnostics."""
    diag = exc.diag
    message = diag.message_primary or first_line(exc)
    text = f"{exc.sqlstate}: {message}" if exc.sqlstate else message
    if diag.message_detail:
        text += f" ({diag.message_detail})"
    if diag.message_hint:
        text += f" hint: {diag.message_hint}"
    return text


def redact_dsn(message: str, dsn: str | None) -> str:
    """A message safe to show: the DSN and its password replaced by `***` (libpq does not put
    them in its messages, but an exception's text may quote the string it was given)."""
    if not dsn:
        return message
    secrets = [dsn]
    try:
        password = conninfo_to_dict(dsn).get("password")
    except psycopg.Error:
        password = None
    if password and len(str(password)) >= 4:
        secrets.append(str(password))
    for secret in secrets:
        message = message.replace(secret, "***")
    return message
