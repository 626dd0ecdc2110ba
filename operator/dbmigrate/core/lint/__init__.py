"""Static checks of migration SQL: lock safety, rewrites, zero-downtime rules (pure).

`lint_sql` / `lint_migration` return status entries (`api.models.LintFinding`); `check_sql` /
`check_migration` return `Finding`s with line numbers for the CLI; `analyse_migration` also
gives each statement's context-aware effect, which the plan renders. The rules are listed in
`RULES` (id -> severity, summary, rollback policy).
"""

from dbmigrate.core.lint.context import LintContext
from dbmigrate.core.lint.engine import (
    analyse_migration,
    analyse_sql,
    check_migration,
    check_sql,
    count_blocking,
    lint_migration,
    lint_sql,
)
from dbmigrate.core.lint.findings import (
    AnalysedStatement,
    Finding,
    MigrationAnalysis,
    Resolved,
    SqlAnalysis,
    StepAnalysis,
)
from dbmigrate.core.lint.rules import RULES, Rule
from dbmigrate.core.locks import DEFAULT_SERVER_VERSION

__all__ = [
    "DEFAULT_SERVER_VERSION",
    "RULES",
    "AnalysedStatement",
    "Finding",
    "LintContext",
    "MigrationAnalysis",
    "Resolved",
    "Rule",
    "SqlAnalysis",
    "StepAnalysis",
    "analyse_migration",
    "analyse_sql",
    "check_migration",
    "check_sql",
    "count_blocking",
    "lint_migration",
    "lint_sql",
]
