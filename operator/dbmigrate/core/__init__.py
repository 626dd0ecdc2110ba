"""Pure decisions, no I/O: the step state machine, SQL statement analysis, lint rules,
analysis verdicts, backfill batch sizing, the rollout-complete rule."""
