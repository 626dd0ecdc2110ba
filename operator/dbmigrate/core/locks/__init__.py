"""What a statement does to the tables it touches: the lock it takes, on which relations,
whether it rewrites the table and whether it reads every row while holding that lock.

The lock levels follow PostgreSQL's documentation ("Explicit Locking", table-level lock modes,
and the lock level given for each ALTER TABLE sub-command). Everything here is a pure function
of a pglast AST node and the server's major version; nothing is looked up in a database, so
when the answer depends on what is in the database (the current type of a column, the
volatility of a user-defined function) the effect says so ("maybe", notes) instead of guessing.

`modes` holds the vocabulary (lock modes, effects), `rewrites` the DEFAULT volatility rules,
`tables` the ALTER/CREATE TABLE cases and `effect` the entry points and every other statement.
"""

from dbmigrate.core.locks.effect import (
    DEFAULT_SERVER_VERSION,
    rewrites_table,
    statement_category,
    statement_effect,
    strongest_lock,
)
from dbmigrate.core.locks.modes import Category, LockMode, RelationLock, Rewrite, StatementEffect
from dbmigrate.core.locks.rewrites import (
    NON_VOLATILE_FUNCTIONS,
    VOLATILE_FUNCTIONS,
    Volatility,
    add_column_rewrite,
    default_volatility,
)

__all__ = [
    "DEFAULT_SERVER_VERSION",
    "NON_VOLATILE_FUNCTIONS",
    "VOLATILE_FUNCTIONS",
    "Category",
    "LockMode",
    "RelationLock",
    "Rewrite",
    "StatementEffect",
    "Volatility",
    "add_column_rewrite",
    "default_volatility",
    "rewrites_table",
    "statement_category",
    "statement_effect",
    "strongest_lock",
]
