"""Lint and plan as one pass of the runner sees them: linted once per change of the spec, its
resolved SQL or the server (`LintCache`, off the event loop), and recorded in status (the
findings, errors first and at most `MAX_FINDINGS_IN_STATUS`; the concise plan when first seen).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import replace

from dbmigrate.api import reasons
from dbmigrate.api.models import DatabaseMigrationSpec, DatabaseMigrationStatus, LintFinding
from dbmigrate.core import decide as d
from dbmigrate.core.lint import Resolved, count_blocking, lint_migration
from dbmigrate.core.plan import TableEstimate, render_plan_summary, tables_touched
from dbmigrate.core.steps import ResolvedSql

# Status is an API object (etcd keeps it whole): thousands of findings of a generated migration
# must not make it huge. The count of blocking errors is taken over all of them.
MAX_FINDINGS_IN_STATUS = 50


class LintCache:
    """The last lint's findings and what they were made from: a migration is linted once per
    change of its spec, its resolved SQL or the server, off the event loop (a large migration
    takes seconds), not at every pass."""

    def __init__(self) -> None:
        self._key: tuple[object, ...] | None = None
        self._findings: tuple[LintFinding, ...] = ()
        self._tables_key: tuple[object, ...] | None = None
        self._tables: list[str] = []
        self._sizes: Mapping[str, TableEstimate] = {}
        self.runs = 0  # how many times lint really ran

    async def findings(
        self,
        spec: DatabaseMigrationSpec,
        sql: dict[str, ResolvedSql],
        server_version: int,
        sizes: Mapping[str, TableEstimate] | None = None,
    ) -> tuple[LintFinding, ...]:
        resolved = _resolved(sql)
        # Once started, sizes are not read again: the findings keep the weights they had.
        sizes = self._sizes if sizes is None else sizes
        self._sizes = sizes
        # What lint uses of a table: small or not, partitioned or not. Re-lint when it changes.
        weights = tuple(
            sorted((table, size.small, size.partitioned) for table, size in sizes.items())
        )
        key = (spec.model_dump_json(), tuple(sorted(resolved.items())), server_version, weights)
        if key != self._key:
            found = await asyncio.to_thread(lint_migration, spec, resolved, server_version, sizes)
            self._key, self._findings = key, tuple(found)
            self.runs += 1
        return self._findings

    async def tables(self, spec: DatabaseMigrationSpec, sql: dict[str, ResolvedSql]) -> list[str]:
        """The existing tables the migration touches (what its lint weighs by size)."""
        resolved = _resolved(sql)
        key = (spec.model_dump_json(), tuple(sorted(resolved.items())))
        if key != self._tables_key:
            self._tables = await asyncio.to_thread(tables_touched, spec, resolved)
            self._tables_key = key
        return self._tables


def _resolved(sql: dict[str, ResolvedSql]) -> Resolved:
    return {name: (r.up, r.down) for name, r in sql.items()}


async def lint(
    spec: DatabaseMigrationSpec,
    obs: d.Observation,
    sql: dict[str, ResolvedSql],
    server_version: int,
    cache: LintCache,
    sizes: Mapping[str, TableEstimate] | None = None,
) -> d.Observation:
    """Lint every step before anything runs; Enforce blocks on error findings."""
    if spec.safety.lint == "Off":
        return obs
    findings = await cache.findings(spec, sql, server_version, sizes)
    return replace(obs, lint_findings=findings, lint_errors=count_blocking(list(findings)))


def record_lint_and_plan(
    spec: DatabaseMigrationSpec,
    status: DatabaseMigrationStatus,
    obs: d.Observation,
    sql: dict[str, ResolvedSql],
    server_version: int,
) -> DatabaseMigrationStatus:
    """status.lint (the findings) and status.plan (the concise plan, when first seen)."""
    if obs.problem is not None and obs.problem.reason == reasons.CONFIG_MAP_NOT_FOUND:
        return status  # the SQL is not all there yet
    status = status.model_copy(deep=True)
    if status.plan is None:
        status.plan = render_plan_summary(spec, _resolved(sql), server_version)
    # Errors first: they are what a person must see when the list is cut.
    kept = sorted(obs.lint_findings, key=lambda f: f.severity != "error")
    status.lint = kept[:MAX_FINDINGS_IN_STATUS] or None
    return status
