"""The small pieces of text the plan's renderings share: row counts, sizes, durations, SQL
quoted as code, a table with its estimates, and a step in one line."""

from __future__ import annotations

from dbmigrate.core.plan.build import MigrationPlan, StepPlan
from dbmigrate.core.sqlast import table_key
from dbmigrate.core.statements import compact_sql


def format_seconds(seconds: float) -> str:
    """`45 s`, `1 min 40 s`, `2 h 5 min` (rounded up to the second)."""
    total = max(int(-(-seconds // 1)), 1)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    return f"{secs} s"


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def code(sql: str, limit: int = 120) -> str:
    return f"`{compact_sql(sql, limit)}`"


def table_size(plan: MigrationPlan, table: str) -> str:
    estimate = plan.estimates.get(table_key(table))
    if estimate is None or (estimate.rows is None and estimate.size_bytes is None):
        return f"{table}"
    return f"{table} ({estimate.describe()})"


def step_summary(step: StepPlan) -> str:
    s = step.step
    if s.backfill is not None:
        b = s.backfill
        where = f" where `{b.where}`" if b.where else ""
        return f"batched backfill of {b.table}: `{b.set}`{where}"
    if s.await_rollout is not None:
        image = f" runs `{s.await_rollout.image}` and" if s.await_rollout.image else ""
        return (
            f"wait until the target Deployment{image} is fully rolled out "
            f"(timeout {s.await_rollout.timeout})"
        )
    if s.job is not None:
        return f"run `{s.job.image}` as a Job"
    if not step.up:
        return "SQL not available to the planner" if step.analysis.up_source == "missing" else ""
    first = code(step.up[0].statement.text, 90)
    more = f" (+{len(step.up) - 1} more)" if len(step.up) > 1 else ""
    return f"{first}{more}"
