"""No fragment of a password leaves through a DSN's error, also when the DSN is malformed.

Property: for generated DSNs (URL and keyword forms, each malformed in the ways people get them
wrong: an unescaped `@`, `:` or `%` in a URL's password, an unquoted space or quote in a keyword
DSN) with a random password, what the operator would show — `check_dsn`'s refusal, or the
connection error from a real PostgreSQL passed through `redact_dsn` — contains no 4-character
piece of the password.
"""

from __future__ import annotations

import os

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dbmigrate.db.errors import MalformedDsn, check_dsn, first_line, redact_dsn
from dbmigrate_dev.postgres import PostgresServer

# Letters rare in English and in libpq's messages, and the characters that break DSNs.
LETTERS = "QXZJqxzjKVkv7"
BREAKERS = "%@ :'\"=\\/#?&"
PASSWORDS = st.text(alphabet=LETTERS + BREAKERS, min_size=6, max_size=16).filter(
    lambda p: sum(c in LETTERS for c in p) >= 4
)
SHAPES = [
    "postgresql://bob:{pw}@{host}:{port}/postgres",  # unescaped, whatever it holds
    "postgresql://bob:{pw}%zz@{host}:{port}/postgres",  # a bad percent-escape
    "postgres://bob:{pw}@{host}:{port}/postgres?connect_timeout=2",
    "host={host} port={port} user=bob password={pw} dbname=postgres",  # unquoted
    "host={host} port={port} user=bob password='{pw}' dbname=postgres",  # quoted, maybe unbalanced
    "host={host} port={port} user=bob password='{pw} dbname=postgres",  # an unclosed quote
]


def fragments(password: str) -> set[str]:
    """The password's 4-character pieces that are recognisably its own (two of its letters)."""
    return {
        password[i : i + 4]
        for i in range(len(password) - 3)
        if sum(c in LETTERS for c in password[i : i + 4]) >= 2
    }


def refusal(dsn: str) -> MalformedDsn | None:
    try:
        check_dsn(dsn, "Secret db key dsn")
    except MalformedDsn as exc:
        return exc
    return None


def shown(dsn: str) -> str:
    """What the operator would put in a condition, an event and its log for this DSN."""
    refused = refusal(dsn)
    if refused is not None:
        # nothing of the driver's message travels along (as a cause in a traceback, say)
        assert refused.__cause__ is None
        assert refused.__suppress_context__
        return str(refused)
    try:
        psycopg.connect(dsn, connect_timeout=2).close()
    except psycopg.Error as exc:
        return redact_dsn(f"cannot reach the database: {first_line(exc)}", dsn) + redact_dsn(
            str(exc), dsn
        )
    pytest.fail("a random password logged in")


@pytest.mark.parametrize("shape", SHAPES)
@settings(
    # more with DBMIGRATE_PROPERTY_EXAMPLES=1000 (the way the unescaped '@' and '/' were found)
    max_examples=int(os.environ.get("DBMIGRATE_PROPERTY_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(password=PASSWORDS)
def test_no_piece_of_the_password_is_shown(
    pg_server: PostgresServer, shape: str, password: str
) -> None:
    dsn = shape.format(pw=password, host=pg_server.host, port=pg_server.port)
    text = shown(dsn)
    leaked = sorted(f for f in fragments(password) if f in text)
    assert not leaked, (dsn, text, leaked)


@pytest.mark.parametrize(
    ("dsn", "why"),
    [
        pytest.param("postgresql://bob:s3cr%zzt@h/db", "", id="bad-percent-escape"),
        pytest.param("host=h password=pa ss dbname=d", "", id="unquoted-space"),
        pytest.param("postgresql://bob:p@ss@h/db", "percent-encode", id="unescaped-at"),
        pytest.param("postgresql://bob:p/ss@h/db", "percent-encode", id="unescaped-slash"),
        pytest.param("host=h port=5432 user=bob password=x host=p@ss", "host", id="keyword-host"),
        pytest.param("host=h port=w0rd user=bob", "port", id="keyword-port"),
        pytest.param("host=h password='unclosed dbname=d", "", id="unclosed-quote"),
    ],
)
def test_a_malformed_dsn_is_refused_without_a_word_of_it(dsn: str, why: str) -> None:
    with pytest.raises(MalformedDsn) as caught:
        check_dsn(dsn, "Secret db key dsn")
    message = str(caught.value)
    assert message.startswith("the DSN in Secret db key dsn is malformed")
    assert why in message
    for piece in ("s3cr", "zzt", "pa ss", "p@ss", "ss@h", "w0rd", "unclosed"):
        assert piece not in message


@pytest.mark.parametrize(
    "dsn",
    [
        pytest.param("postgresql://bob:p%40ss@h:5432/db", id="escaped-url"),
        pytest.param("host=h,/run/pg port=5432,5433 user=bob password='p ss'", id="keywords"),
        pytest.param("postgresql://bob@[::1]:5432/db", id="ipv6"),
    ],
)
def test_a_good_dsn_passes(dsn: str) -> None:
    check_dsn(dsn, "Secret db key dsn")


def test_quoted_pieces_of_the_dsn_are_redacted_but_names_stay() -> None:
    dsn = "postgresql://bob:Zq7Xkj@db.example:5432/shop"
    message = 'FATAL: password authentication failed for user "bob" ("Zq7X" near "kj@db")'
    assert redact_dsn(message, dsn) == (
        'FATAL: password authentication failed for user "bob" ("***" near "***")'
    )
