"""PostgreSQL I/O (psycopg 3): connections, the advisory lock, the history table, the lock-safe SQL executor, backfill batches."""
