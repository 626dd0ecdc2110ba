"""Pure decisions, no I/O: the state machine (`decide`; its Observation and Actions in
`actions`, the rollback phases in `rollback`), SLO verdicts (`slo`), backfill batch sizing
(`batching`), Job builders (`jobs`), rollout rules (`rollout`), step checksums and limits
(`steps`), the status patch and conditions (`status`, `conditions`), and the SQL side in layers:
`plan` -> `lint` -> `locks` -> `statements` -> `sqlast`."""
