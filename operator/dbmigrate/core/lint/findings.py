"""What the lint engine returns: findings (with everything the CLI shows, convertible to the
status entry), and the analysis of each statement, piece of SQL, step and migration that the
plan renders.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from dbmigrate.core.lint.context import Direction
from dbmigrate.core.lint.rules import Severity
from dbmigrate.core.locks import StatementEffect
from dbmigrate.core.statements import SqlSyntaxError, Statement

if TYPE_CHECKING:  # pydantic models only for typing: see engine.py
    from dbmigrate.api.models import LintFinding, Step

# step name -> (up SQL, down SQL) for steps whose SQL is read from ConfigMaps.
Resolved = dict[str, tuple[str | None, str | None]]


@dataclass(frozen=True)
class Finding:
    """A lint finding with everything the CLI shows (the status entry keeps less)."""

    rule: str
    severity: Severity
    message: str
    step: str | None = None
    statement: int | None = None
    line: int | None = None
    direction: Direction = "up"
    suppressed: bool = False
    reason: str | None = None
    position: int | None = None  # syntax errors: 0-based character offset in the SQL

    @property
    def blocking(self) -> bool:
        """Counts as an error: an unsuppressed error finding."""
        return self.severity == "error" and not self.suppressed

    def location(self) -> str:
        where = "down SQL" if self.direction == "down" else ""
        if self.line is not None:
            where = f"{where}, line {self.line}" if where else f"line {self.line}"
        return where

    def to_status(self) -> LintFinding:
        """The status.lint entry: location and suppression reason folded into the message."""
        from dbmigrate.api.models import LintFinding  # here: pydantic only when needed

        message = self.message
        where = self.location()
        if where:
            message = f"{where}: {message}"
        if self.suppressed:
            message = f"{message} (suppressed: {self.reason or 'no reason given'})"
        return LintFinding(
            step=self.step,
            rule=self.rule,
            severity=self.severity,
            message=message,
            statement=self.statement,
            suppressed=self.suppressed,
        )


@dataclass(frozen=True)
class AnalysedStatement:
    statement: Statement
    effect: StatementEffect
    findings: tuple[Finding, ...]
    # Every table it touches was created earlier in this migration.
    on_new_tables: bool


@dataclass(frozen=True)
class SqlAnalysis:
    statements: tuple[AnalysedStatement, ...]
    findings: tuple[Finding, ...]
    syntax_error: SqlSyntaxError | None = None


SqlSource = Literal["inline", "configmap", "missing", "none"]


@dataclass(frozen=True)
class StepAnalysis:
    index: int
    step: Step
    contract_phase: bool
    up: SqlAnalysis | None
    down: SqlAnalysis | None
    up_source: SqlSource
    down_source: SqlSource
    findings: tuple[Finding, ...]


@dataclass(frozen=True)
class MigrationAnalysis:
    steps: tuple[StepAnalysis, ...]
    server_version: int
    # spec.postDeploy.cleanup's SQL, judged as contract-phase statements
    cleanup_findings: tuple[Finding, ...] = ()

    @property
    def findings(self) -> list[Finding]:
        return [*(f for s in self.steps for f in s.findings), *self.cleanup_findings]
