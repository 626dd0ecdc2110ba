"""The vocabulary of lock analysis: PostgreSQL's table-level lock modes, the lock a statement
takes on one relation, a statement's whole table-level effect, and the builder the statement
handlers fill in (`effect`, `tables`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Literal


class LockMode(IntEnum):
    """PostgreSQL's table-level lock modes, weakest first (the values are LOCK TABLE's codes)."""

    ACCESS_SHARE = 1
    ROW_SHARE = 2
    ROW_EXCLUSIVE = 3
    SHARE_UPDATE_EXCLUSIVE = 4
    SHARE = 5
    SHARE_ROW_EXCLUSIVE = 6
    EXCLUSIVE = 7
    ACCESS_EXCLUSIVE = 8

    @property
    def label(self) -> str:
        """As PostgreSQL's documentation spells it: `ACCESS EXCLUSIVE`."""
        return self.name.replace("_", " ")

    @property
    def blocks_reads(self) -> bool:
        """Plain SELECTs (ACCESS SHARE) wait for it."""
        return self is LockMode.ACCESS_EXCLUSIVE

    @property
    def blocks_writes(self) -> bool:
        """INSERT/UPDATE/DELETE (ROW EXCLUSIVE) wait for it."""
        return self >= LockMode.SHARE

    @property
    def blocks(self) -> str:
        """What the application's queries on the table wait for while the lock is held."""
        if self.blocks_reads:
            return "reads and writes"
        if self.blocks_writes:
            return "writes"
        return "no reads or writes (only other DDL, VACUUM and index builds)"


Category = Literal[
    "DDL", "DML", "index", "constraint", "maintenance", "transaction control", "other"
]
Rewrite = Literal["no", "yes", "maybe"]
# For how long a statement holds its strongest lock: a catalog change ("instant"), a read of
# every row ("scan"), an index build, a copy of the table ("rewrite"), until the transaction
# ends (LOCK TABLE), or not known (a statement kind dbmigrate's lock table has no entry for).
Holds = Literal["instant", "scan", "index build", "rewrite", "transaction", "unknown"]


@dataclass(frozen=True)
class RelationLock:
    """A lock on one relation. For `DROP INDEX` the relation named is the index: the lock is
    on the table it belongs to, which the SQL alone does not say (`of_index_table`)."""

    relation: str
    mode: LockMode
    of_index_table: bool = False

    @property
    def where(self) -> str:
        return f"the table of index {self.relation}" if self.of_index_table else self.relation


@dataclass(frozen=True)
class StatementEffect:
    """The table-level consequences of one statement."""

    category: Category
    locks: tuple[RelationLock, ...] = ()
    rewrite: Rewrite = "no"
    # Reads every row of the (strongest-locked) table while holding the lock: a validation
    # scan, an index build, a full UPDATE.
    scan: bool = False
    notes: tuple[str, ...] = ()
    index_build: bool = False  # the scan builds an index
    until_commit: bool = False  # the lock is taken for the rest of the transaction (LOCK)
    known: bool = True  # False: the lock table has no entry; the locks are assumed

    @property
    def holds(self) -> Holds:
        """For how long the strongest lock is held."""
        if not self.known:
            return "unknown"
        if self.rewrite != "no":
            return "rewrite"
        if self.scan:
            return "index build" if self.index_build else "scan"
        if self.until_commit:
            return "transaction"
        return "instant"

    @property
    def strongest(self) -> LockMode | None:
        return max((lock.mode for lock in self.locks), default=None)

    @property
    def relations(self) -> tuple[str, ...]:
        """Relations in first-mention order, without duplicates."""
        return tuple(dict.fromkeys(lock.relation for lock in self.locks))

    @property
    def long_running(self) -> bool:
        """The lock is held for time proportional to the table's size, not just a moment."""
        return self.rewrite != "no" or self.scan

    def describe_lock(self) -> str:
        """`ACCESS EXCLUSIVE (brief)`, `SHARE (whole index build)`, or `none`."""
        mode = self.strongest
        if mode is None:
            return "none"
        if self.rewrite == "yes":
            return f"{mode.label} (whole table rewrite)"
        if self.rewrite == "maybe":
            return f"{mode.label} (may rewrite the whole table)"
        if self.scan:
            return f"{mode.label} (whole table scan)"
        if mode <= LockMode.ROW_EXCLUSIVE:
            return mode.label
        return f"{mode.label} (brief)"


@dataclass
class EffectBuilder:
    """What the handlers found so far: the strongest lock per relation (first-mention order),
    the worst rewrite, and whether a whole table is read."""

    locks: dict[str, RelationLock]
    rewrite: Rewrite = "no"
    scan: bool = False
    index_build: bool = False
    until_commit: bool = False
    unknown: bool = False

    def lock(self, relation: str, mode: LockMode, *, of_index_table: bool = False) -> None:
        held = self.locks.get(relation)
        if held is None or mode > held.mode:
            self.locks[relation] = RelationLock(relation, mode, of_index_table)

    def builds_index(self) -> None:
        self.scan = True
        self.index_build = True

    def rewrites(self, value: Rewrite) -> None:
        order = {"no": 0, "maybe": 1, "yes": 2}
        if order[value] > order[self.rewrite]:
            self.rewrite = value
