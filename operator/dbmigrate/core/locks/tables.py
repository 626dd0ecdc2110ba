"""The locks of ALTER TABLE and CREATE TABLE, the statements with the most cases: the lock
level of each ALTER TABLE sub-command (as PostgreSQL's ALTER TABLE page gives it), and which of
them rewrite or scan the table.
"""

from __future__ import annotations

from typing import Any

from pglast import ast
from pglast.enums import AlterTableType, ConstrType, ObjectType

from dbmigrate.core.locks.modes import EffectBuilder, LockMode
from dbmigrate.core.locks.rewrites import add_column_rewrite
from dbmigrate.core.sqlast import (
    column_constraints,
    deparse,
    has_non_null_default,
    relation_name,
    type_name,
)

# ALTER TABLE sub-commands documented as SHARE UPDATE EXCLUSIVE.
_SUE_SUBCOMMANDS = frozenset(
    {
        AlterTableType.AT_SetStatistics,
        AlterTableType.AT_ValidateConstraint,
        AlterTableType.AT_ClusterOn,
        AlterTableType.AT_DropCluster,
        AlterTableType.AT_SetRelOptions,
        AlterTableType.AT_ResetRelOptions,
        AlterTableType.AT_SetOptions,
        AlterTableType.AT_ResetOptions,
    }
)
# ... and SHARE ROW EXCLUSIVE.
_SRE_SUBCOMMANDS = frozenset(
    {
        AlterTableType.AT_EnableTrig,
        AlterTableType.AT_EnableAlwaysTrig,
        AlterTableType.AT_EnableReplicaTrig,
        AlterTableType.AT_DisableTrig,
        AlterTableType.AT_EnableTrigAll,
        AlterTableType.AT_DisableTrigAll,
        AlterTableType.AT_EnableTrigUser,
        AlterTableType.AT_DisableTrigUser,
    }
)
# Sub-commands that copy the whole table into new files.
_REWRITING_SUBCOMMANDS = frozenset(
    {
        AlterTableType.AT_SetLogged,
        AlterTableType.AT_SetUnLogged,
        AlterTableType.AT_SetTableSpace,
        AlterTableType.AT_SetAccessMethod,
    }
)
# ACCESS EXCLUSIVE sub-commands that change the catalog only: the lock is held for an instant
# (once granted). ADD COLUMN is decided case by case (`add_column_rewrite`).
_INSTANT_SUBCOMMANDS = frozenset(
    {
        AlterTableType.AT_AddColumnToView,
        AlterTableType.AT_ColumnDefault,
        AlterTableType.AT_CookedColumnDefault,
        AlterTableType.AT_DropNotNull,
        AlterTableType.AT_DropExpression,
        AlterTableType.AT_SetStorage,
        AlterTableType.AT_SetCompression,
        AlterTableType.AT_DropColumn,
        AlterTableType.AT_DropConstraint,
        AlterTableType.AT_AlterConstraint,
        AlterTableType.AT_AlterColumnGenericOptions,
        AlterTableType.AT_ChangeOwner,
        AlterTableType.AT_DropOids,
        AlterTableType.AT_ReplaceRelOptions,
        AlterTableType.AT_EnableRule,
        AlterTableType.AT_EnableAlwaysRule,
        AlterTableType.AT_EnableReplicaRule,
        AlterTableType.AT_DisableRule,
        AlterTableType.AT_AddInherit,
        AlterTableType.AT_DropInherit,
        AlterTableType.AT_AddOf,
        AlterTableType.AT_DropOf,
        AlterTableType.AT_ReplicaIdentity,
        AlterTableType.AT_EnableRowSecurity,
        AlterTableType.AT_DisableRowSecurity,
        AlterTableType.AT_ForceRowSecurity,
        AlterTableType.AT_NoForceRowSecurity,
        AlterTableType.AT_GenericOptions,
        AlterTableType.AT_DetachPartitionFinalize,
        AlterTableType.AT_AddIdentity,
        AlterTableType.AT_SetIdentity,
        AlterTableType.AT_DropIdentity,
    }
)
# Sub-commands that make an ALTER TABLE a "constraint" step in the plan.
CONSTRAINT_SUBCOMMANDS = frozenset(
    {
        AlterTableType.AT_AddConstraint,
        AlterTableType.AT_ValidateConstraint,
        AlterTableType.AT_DropConstraint,
        AlterTableType.AT_AlterConstraint,
        AlterTableType.AT_SetNotNull,
        AlterTableType.AT_DropNotNull,
    }
)
# ALTER COLUMN TYPE to these can be binary-coercible from the usual old types (varchar(n) to
# text or a longer varchar, numeric(p,s) to unconstrained numeric): no rewrite then.
_POSSIBLY_COERCIBLE_TYPES = frozenset({"text", "varchar", "numeric", "varbit", "citext"})


def alter_table(node: Any, acc: EffectBuilder, notes: list[str], version: int) -> None:
    table = relation_name(node.relation)
    if node.objtype == ObjectType.OBJECT_INDEX:
        if any(cmd.subtype == AlterTableType.AT_SetTableSpace for cmd in node.cmds or ()):
            # Copies the index under ACCESS EXCLUSIVE on it: every query planned on its table
            # opens the table's indexes, so reads and writes of the table wait.
            acc.lock(table, LockMode.ACCESS_EXCLUSIVE, of_index_table=True)
            acc.rewrites("yes")
            notes.append(f"copies index {table} to the new tablespace")
            return
        # ALTER INDEX ... SET (options) / ATTACH PARTITION: SHARE UPDATE EXCLUSIVE on the index.
        acc.lock(table, LockMode.SHARE_UPDATE_EXCLUSIVE)
        return
    for cmd in node.cmds or ():
        subtype = cmd.subtype
        if subtype in _SUE_SUBCOMMANDS:
            acc.lock(table, LockMode.SHARE_UPDATE_EXCLUSIVE)
            if subtype == AlterTableType.AT_ValidateConstraint:
                acc.scan = True
                notes.append(f"VALIDATE CONSTRAINT {cmd.name} scans {table}; writes continue")
            continue
        if subtype in _SRE_SUBCOMMANDS:
            acc.lock(table, LockMode.SHARE_ROW_EXCLUSIVE)
            continue
        if subtype == AlterTableType.AT_DetachPartition:
            concurrent = bool(getattr(cmd.def_, "concurrent", False))
            mode = LockMode.SHARE_UPDATE_EXCLUSIVE if concurrent else LockMode.ACCESS_EXCLUSIVE
            acc.lock(table, mode)
            continue
        if subtype == AlterTableType.AT_AddConstraint:
            _add_constraint(table, cmd.def_, acc, notes)
            continue
        if subtype == AlterTableType.AT_AttachPartition:
            _attach_partition(table, cmd.def_, acc, notes)
            continue
        acc.lock(table, LockMode.ACCESS_EXCLUSIVE)
        if subtype in _INSTANT_SUBCOMMANDS:
            continue
        if subtype in _REWRITING_SUBCOMMANDS or subtype == AlterTableType.AT_SetExpression:
            acc.rewrites("yes")
        elif subtype == AlterTableType.AT_AddColumn:
            _add_column(table, cmd.def_, acc, notes, version)
        elif subtype == AlterTableType.AT_AlterColumnType:
            _alter_column_type(table, cmd, acc, notes)
        elif subtype == AlterTableType.AT_SetNotNull:
            acc.scan = True
            notes.append(
                f"SET NOT NULL scans {table} unless a valid CHECK ({cmd.name} IS NOT NULL) proves "
                "it (PostgreSQL 12+)"
            )
        else:  # internal sub-commands (ReAdd…) and any new one: not in the lock table
            acc.unknown = True
            notes.append(f"ALTER TABLE sub-command {subtype.name}: lock duration unknown")


def _attach_partition(parent: str, cmd: Any, acc: EffectBuilder, notes: list[str]) -> None:
    # SHARE UPDATE EXCLUSIVE on the parent (PostgreSQL 12+); ACCESS EXCLUSIVE on the table
    # attached, which is scanned to prove its rows fit the bound unless a valid CHECK does.
    acc.lock(parent, LockMode.SHARE_UPDATE_EXCLUSIVE)
    partition = relation_name(cmd.name)
    acc.lock(partition, LockMode.ACCESS_EXCLUSIVE)
    acc.scan = True
    notes.append(
        f"scans {partition} to prove its rows fit the partition bound, unless a valid CHECK "
        "constraint matching the bound proves it"
    )


def _add_column(
    table: str, coldef: Any, acc: EffectBuilder, notes: list[str], version: int
) -> None:
    rewrite, why = add_column_rewrite(coldef, version)
    acc.rewrites(rewrite)
    if why:
        notes.append(why)
    for constraint in column_constraints(coldef):
        if constraint.contype == ConstrType.CONSTR_FOREIGN:
            acc.lock(relation_name(constraint.pktable), LockMode.SHARE_ROW_EXCLUSIVE)
            # A new column without a DEFAULT is all NULL: PostgreSQL has nothing to validate.
            acc.scan = acc.scan or has_non_null_default(coldef)
        elif constraint.contype in (ConstrType.CONSTR_PRIMARY, ConstrType.CONSTR_UNIQUE):
            acc.builds_index()
            notes.append(f"builds a unique index on {table} while holding the lock")
        elif constraint.contype == ConstrType.CONSTR_CHECK:
            acc.scan = True


def _alter_column_type(table: str, cmd: Any, acc: EffectBuilder, notes: list[str]) -> None:
    coldef = cmd.def_
    target = type_name(coldef.typeName)
    if getattr(coldef, "raw_default", None) is not None:  # USING expression
        acc.rewrites("yes")
        notes.append(f"ALTER COLUMN {cmd.name} TYPE ... USING rewrites {table}")
    elif target in _POSSIBLY_COERCIBLE_TYPES:
        acc.rewrites("maybe")
        notes.append(
            f"ALTER COLUMN {cmd.name} TYPE {deparse(coldef.typeName)}: no rewrite only if the "
            "old type is binary-coercible to it (e.g. varchar(n) to text or a longer varchar)"
        )
    else:
        acc.rewrites("yes")
        notes.append(f"ALTER COLUMN {cmd.name} TYPE {deparse(coldef.typeName)} rewrites {table}")


def _add_constraint(table: str, constraint: Any, acc: EffectBuilder, notes: list[str]) -> None:
    kind = constraint.contype
    validated = not bool(constraint.skip_validation)
    if kind == ConstrType.CONSTR_FOREIGN:
        # Both tables: SHARE ROW EXCLUSIVE.
        acc.lock(table, LockMode.SHARE_ROW_EXCLUSIVE)
        acc.lock(relation_name(constraint.pktable), LockMode.SHARE_ROW_EXCLUSIVE)
        if validated:
            acc.scan = True
            notes.append(f"validates every row of {table} against the referenced table")
        return
    acc.lock(table, LockMode.ACCESS_EXCLUSIVE)
    if kind in (ConstrType.CONSTR_PRIMARY, ConstrType.CONSTR_UNIQUE, ConstrType.CONSTR_EXCLUSION):
        if getattr(constraint, "indexname", None):
            notes.append(f"uses the existing index {constraint.indexname}: no build")
        else:
            acc.builds_index()
            notes.append(f"builds an index on {table} while holding ACCESS EXCLUSIVE")
    elif kind == ConstrType.CONSTR_CHECK and validated:
        acc.scan = True
        notes.append(f"validates every row of {table} while holding ACCESS EXCLUSIVE")


def create_table(node: Any, acc: EffectBuilder, notes: list[str], version: int) -> None:
    # The new table is invisible to other sessions until commit; only referenced tables and a
    # partition parent are locked.
    for element in node.tableElts or ():
        constraints: tuple[Any, ...] = ()
        if isinstance(element, ast.ColumnDef):
            constraints = column_constraints(element)
        elif isinstance(element, ast.Constraint):
            constraints = (element,)
        for constraint in constraints:
            if constraint.contype == ConstrType.CONSTR_FOREIGN:
                acc.lock(relation_name(constraint.pktable), LockMode.SHARE_ROW_EXCLUSIVE)
    for parent in node.inhRelations or ():
        if getattr(node, "partbound", None) is not None:
            acc.lock(relation_name(parent), LockMode.ACCESS_EXCLUSIVE)
        else:
            acc.lock(relation_name(parent), LockMode.SHARE_UPDATE_EXCLUSIVE)
    notes.append(f"creates {relation_name(node.relation)}")
