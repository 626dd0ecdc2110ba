"""`dbmigrate backfill`'s exit status for the error that ended it (`commands.backfill.exit_code`).

Aspects: errors that can heal by themselves (the connection lost or refused, the server
shutting down or full of connections, a lock that outlasted the retries) exit 75, which the
Job's podFailurePolicy retries; errors that cannot (no primary key, invalid SQL, a runtime
error of the `set`, a checkpoint of another backfill) exit 1, which fails the Job at once.
"""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors

from dbmigrate.commands.backfill import EXIT_FAILED, EXIT_RETRYABLE, exit_code
from dbmigrate.db.backfill import (
    BackfillSqlError,
    CheckpointMismatch,
    CheckpointMoved,
    DatabaseUnavailable,
    NoPrimaryKey,
    TableNotFound,
)


def wrapped(exc: psycopg.Error) -> BackfillSqlError:
    """As the worker raises it: a BackfillSqlError caused by the driver's error."""
    try:
        raise BackfillSqlError("the batch failed", exc) from exc
    except BackfillSqlError as err:
        return err


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        pytest.param(DatabaseUnavailable("lost (3 times in a row)"), 75, id="reconnects-exhausted"),
        pytest.param(errors.AdminShutdown(), 75, id="57P01-terminated"),
        pytest.param(errors.CrashShutdown(), 75, id="57P02-crash-shutdown"),
        pytest.param(errors.CannotConnectNow(), 75, id="57P03-starting-up"),
        pytest.param(errors.TooManyConnections(), 75, id="53300-too-many-connections"),
        pytest.param(errors.ConnectionFailure(), 75, id="08006-connection-failure"),
        pytest.param(errors.ProtocolViolation(), 75, id="08P01-class-08"),
        pytest.param(psycopg.OperationalError("server closed the connection"), 75, id="closed"),
        pytest.param(wrapped(errors.AdminShutdown()), 75, id="57P01-inside-a-batch-error"),
        pytest.param(wrapped(errors.LockNotAvailable()), 75, id="55P03-retries-exhausted"),
        pytest.param(wrapped(errors.DeadlockDetected()), 75, id="40P01-retries-exhausted"),
        pytest.param(wrapped(errors.QueryCanceled()), 1, id="57014-even-at-the-smallest-batch"),
        pytest.param(wrapped(errors.DivisionByZero()), 1, id="22012-runtime-error-of-set"),
        pytest.param(wrapped(errors.UndefinedColumn()), 1, id="42703-invalid-sql"),
        pytest.param(errors.InsufficientPrivilege(), 1, id="42501-raw-permission-denied"),
        pytest.param(NoPrimaryKey("no primary key"), 1, id="no-primary-key"),
        pytest.param(TableNotFound("no table"), 1, id="no-table"),
        pytest.param(CheckpointMismatch("another backfill"), 1, id="checkpoint-mismatch"),
        pytest.param(CheckpointMoved("moved"), 1, id="checkpoint-moved"),
    ],
)
def test_exit_code(exc: BaseException, code: int) -> None:
    assert exit_code(exc) == code
    assert code in (EXIT_FAILED, EXIT_RETRYABLE)
