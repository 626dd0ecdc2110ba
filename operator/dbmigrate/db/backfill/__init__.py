"""Backfill batches against PostgreSQL (psycopg 3), resumable from the checkpoint table.

The database side of a backfill worker and of its progress readout, one concern a module:

- `model`: options, events, results and the expected errors (no I/O);
- `table`: the table's primary key, a check of the author's `set`/`where` SQL, size estimates;
- `checkpoints`: the checkpoint table (`CHECKPOINT_TABLE`), its DDL, the plan made by the
  first worker and every write a worker makes to its own row;
- `slices`: one slice of the key space per parallel worker;
- `workers`: how many workers a step runs with (`parallelism: auto` decided once);
- `batches`: the boundary query and the UPDATE of one batch, run in one short transaction;
- `retry`: the errors retried (and those that mean the connection is gone for now) and the
  back-off shared by the worker's retry loops;
- `throttle`: waiting while replicas lag or too many sessions are active;
- `worker`: `run_backfill`, the loop over one worker's slice, and its locks;
  `run_backfill_reconnecting`, the same through lost connections;
- `progress`: `read_backfill_progress`, the summary in `status.steps[].backfill`.

The pure decisions (batch sizing, slicing, back-off, throttling, ETA) live in
`dbmigrate.core.batching`. Other layers import from this package, not from its modules.
"""

from dbmigrate.db.backfill.batches import BatchStatements, build_statements, find_batch_end
from dbmigrate.db.backfill.checkpoints import (
    CHECKPOINT_DDL,
    CHECKPOINT_TABLE,
    FORGET_CHECKPOINTS,
    Checkpoint,
    delete_checkpoints,
    ensure_checkpoint_table,
    read_checkpoints,
)
from dbmigrate.db.backfill.model import (
    DEFAULT_MAX_RECONNECTS,
    DEFAULT_MAX_RETRIES,
    BackfillError,
    BackfillEvent,
    BackfillOptions,
    BackfillResult,
    BackfillSqlError,
    BackfillSummary,
    BatchDone,
    Blocked,
    BoundaryMethod,
    CheckpointMismatch,
    CheckpointMoved,
    CheckpointReset,
    DatabaseUnavailable,
    NoPrimaryKey,
    Retrying,
    Started,
    TableNotFound,
    Throttled,
)
from dbmigrate.db.backfill.progress import estimate_rows, read_backfill_progress
from dbmigrate.db.backfill.retry import RETRYABLE, transient_error
from dbmigrate.db.backfill.table import TableInfo, check_statements, read_table
from dbmigrate.db.backfill.throttle import APPLICATION_NAME_PREFIX, read_strain
from dbmigrate.db.backfill.worker import run_backfill, run_backfill_reconnecting
from dbmigrate.db.backfill.workers import resolve_workers

__all__ = [
    "APPLICATION_NAME_PREFIX",
    "CHECKPOINT_DDL",
    "CHECKPOINT_TABLE",
    "DEFAULT_MAX_RECONNECTS",
    "DEFAULT_MAX_RETRIES",
    "FORGET_CHECKPOINTS",
    "RETRYABLE",
    "BackfillError",
    "BackfillEvent",
    "BackfillOptions",
    "BackfillResult",
    "BackfillSqlError",
    "BackfillSummary",
    "BatchDone",
    "BatchStatements",
    "Blocked",
    "BoundaryMethod",
    "Checkpoint",
    "CheckpointMismatch",
    "CheckpointMoved",
    "CheckpointReset",
    "DatabaseUnavailable",
    "NoPrimaryKey",
    "Retrying",
    "Started",
    "TableInfo",
    "TableNotFound",
    "Throttled",
    "build_statements",
    "check_statements",
    "delete_checkpoints",
    "ensure_checkpoint_table",
    "estimate_rows",
    "find_batch_end",
    "read_backfill_progress",
    "read_checkpoints",
    "read_strain",
    "read_table",
    "resolve_workers",
    "run_backfill",
    "run_backfill_reconnecting",
    "transient_error",
]
