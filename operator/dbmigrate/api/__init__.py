"""The user contract: pydantic models of the DatabaseMigration spec and status, condition
reasons, CRD rendering."""
