"""The rehearsal of a migration on a scratch copy of its database.

- `scratch`: creating and dropping the scratch database; the PostgreSQL client tools
  (`pg_dump`, `psql`) run with the connection in their environment; `RehearsalUnavailable`;
- `copying`: the real database's schema and sample rows into the scratch one;
- `running`: `rehearse`, the sequence (up, verify, down, schema compared, up again) and its
  verdict as a `RehearsalStatus`.

What runs in which order is decided in `dbmigrate.core.rehearsal`; the schema comparison is
`dbmigrate.core.schema_diff` over snapshots read by `dbmigrate.db.snapshot`. Other layers
import from this package, not from its modules.
"""

from dbmigrate.db.rehearsal.running import RehearsalRequest, rehearse
from dbmigrate.db.rehearsal.scratch import RehearsalUnavailable, drop_scratch

__all__ = ["RehearsalRequest", "RehearsalUnavailable", "drop_scratch", "rehearse"]
