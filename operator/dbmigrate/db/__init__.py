"""PostgreSQL I/O (psycopg 3): the migration lock and the history table (`history`), the
lock-safe SQL executor (`executor`), the backfill worker (`backfill/`), table sizes for the plan
(`catalog`) and how errors are told without the DSN (`errors`)."""
