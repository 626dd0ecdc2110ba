"""The migration's record as Markdown, the seed's way (Steps 5.3 and 6.3).

`Succeeded` gives the migration log entry: when, how long (per step), rows backfilled, lock
retries and blocking episodes, the SLOs before and after, whether a rollback is still available,
the backup, and the post-deployment watch's findings when there are any. `RolledBack` and
`Failed` give the post-mortem draft: "What Happened" filled in from the facts (the trigger, the
breaching measurements with their timestamps, the step under way, the rollout undone, what was
reverted and what was left applied), and the questions the seed asks left to the team.

Only facts from `RecordFacts` are written; what was not measured says so.
"""

from __future__ import annotations

from dbmigrate.api.postdeploy import PostDeployStatus
from dbmigrate.core.record.facts import MetricFacts, RecordFacts, StepFacts

NOT_RECORDED = "—"
# What the team writes: left as placeholders, never filled in by the operator.
TO_BE_WRITTEN = "_To be written by the team._"


def render_record(facts: RecordFacts) -> str:
    if facts.outcome == "Succeeded":
        return render_log_entry(facts)
    return render_post_mortem(facts)


# --- Succeeded: the migration log entry ----------------------------------------------------------


def render_log_entry(facts: RecordFacts) -> str:
    day = (facts.finished_at or facts.started_at or "")[:10] or "undated"
    lines = [
        "# Migration Log",
        "",
        f"## {day}: {_description(facts.migration_id)}",
        "",
        f"- Migration: `{facts.migration_id}` ({facts.resource})",
        f"- Outcome: Succeeded{_because(facts)}",
        f"- Started: {facts.started_at or NOT_RECORDED}",
        f"- Finished: {facts.finished_at or NOT_RECORDED}",
        f"- Duration: {duration(facts.seconds)}",
        f"- Rows backfilled: {_rows_backfilled(facts)}",
        f"- Lock waits: {_lock_waits(facts)}",
        f"- Impact: {_impact(facts)}",
        f"- Rollback: {rollback_availability(facts)}",
    ]
    if facts.backup is not None:
        lines.append(f"- Backup: {_backup(facts)}")
    lines += ["", *_steps_table(facts), *_slo_section(facts)]
    if facts.post_deploy is not None:
        lines += _post_deploy_section(facts.post_deploy)
    return "\n".join(lines).rstrip() + "\n"


def rollback_availability(facts: RecordFacts) -> str:
    """ "Available (down SQL of steps …)" or why not, from the steps still applied."""
    applied = facts.applied
    ponr = next((s for s in applied if s.point_of_no_return), None)
    if ponr is not None:
        return (
            f"Not available: step `{ponr.name}` is the point of no return and has been applied "
            "(roll forward, or restore from a backup)"
        )
    irreversible = [s for s in applied if not s.reversible]
    if irreversible:
        names = ", ".join(f"`{s.name}`" for s in irreversible)
        return f"Not available: step(s) {names} have no down migration"
    downs = [s.name for s in reversed(applied) if s.has_down_sql]
    if not downs:
        return "Available (no step has SQL to revert)"
    names = ", ".join(f"`{n}`" for n in downs)
    return f"Available (down SQL of step{'s' if len(downs) > 1 else ''} {names}, in that order)"


# --- RolledBack / Failed: the post-mortem draft --------------------------------------------------


def render_post_mortem(facts: RecordFacts) -> str:
    title = "Rollback Post-Mortem" if facts.rollback is not None else "Failure Post-Mortem"
    lines = [
        f"## {title}: {facts.migration_id}",
        "",
        f"- Migration: `{facts.migration_id}` ({facts.resource})",
        f"- Outcome: {facts.outcome}{_because(facts)}",
        f"- Started: {facts.started_at or NOT_RECORDED}",
        f"- Finished: {facts.finished_at or NOT_RECORDED}",
        "",
        "### What Happened",
        "",
        *_what_happened(facts),
        "",
        *_steps_table(facts, level="####"),
        *_slo_section(facts, level="####"),
    ]
    if facts.post_deploy is not None:
        lines += _post_deploy_section(facts.post_deploy, level="####")
    lines += [
        "### Root Cause",
        "",
        TO_BE_WRITTEN,
        "",
        "### Why We Missed It",
        "",
        TO_BE_WRITTEN,
        "",
        "### Action Items",
        "",
        "- [ ] _To be decided by the team._",
        "",
        "### Next Attempt",
        "",
        TO_BE_WRITTEN,
    ]
    return "\n".join(lines).rstrip() + "\n"


def _what_happened(facts: RecordFacts) -> list[str]:
    rb = facts.rollback
    lines = []
    if rb is not None:
        lines.append(
            f"- Trigger: {rb.trigger or NOT_RECORDED}: {_one_line(rb.reason) or NOT_RECORDED}"
        )
        lines.append(f"- Rollback started: {rb.started_at or NOT_RECORDED}")
    else:
        lines.append(
            f"- Trigger: {facts.reason or NOT_RECORDED}: {_one_line(facts.message) or NOT_RECORDED}"
        )
    breaching = [m for m in facts.metrics if m.result == "Failed"]
    findings = facts.post_deploy.findings if facts.post_deploy is not None else None
    regressions = [f for f in findings or [] if f.kind == "QueryRegression"]
    if breaching or regressions:
        lines.append("- Breaching measurements:")
        lines += [f"  - {_measurement(m)}" for m in breaching]
        lines += [
            f"  - query regression at {f.at} (post-deployment watch): {_one_line(f.message)}"
            for f in regressions
        ]
    elif facts.analysed:
        lines.append("- Breaching measurements: none (the last analysis round breached no SLO)")
    else:
        lines.append("- Breaching measurements: none (no analysis configured)")
    running = rb.step if rb is not None and rb.step else facts.current_step
    lines.append(f"- Step running at the time: {_step_at_the_time(facts, running)}")
    for step in facts.steps:
        if step.state == "Failed":
            why = f" ({step.reason})" if step.reason else ""
            lines.append(f"- Step `{step.name}` failed{why}: {_one_line(step.message) or ''}")
    lines.append(f"- Rollout: {_rollout(facts)}")
    if rb is not None and rb.argo_cd is not None and rb.argo_cd.message:
        lines.append(f"- Argo CD: {_one_line(rb.argo_cd.message)}")
    reverted = rb.steps_reverted if rb is not None else None
    lines.append(
        "- Reverted: "
        + (
            ", ".join(f"`{s}`" for s in reverted) + " (newest first)"
            if reverted
            else "nothing (no step was reverted)"
        )
    )
    lines.append(f"- Left applied: {_left_applied(facts)}")
    if facts.backup is not None:
        lines.append(f"- Backup: {_backup(facts)}")
    return lines


def _step_at_the_time(facts: RecordFacts, name: str | None) -> str:
    step = next((s for s in facts.steps if s.name == name), None)
    if step is None:
        return "none (before the first step)" if name is None else f"`{name}`"
    since = f", started {step.started_at}" if step.started_at else ""
    return f"`{step.name}` (step {step.number}, {step.kind}{since})"


def _rollout(facts: RecordFacts) -> str:
    rb = facts.rollback
    if rb is not None and rb.rollout_undone:
        return f"undone to revision {rb.undone_to_revision or NOT_RECORDED}"
    if rb is not None and rb.rollout_kept:
        return f"kept: {_one_line(rb.rollout_kept)}"
    if facts.target_revision is None:
        return "not undone (no target deployment was watched)"
    return f"not undone (the target was at revision {facts.target_revision} at the start)"


def _left_applied(facts: RecordFacts) -> str:
    applied = facts.applied
    if not applied:
        return "nothing (no step is still applied)"
    ponr = next((s for s in applied if s.point_of_no_return), None)
    names = ", ".join(
        f"`{s.name}`"
        + (" (point of no return)" if s.point_of_no_return else "")
        + ("" if s.reversible else " (no down migration)")
        for s in applied
    )
    if ponr is not None:
        return f"{names}: past the point of no return `{ponr.name}`, not rolled back"
    return names


# --- shared sections -----------------------------------------------------------------------------


def _steps_table(facts: RecordFacts, level: str = "###") -> list[str]:
    lines = [
        f"{level} Steps",
        "",
        "| # | Step | Kind | State | Started | Finished | Duration | Rows | Lock retries "
        "| Blocking episodes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [_step_row(s) for s in facts.steps]
    return [*lines, ""]


def _step_row(s: StepFacts) -> str:
    cells = [
        str(s.number),
        f"`{s.name}`" + (" (point of no return)" if s.point_of_no_return else ""),
        s.kind,
        s.state,
        s.started_at or NOT_RECORDED,
        s.finished_at or NOT_RECORDED,
        duration(s.seconds) if s.started_at and s.finished_at else NOT_RECORDED,
        count(s.rows) if s.rows is not None else NOT_RECORDED,
        str(s.lock_retries),
        str(s.blocking_episodes),
    ]
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _slo_section(facts: RecordFacts, level: str = "###") -> list[str]:
    lines = [f"{level} Application SLOs", ""]
    if not facts.analysed:
        return [*lines, "Not measured: the migration has no `spec.analysis`.", ""]
    if not facts.metrics:
        return [*lines, "No measurement was recorded.", ""]
    lines += [
        "| Metric | Baseline | Last value | Threshold | Result | Measured at |",
        "|---|---|---|---|---|---|",
    ]
    for m in facts.metrics:
        cells = [
            f"`{m.metric}`",
            number(m.baseline),
            number(m.value),
            m.threshold or NOT_RECORDED,
            m.result or "not measured",
            m.at or NOT_RECORDED,
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    db = facts.database
    if db is not None:
        lag = (
            f", replication lag {number(db.replication_lag_seconds)} s"
            if db.replication_lag_seconds is not None
            else ""
        )
        lines += [
            "",
            f"The database at {db.measured_at or 'the last measurement'}: "
            f"{db.blocked_backends} session(s) waiting for a lock, longest lock wait "
            f"{number(db.longest_lock_wait_seconds)} s{lag}.",
        ]
    return [*lines, ""]


def _post_deploy_section(pd: PostDeployStatus, level: str = "###") -> list[str]:
    lines = [f"{level} Post-deployment watch", ""]
    window = f"{pd.started_at or NOT_RECORDED} to {pd.finished_at or pd.ends_at or NOT_RECORDED}"
    lines.append(f"- State: {pd.state} ({window})")
    if pd.statements_available is False:
        lines.append("- Statements: not watched (pg_stat_statements is not installed)")
    if pd.message:
        lines.append(f"- {_one_line(pd.message)}")
    findings = pd.findings or []
    if findings:
        lines.append("- Findings:")
        lines += [f"  - {f.kind} at {f.at}: {_one_line(f.message)}" for f in findings]
    else:
        lines.append("- Findings: none so far" if pd.state == "Watching" else "- Findings: none")
    if pd.statements:
        lines += [
            "",
            "| Statement | Calls | Mean ms | Baseline mean ms | Ratio | Max ms |",
            "|---|---|---|---|---|---|",
        ]
        for st in pd.statements:
            cells = [
                f"`{_one_line(st.query)}`",
                count(st.calls),
                number(st.mean_ms),
                number(st.baseline_mean_ms) if st.baseline_mean_ms is not None else "new",
                number(st.ratio),
                number(st.max_ms),
            ]
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    if pd.indexes:
        lines += ["", "| New index | Table | Scans |", "|---|---|---|"]
        lines += [f"| `{i.name}` | `{i.table}` | {count(i.scans)} |" for i in pd.indexes]
    if pd.cleanup:
        lines += ["", "Cleanup steps:"]
        lines += [
            f"- `{c.name}`: {c.state}" + (f" ({_one_line(c.message)})" if c.message else "")
            for c in pd.cleanup
        ]
    return [*lines, ""]


# --- small parts ---------------------------------------------------------------------------------


def _description(migration_id: str) -> str:
    """`20240115120000_add_email_verified_column` -> `add_email_verified_column`."""
    head, sep, rest = migration_id.partition("_")
    return rest if sep and head.isdigit() and rest else migration_id


def _because(facts: RecordFacts) -> str:
    if facts.reason and facts.reason != facts.outcome:
        return f" ({facts.reason})"
    return ""


def _rows_backfilled(facts: RecordFacts) -> str:
    per_step = [s for s in facts.steps if s.rows is not None]
    if not per_step:
        return "none (no backfill step)"
    parts = ", ".join(f"`{s.name}` {count(s.rows or 0)}" for s in per_step)
    return f"{count(facts.rows_backfilled or 0)} ({parts})"


def _lock_waits(facts: RecordFacts) -> str:
    retries = sum(s.lock_retries for s in facts.steps)
    episodes = sum(s.blocking_episodes for s in facts.steps)
    busy = [
        f"`{s.name}` {s.lock_retries}/{s.blocking_episodes}"
        for s in facts.steps
        if s.lock_retries or s.blocking_episodes
    ]
    where = f" (per step, retries/episodes: {', '.join(busy)})" if busy else ""
    return (
        f"{retries} lock retr{'y' if retries == 1 else 'ies'} (lock_timeout reached), "
        f"{episodes} blocking episode{'' if episodes == 1 else 's'} (application queries "
        f"waited past maxBlockedDuration){where}"
    )


def _impact(facts: RecordFacts) -> str:
    if not facts.analysed:
        return "not measured (no spec.analysis)"
    measured = [m for m in facts.metrics if m.result is not None]
    if not measured:
        return "not measured (no analysis round was recorded)"
    failed = [m for m in measured if m.result != "Successful"]
    verdict = (
        "every SLO within its threshold at the last measurement"
        if not failed
        else f"{len(failed)} metric(s) not Successful at the last measurement"
    )
    parts = "; ".join(
        f"`{m.metric}` {number(m.baseline)} → {number(m.value)}"
        if m.baseline is not None
        else f"`{m.metric}` {number(m.value)} (no baseline recorded)"
        for m in measured
    )
    return f"{verdict} (baseline → last: {parts})"


def _measurement(m: MetricFacts) -> str:
    threshold = f", threshold {m.threshold}" if m.threshold else ""
    baseline = f", baseline {number(m.baseline)}" if m.baseline is not None else ""
    note = f" ({_one_line(m.message)})" if m.message else ""
    return f"`{m.metric}` = {number(m.value)}{threshold}{baseline}, at {m.at or NOT_RECORDED}{note}"


def _backup(facts: RecordFacts) -> str:
    b = facts.backup
    if b is None:
        return "none"
    parts: list[str] = [b.state]
    if b.location:
        parts.append(f"at `{b.location}`")
    if b.before_step:
        parts.append(f"before step `{b.before_step}`")
    if b.size_bytes is not None:
        parts.append(f"{count(b.size_bytes)} bytes")
    if b.sha256:
        parts.append(f"sha256 {b.sha256[:16]}…")
    if b.restore_command:
        parts.append(f"restore: `{b.restore_command}`")
    return ", ".join(parts)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return NOT_RECORDED
    if seconds < 1:
        return "<1 s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def count(n: int) -> str:
    return f"{n:,}"


def number(value: float | None) -> str:
    if value is None:
        return NOT_RECORDED
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:.4g}"


def _one_line(text: str | None) -> str:
    if not text:
        return ""
    return " ".join(text.split())


def _cell(text: str) -> str:
    return _one_line(text).replace("|", "\\|")
