"""What a backfill worker is asked to do and what it reports back.

Owns the vocabulary the other modules of the package (and its callers) share: the options of
one worker (`BackfillOptions`), the events it emits while it runs (`Started`, `BatchDone`,
`Throttled`, `Retrying`, `Blocked`), its result (`BackfillResult`) and the expected failures, whose
messages are meant for a person (`BackfillError` and its subclasses). No I/O happens here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import psycopg

from dbmigrate.core.batching import default_checkpoint_name
from dbmigrate.db.errors import describe_error

DEFAULT_MAX_RETRIES = 10
DEFAULT_MAX_RECONNECTS = 10  # about 80 s of back-off: a restart or a failover of the server

BoundaryMethod = Literal["offset", "max"]


# ---------------------------------------------------------------------------------------------
# errors


class BackfillError(Exception):
    """An expected failure, with a message meant for a person (never contains the DSN)."""


class TableNotFound(BackfillError):
    pass


class NoPrimaryKey(BackfillError):
    pass


class CheckpointMismatch(BackfillError):
    pass


class CheckpointMoved(BackfillError):
    """Another process advanced this worker's checkpoint while we were running a batch."""


class DatabaseUnavailable(BackfillError):
    """The connection was lost (or refused) and reconnecting failed too often in a row: an error
    that can heal, so the worker exits with a code the Job retries, never 1."""


class BackfillSqlError(BackfillError):
    """The database refused a statement; `sqlstate` and the server's message."""

    def __init__(self, what: str, exc: psycopg.Error) -> None:
        self.sqlstate = exc.sqlstate
        self.server_message = describe_error(exc)
        super().__init__(f"{what}: {self.server_message}")


# ---------------------------------------------------------------------------------------------
# options, events, results


@dataclass(frozen=True)
class BackfillOptions:
    """What one worker does; mirrors `steps[].backfill` plus the worker's index."""

    table: str
    set: str
    where: str | None = None
    batch_size: int = 1000
    max_batch_size: int = 100_000
    target_batch_seconds: float = 0.5
    pause_seconds: float = 0.0
    worker: int = 0
    workers: int = 1
    checkpoint: str | None = None
    lock_timeout_seconds: float = 1.0
    max_replication_lag_seconds: float = 1.5
    max_active_sessions: int = 25
    max_retries: int = DEFAULT_MAX_RETRIES
    # consecutive reconnects without a batch committed in between (`run_backfill_reconnecting`)
    max_reconnects: int = DEFAULT_MAX_RECONNECTS
    # None: derived from the target (batch_statement_timeout); set to test or to cap it.
    statement_timeout_seconds: float | None = None
    boundary_method: BoundaryMethod = "offset"
    # safety.maxBlockedDuration: a batch that makes another session wait this long is cancelled
    # and retried at half its size (`db.guard`); 0: no guard
    max_blocked_seconds: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.worker < self.workers:
            raise ValueError(f"worker must be in [0, {self.workers}), got {self.worker}")
        if self.batch_size < 1 or self.max_batch_size < 1:
            raise ValueError("batch sizes must be at least 1")

    @property
    def checkpoint_name(self) -> str:
        return self.checkpoint or default_checkpoint_name(self.table, self.set, self.where)


@dataclass(frozen=True)
class BackfillSummary:
    """How far a backfill is over all its workers (`read_backfill_progress`); the operator
    shows it as `status.steps[].backfill`."""

    rows_done: int = 0
    rows_estimated: int | None = None
    percent: int | None = None
    rows_per_second: int | None = None
    eta: str | None = None
    workers: int | None = None  # the count its plan was made for; None before any worker ran
    blocking_episodes: int = 0  # batches the blocking guard cancelled, over all workers
    last_blocked: str | None = None  # what the last of them was


@dataclass(frozen=True)
class Started:
    """The worker has its slice; `rows_estimated` counts rows done earlier plus rows left."""

    table: str
    key_columns: tuple[str, ...]
    checkpoint: str
    worker: int
    workers: int
    rows_done_before: int
    rows_estimated: int | None
    resumed: bool
    batch_size: int


@dataclass(frozen=True)
class BatchDone:
    rows: int  # rows the UPDATE changed
    seconds: float
    batch_size: int  # keys asked for
    next_batch_size: int
    rows_done: int  # this worker's total, including earlier runs
    batches: int
    last_key: str  # JSON array


@dataclass(frozen=True)
class Throttled:
    reason: str


@dataclass(frozen=True)
class Retrying:
    error: str
    attempt: int
    delay: float
    batch_size: int


@dataclass(frozen=True)
class Blocked:
    """The blocking guard cancelled a batch: application queries waited on it too long. The
    batch rolled back and is retried at `next_batch_size`."""

    message: str
    waiters: int
    longest_wait: float
    batch_size: int
    next_batch_size: int


@dataclass(frozen=True)
class CheckpointReset:
    """The checkpoint no longer described the table (another table now, or rows it had done
    match `where` again): it was forgotten and the backfill starts over."""

    checkpoint: str
    reason: str


BackfillEvent = Started | BatchDone | Throttled | Retrying | CheckpointReset | Blocked


@dataclass(frozen=True)
class BackfillResult:
    checkpoint: str
    rows: int  # rows changed by this run
    rows_total: int  # rows changed by this worker over all runs
    batches: int
    seconds: float
    already_finished: bool = False
    stopped: bool = False  # asked to stop before the slice was done
    resumed_from: int = 0
    batch_seconds: list[float] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=list)
