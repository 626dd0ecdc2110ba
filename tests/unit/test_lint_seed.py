"""The seed workflow's own SQL (copied verbatim from its examples) through the linter.

Aspects covered: the "add email_verified" up file (BEGIN … COMMIT around CREATE INDEX
CONCURRENTLY is an error; the Phase-3 plain SET NOT NULL on users is flagged with the CHECK …
NOT VALID recipe; ADD COLUMN … DEFAULT FALSE is fine on PostgreSQL 15 but not on 10), its down
file (linted as rollback SQL), the address data migration (staging table created and dropped in
the same migration is exempt), the cleanup snippet (drops are errors outside the contract phase
and fine after an awaitRollout step), and the "Common Migration Patterns".
"""

from __future__ import annotations

import pytest

from dbmigrate.api.models import DatabaseMigrationSpec
from dbmigrate.core.lint import LintContext, check_migration, check_sql, count_blocking

# --- verbatim from the seed (migration-workflow.md) ------------------------------------------

UP_20240115120000 = r"""-- Migration: Add email_verified column to users table
-- Strategy: Multi-phase online migration (zero downtime)

-- Phase 1: Add nullable column
-- Safe: Can be rolled back instantly
-- Impact: Locks table briefly (< 100ms for 5M rows)

BEGIN;

-- Add column as nullable first (fast operation)
ALTER TABLE users
ADD COLUMN email_verified BOOLEAN DEFAULT FALSE;

-- Add index for queries (CONCURRENTLY to avoid locks)
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_users_email_verified
ON users(email_verified)
WHERE email_verified = TRUE;

COMMIT;

-- Phase 2: Backfill existing data
-- Safe: Can be interrupted and restarted
-- Impact: I/O intensive, run during low traffic

-- Update in batches to avoid long-running transactions
DO $$
DECLARE
  batch_size INTEGER := 10000;
  rows_updated INTEGER;
  total_updated INTEGER := 0;
BEGIN
  LOOP
    -- Update batch
    WITH batch AS (
      SELECT id FROM users
      WHERE email_verified IS NULL
      LIMIT batch_size
    )
    UPDATE users u
    SET email_verified = (u.email_confirmed_at IS NOT NULL)
    FROM batch b
    WHERE u.id = b.id;

    GET DIAGNOSTICS rows_updated = ROW_COUNT;
    total_updated := total_updated + rows_updated;

    -- Log progress
    RAISE NOTICE 'Updated % rows (total: %)', rows_updated, total_updated;

    -- Exit if no more rows
    EXIT WHEN rows_updated = 0;

    -- Sleep to reduce I/O pressure (100ms)
    PERFORM pg_sleep(0.1);
  END LOOP;

  RAISE NOTICE 'Backfill complete. Total rows: %', total_updated;
END $$;

-- Phase 3: Add NOT NULL constraint
-- WARNING: Point of no return after this step
-- Impact: Fast operation (metadata only with valid check)

BEGIN;

-- Add constraint (validates all data)
ALTER TABLE users
ALTER COLUMN email_verified SET NOT NULL;

-- Add constraint for default value
ALTER TABLE users
ALTER COLUMN email_verified SET DEFAULT FALSE;

COMMIT;

-- Verify migration
DO $$
DECLARE
  null_count INTEGER;
BEGIN
  SELECT COUNT(*) INTO null_count
  FROM users
  WHERE email_verified IS NULL;

  IF null_count > 0 THEN
    RAISE EXCEPTION 'Migration verification failed: % NULL values found', null_count;
  END IF;

  RAISE NOTICE 'Migration verified successfully';
END $$;
"""

DOWN_20240115120000 = r"""-- Rollback: Remove email_verified column
-- WARNING: This will lose data

BEGIN;

-- Remove index
DROP INDEX IF EXISTS idx_users_email_verified;

-- Remove column
ALTER TABLE users DROP COLUMN IF EXISTS email_verified;

COMMIT;

-- Verify rollback
DO $$
DECLARE
  column_exists BOOLEAN;
BEGIN
  SELECT EXISTS (
    SELECT 1 FROM information_schema.columns
    WHERE table_name = 'users' AND column_name = 'email_verified'
  ) INTO column_exists;

  IF column_exists THEN
    RAISE EXCEPTION 'Rollback failed: Column still exists';
  END IF;

  RAISE NOTICE 'Rollback completed successfully';
END $$;
"""

ADDRESS_DATA_MIGRATION = r"""-- Migration: Normalize address data (split into components)

-- Create temporary staging table
CREATE TABLE IF NOT EXISTS users_address_staging AS
SELECT
  id,
  address_full,
  -- Extract components using regex
  (regexp_matches(address_full, '^([^,]+),'))[1] AS street,
  (regexp_matches(address_full, ', ([^,]+),'))[1] AS city,
  (regexp_matches(address_full, ', ([A-Z]{2}) '))[1] AS state,
  (regexp_matches(address_full, ' (\d{5})$'))[1] AS zip
FROM users
WHERE address_full IS NOT NULL;

-- Validate extracted data
DO $$
DECLARE
  invalid_count INTEGER;
BEGIN
  SELECT COUNT(*) INTO invalid_count
  FROM users_address_staging
  WHERE street IS NULL OR city IS NULL;

  IF invalid_count > 0 THEN
    RAISE WARNING 'Found % rows with invalid address parsing', invalid_count;
  END IF;
END $$;

-- Create new columns
ALTER TABLE users
  ADD COLUMN street VARCHAR(255),
  ADD COLUMN city VARCHAR(100),
  ADD COLUMN state CHAR(2),
  ADD COLUMN zip CHAR(5);

-- Copy validated data
UPDATE users u
SET
  street = s.street,
  city = s.city,
  state = s.state,
  zip = s.zip
FROM users_address_staging s
WHERE u.id = s.id;

-- Drop staging table
DROP TABLE users_address_staging;

-- Drop old column (after application deployment)
-- ALTER TABLE users DROP COLUMN address_full;
"""

CLEANUP = r"""-- Remove old columns (if renamed)
ALTER TABLE users DROP COLUMN IF EXISTS old_column_name;

-- Remove temporary tables
DROP TABLE IF EXISTS migration_staging;

-- Vacuum table to reclaim space
VACUUM ANALYZE users;

-- Update statistics
ANALYZE users;
"""

PATTERN_1_NULLABLE_COLUMN = r"""-- Safe, fast, zero downtime
ALTER TABLE users ADD COLUMN new_column VARCHAR(255);
"""

PATTERN_2_NOT_NULL_COLUMN = r"""-- Step 1: Add nullable with default
ALTER TABLE users ADD COLUMN new_column VARCHAR(255) DEFAULT 'default_value';

-- Step 2: Backfill existing rows (in batches)
-- (see backfill pattern above)

-- Step 3: Add NOT NULL constraint
ALTER TABLE users ALTER COLUMN new_column SET NOT NULL;
"""

PATTERN_3_RENAME_COLUMN = r"""-- Step 1: Add new column
ALTER TABLE users ADD COLUMN new_name VARCHAR(255);

-- Step 2: Copy data
UPDATE users SET new_name = old_name;

-- Step 3: Deploy application (reads from both columns)

-- Step 4: Deploy application (writes to both columns)

-- Step 5: Verify data sync

-- Step 6: Deploy application (uses only new column)

-- Step 7: Drop old column
ALTER TABLE users DROP COLUMN old_name;
"""

PATTERN_4_CHANGE_TYPE = r"""-- Step 1: Add new column with new type
ALTER TABLE users ADD COLUMN email_new CITEXT;

-- Step 2: Copy and transform data
UPDATE users SET email_new = LOWER(email);

-- Step 3: Swap columns (see rename pattern)

-- Step 4: Drop old column
"""

PATTERN_5_INDEX = r"""-- Use CONCURRENTLY to avoid locks
CREATE INDEX CONCURRENTLY idx_users_email ON users(email);

-- Verify index is valid
SELECT indexname, indisvalid
FROM pg_indexes
JOIN pg_class ON indexname = relname
WHERE indexname = 'idx_users_email';
"""

# ---------------------------------------------------------------------------------------------

Expected = list[tuple[str, str, int]]  # (rule, severity, line)


@pytest.mark.parametrize(
    ("sql", "direction", "expected"),
    [
        pytest.param(
            UP_20240115120000,
            "up",
            [
                ("transaction-control", "error", 8),
                # Inside the BEGIN block but before CONCURRENTLY: a retry would re-run it.
                ("prefer-robust-stmts", "warning", 11),
                ("ban-concurrent-index-creation-in-transaction", "error", 15),
                ("transaction-control", "error", 19),
                # The DO loop never COMMITs: all its batches are one transaction.
                ("prefer-backfill-step", "error", 34),
                ("transaction-control", "error", 64),
                ("adding-not-nullable-field", "error", 67),
                ("transaction-control", "error", 74),
            ],
            id="up-file",
        ),
        pytest.param(
            DOWN_20240115120000,
            "down",
            [
                ("transaction-control", "error", 4),
                ("require-concurrent-index-deletion", "warning", 7),
                ("transaction-control", "error", 12),
            ],
            id="down-file",
        ),
        pytest.param(
            ADDRESS_DATA_MIGRATION,
            "up",
            [
                ("prefer-text-field", "warning", 31),
                ("prefer-text-field", "warning", 31),
                ("ban-char-field", "warning", 31),
                ("ban-char-field", "warning", 31),
            ],
            id="address-data-migration",
        ),
        pytest.param(
            CLEANUP,
            "up",
            [
                ("ban-drop-column", "error", 2),
                ("strong-locks-on-several-tables", "warning", 5),
                ("ban-drop-table", "error", 5),
            ],
            id="cleanup",
        ),
        pytest.param(
            PATTERN_1_NULLABLE_COLUMN,
            "up",
            [("prefer-text-field", "warning", 2)],
            id="pattern-1-nullable-column",
        ),
        pytest.param(
            PATTERN_2_NOT_NULL_COLUMN,
            "up",
            [("prefer-text-field", "warning", 2), ("adding-not-nullable-field", "error", 8)],
            id="pattern-2-not-null-column",
        ),
        pytest.param(
            PATTERN_3_RENAME_COLUMN,
            "up",
            [
                ("prefer-text-field", "warning", 2),
                ("prefer-backfill-step", "error", 5),
                ("ban-drop-column", "error", 16),
            ],
            id="pattern-3-rename-in-one-go",
        ),
        pytest.param(
            PATTERN_4_CHANGE_TYPE,
            "up",
            [("prefer-backfill-step", "error", 5)],
            id="pattern-4-change-type",
        ),
        pytest.param(
            PATTERN_5_INDEX,
            "up",
            # The verification SELECT is a later transaction: a retry re-runs the CREATE INDEX.
            [("prefer-robust-stmts", "warning", 2)],
            id="pattern-5-index",
        ),
    ],
)
def test_seed_snippet(sql: str, direction: str, expected: Expected) -> None:
    context = LintContext(direction="down") if direction == "down" else LintContext()
    findings = check_sql(sql, context=context)
    assert [(f.rule, f.severity, f.line) for f in findings] == expected


def test_phase_3_set_not_null_gets_the_check_recipe() -> None:
    finding = next(f for f in check_sql(UP_20240115120000) if f.rule == "adding-not-nullable-field")
    message = finding.message
    assert message.startswith("`ALTER TABLE users ALTER COLUMN email_verified SET NOT NULL`")
    for part in (
        "ACCESS EXCLUSIVE on users",
        "ADD CONSTRAINT users_email_verified_not_null CHECK (email_verified IS NOT NULL) NOT VALID",
        "VALIDATE CONSTRAINT users_email_verified_not_null",
        "SHARE UPDATE EXCLUSIVE",
        "DROP CONSTRAINT users_email_verified_not_null",
    ):
        assert part in message


@pytest.mark.parametrize(
    ("version", "flagged"),
    [
        pytest.param(15, False, id="pg15"),
        pytest.param(11, False, id="pg11"),
        pytest.param(10, True, id="pg10"),
    ],
)
def test_add_column_default_false_depends_on_the_server(version: int, flagged: bool) -> None:
    findings = check_sql(UP_20240115120000, context=LintContext(server_version=version))
    volatile = [f for f in findings if f.rule == "adding-field-with-volatile-default"]
    assert bool(volatile) is flagged
    if flagged:
        assert volatile[0].line == 11
        assert "PostgreSQL 10 (before 11)" in volatile[0].message


def test_down_file_after_its_up_file_drops_a_known_index() -> None:
    context = LintContext()
    check_sql(UP_20240115120000, context=context)
    findings = check_sql(DOWN_20240115120000, context=context.for_rollback())
    drop = next(f for f in findings if f.rule == "require-concurrent-index-deletion")
    # The up file created the index on users, so the message names the table.
    assert "ACCESS EXCLUSIVE on users" in drop.message
    assert "rollback SQL" in drop.message


def _seed_as_migration(contract: str) -> DatabaseMigrationSpec:
    """The seed's multi-phase plan as DatabaseMigration steps."""
    return DatabaseMigrationSpec.model_validate(
        {
            "migrationId": "20240115120000_add_email_verified_column",
            "database": {"dsnSecretRef": {"name": "db", "key": "dsn"}},
            "target": {"deployment": "app"},
            "steps": [
                {
                    "name": "add-column",
                    "sql": {
                        "up": "ALTER TABLE users\nADD COLUMN email_verified BOOLEAN DEFAULT FALSE;",
                        "down": "ALTER TABLE users DROP COLUMN IF EXISTS email_verified;",
                    },
                },
                {
                    "name": "index",
                    "sql": {
                        "up": "CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_users_email_verified\n"
                        "ON users(email_verified)\nWHERE email_verified = TRUE;",
                        "down": "DROP INDEX CONCURRENTLY IF EXISTS idx_users_email_verified;",
                    },
                },
                {
                    "name": "backfill",
                    "backfill": {
                        "table": "users",
                        "set": "email_verified = (email_confirmed_at IS NOT NULL)",
                        "where": "email_verified IS NULL",
                    },
                },
                {"name": "release", "awaitRollout": {"image": "app:v2"}},
                {
                    "name": "contract",
                    "pointOfNoReturn": True,
                    "sql": {"up": contract, "transaction": "Never"},
                },
            ],
        }
    )


def test_seed_plan_as_a_migration_flags_only_phase_3() -> None:
    findings = check_migration(
        _seed_as_migration(
            "ALTER TABLE users\nALTER COLUMN email_verified SET NOT NULL;\n"
            "ALTER TABLE users\nALTER COLUMN email_verified SET DEFAULT FALSE;"
        )
    )
    assert [(f.step, f.rule) for f in findings] == [("contract", "adding-not-nullable-field")]
    assert count_blocking(findings) == 1


def test_seed_plan_with_the_check_recipe_is_clean() -> None:
    findings = check_migration(
        _seed_as_migration(
            "ALTER TABLE users DROP CONSTRAINT IF EXISTS email_verified_set,\n"
            "  ADD CONSTRAINT email_verified_set CHECK (email_verified IS NOT NULL) NOT VALID;\n"
            "ALTER TABLE users VALIDATE CONSTRAINT email_verified_set;\n"
            "ALTER TABLE users ALTER COLUMN email_verified SET NOT NULL;\n"
            "ALTER TABLE users DROP CONSTRAINT IF EXISTS email_verified_set;"
        )
    )
    assert findings == []
