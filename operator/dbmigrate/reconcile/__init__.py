"""The acting half of the operator: one DatabaseMigration carried to a terminal phase.

- `runner`: the loop between passes and the database session (connection, migration lock).
- `observe`: what a pass sees — Deployment, SQL, lint, history, Jobs, backfill progress, SLOs.
- `effects`: what a pass does — one function per `core.decide` Action.
- `slo`: one round of SLO measurements against Prometheus.
- `platform`: the seam to the world (`KubernetesPlatform`); `local`: `dbmigrate apply`'s.
"""
