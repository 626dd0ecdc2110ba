"""PostgreSQL I/O (psycopg 3): the migration lock, the history table, the lock-safe SQL
executor, backfill batches."""
