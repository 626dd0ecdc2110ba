"""The table-level effect of one statement: its category, and the locks, rewrite and scan
that each kind of statement implies (ALTER TABLE and CREATE TABLE are in `tables`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pglast import ast
from pglast.enums import ObjectType

from dbmigrate.core.locks.modes import (
    Category,
    EffectBuilder,
    LockMode,
    Rewrite,
    StatementEffect,
)
from dbmigrate.core.locks.tables import CONSTRAINT_SUBCOMMANDS, alter_table, create_table
from dbmigrate.core.sqlast import (
    dotted_name,
    has_option,
    relation_name,
    transaction_block_change,
    walk,
)

# The PostgreSQL major version assumed when the server's is not known (no DSN given, or the
# status does not say yet). Every layer above takes its default from here.
DEFAULT_SERVER_VERSION = 15


def statement_category(node: Any) -> Category:
    """The kind of change a statement makes, as the seed's plan names them."""
    if isinstance(node, ast.TransactionStmt):
        return "transaction control"
    if isinstance(node, ast.IndexStmt | ast.ReindexStmt):
        return "index"
    if isinstance(node, ast.DropStmt) and node.removeType == ObjectType.OBJECT_INDEX:
        return "index"
    if isinstance(node, ast.RenameStmt) and node.renameType == ObjectType.OBJECT_INDEX:
        return "index"
    if isinstance(node, ast.AlterTableStmt):
        cmds = node.cmds or ()
        if node.objtype == ObjectType.OBJECT_INDEX:
            return "index"
        if cmds and all(cmd.subtype in CONSTRAINT_SUBCOMMANDS for cmd in cmds):
            return "constraint"
        return "DDL"
    if isinstance(
        node,
        ast.InsertStmt | ast.UpdateStmt | ast.DeleteStmt | ast.MergeStmt | ast.CopyStmt,
    ):
        return "DML"
    if isinstance(node, ast.DoStmt | ast.CallStmt):
        return "DML"
    if isinstance(node, ast.SelectStmt):
        return "DDL" if node.intoClause is not None else "DML"
    if isinstance(node, ast.VacuumStmt | ast.ClusterStmt | ast.RefreshMatViewStmt):
        return "maintenance"
    if isinstance(node, ast.VariableSetStmt | ast.VariableShowStmt):
        return "other"
    return "DDL"


def statement_effect(node: Any, server_version: int = DEFAULT_SERVER_VERSION) -> StatementEffect:
    """The locks, rewrite and scan of one parsed statement (a pglast node)."""
    category = statement_category(node)
    acc = EffectBuilder(locks={})
    notes: list[str] = []
    handler = _HANDLERS.get(type(node))
    if handler is not None:
        handler(node, acc, notes, server_version)
    elif type(node) not in NO_TABLE_LOCK:
        # UNKNOWN_LOCKS, or a kind the table does not list: say so, and assume the worst on a
        # table it names.
        acc.unknown = True
        if isinstance(getattr(node, "relation", None), ast.RangeVar):
            acc.lock(relation_name(node.relation), LockMode.ACCESS_EXCLUSIVE)
        notes.append("locks unknown (statement kind not in dbmigrate's lock table)")
    return StatementEffect(
        category=category,
        locks=tuple(acc.locks.values()),
        rewrite=acc.rewrite,
        scan=acc.scan,
        notes=tuple(notes),
        index_build=acc.index_build,
        until_commit=acc.until_commit,
        known=not acc.unknown,
    )


def strongest_lock(node: Any, server_version: int = DEFAULT_SERVER_VERSION) -> LockMode | None:
    """The strongest table-level lock a statement takes (None: no table lock)."""
    return statement_effect(node, server_version).strongest


def rewrites_table(node: Any, server_version: int = DEFAULT_SERVER_VERSION) -> Rewrite:
    """Whether the statement rewrites a table: "yes", "no" or "maybe" (depends on the data)."""
    return statement_effect(node, server_version).rewrite


def _read_relations(query: Any, acc: EffectBuilder, mode: LockMode) -> None:
    for node in walk(query):
        if isinstance(node, ast.RangeVar):
            acc.lock(relation_name(node), mode)


def _create_table_as(node: Any, acc: EffectBuilder, notes: list[str], version: int) -> None:
    _read_relations(node.query, acc, LockMode.ACCESS_SHARE)
    notes.append(f"creates {relation_name(node.into.rel)} from a query")


def _select(node: Any, acc: EffectBuilder, notes: list[str], version: int) -> None:
    mode = LockMode.ROW_SHARE if node.lockingClause else LockMode.ACCESS_SHARE
    if node.intoClause is not None:
        notes.append(f"creates {relation_name(node.intoClause.rel)} from a query")
        _read_relations((node.fromClause, node.whereClause, node.withClause), acc, mode)
        return
    _read_relations(node, acc, mode)


def _dml(node: Any, acc: EffectBuilder, notes: list[str], version: int) -> None:
    target = relation_name(node.relation)
    acc.lock(target, LockMode.ROW_EXCLUSIVE)
    for attr in ("fromClause", "usingClause", "whereClause", "selectStmt", "sourceRelation"):
        sub = getattr(node, attr, None)
        if sub is not None:
            _read_relations(sub, acc, LockMode.ACCESS_SHARE)
    acc.lock(target, LockMode.ROW_EXCLUSIVE)  # the target may also appear as a source
    if isinstance(node, ast.UpdateStmt | ast.DeleteStmt) and node.whereClause is None:
        acc.scan = True
        notes.append(f"touches every row of {target} in one transaction")


def _copy(node: Any, acc: EffectBuilder, notes: list[str], version: int) -> None:
    if node.relation is not None:
        mode = LockMode.ROW_EXCLUSIVE if node.is_from else LockMode.ACCESS_SHARE
        acc.lock(relation_name(node.relation), mode)
    elif node.query is not None:
        _read_relations(node.query, acc, LockMode.ACCESS_SHARE)


def _index(node: Any, acc: EffectBuilder, notes: list[str], version: int) -> None:
    table = relation_name(node.relation)
    if not node.relation.inh:  # CREATE INDEX … ON ONLY parent: nothing is built
        acc.lock(table, LockMode.SHARE)
        notes.append(f"ON ONLY: an invalid index on {table} alone, attached to later")
        return
    acc.builds_index()
    if node.concurrent:
        acc.lock(table, LockMode.SHARE_UPDATE_EXCLUSIVE)
        notes.append(f"builds the index with two scans of {table}; writes continue")
    else:
        acc.lock(table, LockMode.SHARE)
        notes.append(f"blocks writes to {table} for the whole index build")


def _reindex(node: Any, acc: EffectBuilder, notes: list[str], version: int) -> None:
    concurrent = has_option(node.params, "concurrently")
    name = relation_name(node.relation) if node.relation is not None else str(node.name)
    acc.builds_index()
    if concurrent:
        acc.lock(name, LockMode.SHARE_UPDATE_EXCLUSIVE)
    else:
        # SHARE on the table, ACCESS EXCLUSIVE on the index being rebuilt (reads using it wait).
        acc.lock(name, LockMode.SHARE)
        notes.append("ACCESS EXCLUSIVE on the index itself: queries using it wait")


def _drop(node: Any, acc: EffectBuilder, notes: list[str], version: int) -> None:
    names = [
        dotted_name(obj) if isinstance(obj, list | tuple) else str(obj) for obj in node.objects
    ]
    if node.removeType == ObjectType.OBJECT_INDEX:
        mode = LockMode.SHARE_UPDATE_EXCLUSIVE if node.concurrent else LockMode.ACCESS_EXCLUSIVE
        for name in names:
            acc.lock(name, mode, of_index_table=True)
        return
    if node.removeType in (
        ObjectType.OBJECT_TABLE,
        ObjectType.OBJECT_VIEW,
        ObjectType.OBJECT_MATVIEW,
        ObjectType.OBJECT_SEQUENCE,
        ObjectType.OBJECT_FOREIGN_TABLE,
    ):
        for name in names:
            acc.lock(name, LockMode.ACCESS_EXCLUSIVE)
    elif node.removeType in (
        ObjectType.OBJECT_TRIGGER,
        ObjectType.OBJECT_POLICY,
        ObjectType.OBJECT_RULE,
    ):
        # DROP TRIGGER name ON table: the last object element is the trigger, the rest the table.
        for obj in node.objects:
            parts = list(obj) if isinstance(obj, list | tuple) else [obj]
            if len(parts) > 1:
                acc.lock(dotted_name(parts[:-1]), LockMode.ACCESS_EXCLUSIVE)


def _rename(node: Any, acc: EffectBuilder, notes: list[str], version: int) -> None:
    if node.relation is None:
        return
    name = relation_name(node.relation)
    if node.renameType == ObjectType.OBJECT_INDEX and version >= 12:
        acc.lock(name, LockMode.SHARE_UPDATE_EXCLUSIVE)
    else:
        acc.lock(name, LockMode.ACCESS_EXCLUSIVE)


def _truncate(node: Any, acc: EffectBuilder, notes: list[str], version: int) -> None:
    for rel in node.relations or ():
        acc.lock(relation_name(rel), LockMode.ACCESS_EXCLUSIVE)
    notes.append("removes every row")


def _vacuum(node: Any, acc: EffectBuilder, notes: list[str], version: int) -> None:
    full = has_option(node.options, "full")
    mode = LockMode.ACCESS_EXCLUSIVE if full else LockMode.SHARE_UPDATE_EXCLUSIVE
    for rel in node.rels or ():
        acc.lock(relation_name(rel.relation), mode)
    # VACUUM reads the whole table; ANALYZE (is_vacuumcmd false) only samples it.
    acc.scan = bool(node.is_vacuumcmd)
    if full:
        acc.rewrites("yes")


def _cluster(node: Any, acc: EffectBuilder, notes: list[str], version: int) -> None:
    if node.relation is not None:
        acc.lock(relation_name(node.relation), LockMode.ACCESS_EXCLUSIVE)
    acc.rewrites("yes")


def _refresh(node: Any, acc: EffectBuilder, notes: list[str], version: int) -> None:
    mode = LockMode.EXCLUSIVE if node.concurrent else LockMode.ACCESS_EXCLUSIVE
    acc.lock(relation_name(node.relation), mode)
    acc.rewrites("yes")


def _trigger(node: Any, acc: EffectBuilder, notes: list[str], version: int) -> None:
    acc.lock(relation_name(node.relation), LockMode.SHARE_ROW_EXCLUSIVE)


def _lock(node: Any, acc: EffectBuilder, notes: list[str], version: int) -> None:
    for rel in node.relations or ():
        acc.lock(relation_name(rel), LockMode(int(node.mode)))
    acc.until_commit = True
    notes.append("held until the end of the transaction")


def _comment(node: Any, acc: EffectBuilder, notes: list[str], version: int) -> None:
    if node.objtype in (ObjectType.OBJECT_TABLE, ObjectType.OBJECT_COLUMN):
        parts = list(node.object) if isinstance(node.object, list | tuple) else []
        if node.objtype == ObjectType.OBJECT_COLUMN:
            parts = parts[:-1]
        if parts:
            acc.lock(dotted_name(parts), LockMode.SHARE_UPDATE_EXCLUSIVE)


def _view(node: Any, acc: EffectBuilder, notes: list[str], version: int) -> None:
    acc.lock(relation_name(node.view), LockMode.ACCESS_EXCLUSIVE)


def _policy(node: Any, acc: EffectBuilder, notes: list[str], version: int) -> None:
    acc.lock(relation_name(node.table), LockMode.ACCESS_EXCLUSIVE)


def _rule(node: Any, acc: EffectBuilder, notes: list[str], version: int) -> None:
    acc.lock(relation_name(node.relation), LockMode.ACCESS_EXCLUSIVE)


def _set_schema(node: Any, acc: EffectBuilder, notes: list[str], version: int) -> None:
    if node.relation is not None:
        acc.lock(relation_name(node.relation), LockMode.ACCESS_EXCLUSIVE)


def _create_statistics(node: Any, acc: EffectBuilder, notes: list[str], version: int) -> None:
    for rel in node.relations or ():
        if isinstance(rel, ast.RangeVar):
            acc.lock(relation_name(rel), LockMode.SHARE_UPDATE_EXCLUSIVE)


def _explain(node: Any, acc: EffectBuilder, notes: list[str], version: int) -> None:
    # EXPLAIN plans only (ACCESS SHARE at most); EXPLAIN ANALYZE runs the statement.
    if has_option(node.options, "analyze"):
        inner = statement_effect(node.query, version)
        for lock in inner.locks:
            acc.lock(lock.relation, lock.mode, of_index_table=lock.of_index_table)
        acc.rewrites(inner.rewrite)
        acc.scan = acc.scan or inner.scan
        acc.unknown = not inner.known
        notes.extend(inner.notes)
    else:
        _read_relations(node.query, acc, LockMode.ACCESS_SHARE)


def _declare_cursor(node: Any, acc: EffectBuilder, notes: list[str], version: int) -> None:
    _read_relations(node.query, acc, LockMode.ACCESS_SHARE)


def _no_table_lock(node: Any, acc: EffectBuilder, notes: list[str], version: int) -> None:
    if isinstance(node, ast.DoStmt):
        notes.append("DO block: its body is not analysed")
    elif transaction_block_change(node) == "open":
        notes.append("opens a transaction block")


_Handler = Callable[[Any, EffectBuilder, list[str], int], None]
_HANDLERS: dict[type, _Handler] = {
    ast.AlterTableStmt: alter_table,
    ast.CreateStmt: create_table,
    ast.CreateTableAsStmt: _create_table_as,
    ast.SelectStmt: _select,
    ast.InsertStmt: _dml,
    ast.UpdateStmt: _dml,
    ast.DeleteStmt: _dml,
    ast.MergeStmt: _dml,
    ast.CopyStmt: _copy,
    ast.IndexStmt: _index,
    ast.ReindexStmt: _reindex,
    ast.DropStmt: _drop,
    ast.RenameStmt: _rename,
    ast.TruncateStmt: _truncate,
    ast.VacuumStmt: _vacuum,
    ast.ClusterStmt: _cluster,
    ast.RefreshMatViewStmt: _refresh,
    ast.CreateTrigStmt: _trigger,
    ast.LockStmt: _lock,
    ast.CommentStmt: _comment,
    ast.ViewStmt: _view,
    ast.CreatePolicyStmt: _policy,
    ast.AlterPolicyStmt: _policy,
    ast.RuleStmt: _rule,
    ast.AlterObjectSchemaStmt: _set_schema,
    ast.CreateStatsStmt: _create_statistics,
    ast.ExplainStmt: _explain,
    ast.DeclareCursorStmt: _declare_cursor,
    ast.DoStmt: _no_table_lock,
    ast.TransactionStmt: _no_table_lock,
}

# Statement kinds that take no lock on an existing table: roles, schemas, types, functions,
# extensions, server-level objects, session commands. (A DO block's own statements are
# analysed one by one by the linter.)
NO_TABLE_LOCK: frozenset[type] = frozenset(
    {
        ast.VariableSetStmt,
        ast.VariableShowStmt,
        ast.CreateSeqStmt,
        ast.AlterSeqStmt,
        ast.CreateFunctionStmt,
        ast.AlterFunctionStmt,
        ast.CreateEnumStmt,
        ast.AlterEnumStmt,
        ast.CreateRangeStmt,
        ast.CompositeTypeStmt,
        ast.AlterTypeStmt,
        ast.DefineStmt,
        ast.CreateDomainStmt,
        ast.CreateExtensionStmt,
        ast.AlterExtensionContentsStmt,
        ast.CreateSchemaStmt,
        ast.GrantStmt,
        ast.GrantRoleStmt,
        ast.AlterDefaultPrivilegesStmt,
        ast.CreateRoleStmt,
        ast.AlterRoleStmt,
        ast.AlterRoleSetStmt,
        ast.DropRoleStmt,
        ast.AlterOwnerStmt,
        ast.AlterStatsStmt,
        ast.AlterCollationStmt,
        ast.CreateCastStmt,
        ast.CreateConversionStmt,
        ast.CreateOpClassStmt,
        ast.CreateOpFamilyStmt,
        ast.AlterOpFamilyStmt,
        ast.AlterOperatorStmt,
        ast.CreatePLangStmt,
        ast.CreateTransformStmt,
        ast.CreateAmStmt,
        ast.CreateEventTrigStmt,
        ast.AlterEventTrigStmt,
        ast.CreateFdwStmt,
        ast.AlterFdwStmt,
        ast.CreateForeignServerStmt,
        ast.AlterForeignServerStmt,
        ast.CreateForeignTableStmt,
        ast.ImportForeignSchemaStmt,
        ast.CreateUserMappingStmt,
        ast.AlterUserMappingStmt,
        ast.DropUserMappingStmt,
        ast.CreatePublicationStmt,
        ast.AlterPublicationStmt,
        ast.CreateSubscriptionStmt,
        ast.AlterSubscriptionStmt,
        ast.DropSubscriptionStmt,
        ast.AlterTSConfigurationStmt,
        ast.AlterTSDictionaryStmt,
        ast.AlterObjectDependsStmt,
        ast.AlterSystemStmt,
        ast.CreateTableSpaceStmt,
        ast.DropTableSpaceStmt,
        ast.AlterTableSpaceOptionsStmt,
        ast.CreatedbStmt,
        ast.DropdbStmt,
        ast.AlterDatabaseStmt,
        ast.AlterDatabaseSetStmt,
        ast.AlterDatabaseRefreshCollStmt,
        ast.CheckPointStmt,
        ast.ClosePortalStmt,
        ast.DeallocateStmt,
        ast.FetchStmt,
        ast.ListenStmt,
        ast.NotifyStmt,
        ast.UnlistenStmt,
        ast.LoadStmt,
        ast.DiscardStmt,
        ast.PrepareStmt,
        ast.ConstraintsSetStmt,
    }
)
# Statement kinds whose locks the SQL does not tell: the tables a domain constraint checks,
# every table of a tablespace, whatever a role owns, a prepared statement, a procedure or an
# extension's update script, a security label provider. The linter says so (a warning).
UNKNOWN_LOCKS: frozenset[type] = frozenset(
    {
        ast.AlterDomainStmt,
        ast.AlterTableMoveAllStmt,
        ast.DropOwnedStmt,
        ast.ReassignOwnedStmt,
        ast.ExecuteStmt,
        ast.CallStmt,
        ast.AlterExtensionStmt,
        ast.SecLabelStmt,
    }
)
# Node types named like statements that are never a statement of their own in migration SQL.
NOT_TOP_LEVEL: frozenset[type] = frozenset(
    {ast.RawStmt, ast.SetOperationStmt, ast.PLAssignStmt, ast.ReturnStmt, ast.ReplicaIdentityStmt}
)
