"""The migration plan: the seed's "Migration Plan" and "Rollback Strategy", derived from a spec.

`build` makes the plan (the data: each statement's kind, lock, rewrite and scan via the lint
engine's analysis, reversibility, the point of no return, estimates); `render` prints it as
Markdown (with `steps`, `rollback` and `formatting`), `summary` as the few lines of
status.plan. The names other packages use are re-exported here.
"""

from dbmigrate.core.lint.context import TableEstimate, format_bytes
from dbmigrate.core.plan.build import (
    MigrationPlan,
    StepPlan,
    backfill_columns,
    build_plan,
    tables_touched,
    watched_relations,
)
from dbmigrate.core.plan.formatting import format_seconds
from dbmigrate.core.plan.render import render_plan
from dbmigrate.core.plan.summary import render_plan_summary

__all__ = [
    "MigrationPlan",
    "StepPlan",
    "TableEstimate",
    "backfill_columns",
    "build_plan",
    "format_bytes",
    "format_seconds",
    "render_plan",
    "render_plan_summary",
    "tables_touched",
    "watched_relations",
]
