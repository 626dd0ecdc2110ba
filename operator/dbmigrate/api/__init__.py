"""The user contract: pydantic models of the DatabaseMigration spec and status, condition and
event reasons, CRD rendering."""
