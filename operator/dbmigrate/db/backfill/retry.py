"""Retrying what a lock or a timeout refused, with back-off: one helper for every loop.

Owns which errors a worker retries (`RETRYABLE`) and `Retries`, the count of consecutive
failures and the pause before the next try, which the worker's retry loops share: the
lock-bound setup steps (`retrying_locks`), the batches and the reconnects (`worker`). Which
errors mean the connection or the database is gone for now (`transient_error`: reconnect,
resume from the checkpoint) is `core.batching.is_transient_sqlstate`, plus a connection that
closed without the server saying why.

Counting: failures count from 1, which is what `Retrying.attempt` and the "failed N times in
a row" of the errors report; the pause before the next try is
`core.batching.backoff_delay(failures - 1, ...)`, whose argument is the 0-based retry index,
so the first retry waits 0.1-0.2 s and each one after that twice as long (capped at 30 s).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import TypeVar

import psycopg
from psycopg import errors

from dbmigrate.core.batching import backoff_delay, is_transient_sqlstate
from dbmigrate.db.backfill.model import (
    BackfillEvent,
    BackfillOptions,
    BackfillSqlError,
    Retrying,
)
from dbmigrate.db.errors import describe_error

RETRYABLE = (
    errors.LockNotAvailable,  # 55P03: lock_timeout
    errors.QueryCanceled,  # 57014: statement_timeout
    errors.DeadlockDetected,  # 40P01
    errors.SerializationFailure,  # 40001
)

T = TypeVar("T")


def transient_error(exc: BaseException | None) -> psycopg.Error | None:
    """The error in `exc` or its causes that says the connection or the database went away for
    now (class 08, 57P01, 57P02, 57P03, 53300, or a connection that closed without a word from
    the server); None when the error is anything else."""
    while exc is not None:
        if isinstance(exc, psycopg.Error) and (
            is_transient_sqlstate(exc.sqlstate)
            or (exc.sqlstate is None and isinstance(exc, psycopg.OperationalError))
        ):
            return exc
        exc = exc.__cause__
    return None


class Retries:
    """Consecutive failures of one operation, and the back-off before trying it again."""

    def __init__(
        self, limit: int, emit: Callable[[BackfillEvent], None], stop: threading.Event
    ) -> None:
        self.limit = limit  # retries allowed after the first failure
        self.emit = emit
        self.stop = stop
        self.failures = 0

    def failed(self) -> bool:
        """Count one more failure; True while another try is allowed."""
        self.failures += 1
        return self.failures <= self.limit

    def back_off(self, error: str, batch_size: int) -> None:
        """Report the retry to come, then wait for it (less if `stop` is set meanwhile)."""
        delay = backoff_delay(self.failures - 1, random.random())  # noqa: S311 - jitter only
        self.emit(Retrying(error=error, attempt=self.failures, delay=delay, batch_size=batch_size))
        self.stop.wait(delay)

    def succeeded(self) -> None:
        self.failures = 0


def retrying_locks(
    fn: Callable[[], T],
    opts: BackfillOptions,
    emit: Callable[[BackfillEvent], None],
    stop: threading.Event,
) -> T:
    """`fn()`, retried with back-off while it hits the lock timeout (SQLSTATE 55P03)."""
    retries = Retries(opts.max_retries, emit, stop)
    while True:
        try:
            return fn()
        except errors.LockNotAvailable as exc:
            if not retries.failed() or stop.is_set():
                raise BackfillSqlError(
                    f"waited for a lock on {opts.table} {retries.failures} times in a row", exc
                ) from exc
            retries.back_off(describe_error(exc), opts.batch_size)
