"""The lint rules: one small function per rule, registered with its id, severity and summary.

Each check receives one parsed statement, its effect (`core.locks`) and the `LintContext`, and
yields a `Hit` per problem. A message names the statement, the lock it takes and for how long,
and the safe alternative — derived from the user's own statement where possible (the same
statement with CONCURRENTLY or NOT VALID added, the CHECK recipe with the real table and
column), following the seed workflow's patterns.

Context rules shared by the checks: a table created earlier in the migration is exempt from
the index, constraint and column rules (nobody else uses it yet); DROP COLUMN / DROP TABLE are
expected in the contract phase (a step after an awaitRollout step).

There is deliberately no `require-lock-timeout` rule (squawk has one): dbmigrate's executor
sets `lock_timeout` (spec.safety.lockTimeout) and retries every DDL statement itself, so the
SQL must not, and need not, set it.

How each rule treats a step's down (rollback) SQL is its `rollback` policy: "keep" (a
statement that makes the rollback fail outright stays an error), "warn" (lock and rewrite
problems are reported as warnings: rollbacks run under pressure and should be fast, but
blocking one would leave the migration half-undone), "skip" (design rules about the schema
being built, and drops/renames, which are what a rollback is for).

One module per rule family; importing a family registers its rules, so the imports below are
in registry order (the order of `RULES`, in which the engine runs the checks).
"""

# isort: off
# The registry first (it registers the engine's own rules), then each family: importing one
# registers its rules, so this order is the order of `RULES`.
from dbmigrate.core.lint.rules.registry import RULES, Check, Hit, RollbackPolicy, Rule, Severity
from dbmigrate.core.lint.rules import transactions, columns, constraints, breaking  # noqa: F401
from dbmigrate.core.lint.rules import indexes, maintenance, data, rerun, column_types  # noqa: F401
from dbmigrate.core.lint.rules import objects, versions  # noqa: F401
from dbmigrate.core.lint.rules import lock_table  # noqa: F401  (the catch-all, last)

# isort: on

__all__ = ["RULES", "Check", "Hit", "RollbackPolicy", "Rule", "Severity"]
