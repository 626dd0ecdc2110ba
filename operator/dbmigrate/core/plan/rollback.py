"""The Rollback Strategy section of the Markdown plan: the policy and its triggers, the safe
rollback window, the rollback steps in order, and the point of no return."""

from __future__ import annotations

from dbmigrate.api.models import DatabaseMigrationSpec
from dbmigrate.core.plan.build import MigrationPlan, StepPlan
from dbmigrate.core.plan.formatting import code, step_summary
from dbmigrate.core.plan.steps import backfill_undo


def render_rollback(plan: MigrationPlan) -> list[str]:
    spec = plan.spec
    lines = ["## Rollback Strategy", ""]
    ponr = plan.point_of_no_return
    irreversible = plan.first_irreversible
    limit = min(
        (s.number for s in (ponr, irreversible) if s is not None), default=len(plan.steps) + 1
    )
    undo = spec.undo_rollout_enabled
    policy = spec.rollback.policy
    triggers = _triggers(spec)

    lines.append(f"Policy: {policy}" + (f"; triggers: {triggers}" if triggers else "") + ".")
    lines.append("")
    lines.append("### Safe Rollback Window")
    lines.append("")
    window = [s for s in plan.steps if s.number < limit]
    if window:
        names = ", ".join(f"`{s.name}`" for s in window)
        cost = _rollback_cost(window)
        numbers = (
            f"Step {window[0].number}"
            if len(window) == 1
            else f"Steps {window[0].number} to {window[-1].number}"
        )
        lines.append(
            f"- {numbers} ({names}): full rollback — "
            + ("undo the rollout, then " if undo else "")
            + f"the down SQL of the completed steps in reverse order; {cost}"
        )
    if ponr is not None:
        lines.append(
            f"- Step {ponr.number} (`{ponr.name}`): rolled back if it fails; once it succeeds, "
            "automatic database rollback is refused"
        )
    if irreversible is not None and (ponr is None or irreversible.number < ponr.number):
        lines.append(
            f"- Step {irreversible.number} (`{irreversible.name}`) has no down SQL: a rollback "
            "after it cannot restore the pre-migration schema (data loss possible)"
        )
    if ponr is not None and ponr.number < len(plan.steps):
        rest = ", ".join(f"`{s.name}`" for s in plan.steps[ponr.number :])
        lines.append(f"- After `{ponr.name}` ({rest}): manual recovery only")
    lines.append("")

    lines.append("### Rollback Steps")
    lines.append("")
    n = 0
    if undo and spec.target_deployment:
        n += 1
        lines.append(
            f"{n}. Undo the rollout of Deployment `{spec.target_deployment}` to the revision "
            "recorded when the migration started" + _argo_cd_text(spec)
        )
    for step in reversed(window):
        n += 1
        lines.append(f"{n}. `{step.name}`: {_undo_text(plan, step)}")
    if n == 0:
        lines.append("Nothing to undo automatically.")
    lines.append("")

    lines.append("### Point of No Return")
    lines.append("")
    if ponr is not None:
        lines.append(
            f"After step {ponr.number} `{ponr.name}` succeeds "
            f"({step_summary(ponr)}): automatic rollback is refused from then on."
        )
        lines.append(f"Decision point: before step {ponr.number} `{ponr.name}`.")
        if ponr.reversible and ponr.down:
            undo_sql = "; ".join(code(d.statement.text, 100) for d in ponr.down)
            lines.append(f"Manual undo of `{ponr.name}`: {undo_sql}.")
    elif irreversible is not None:
        lines.append(
            f"None declared, but step {irreversible.number} `{irreversible.name}` cannot be "
            "undone: it is the effective point of no return."
        )
    else:
        lines.append("None: every step can be rolled back.")
    lines.append("")
    return lines


def _triggers(spec: DatabaseMigrationSpec) -> str:
    if spec.analysis is None:
        return ""
    parts = []
    for metric in spec.analysis.metrics:
        checks = []
        if metric.max is not None:
            checks.append(f"> {metric.max:g}")
        if metric.min is not None:
            checks.append(f"< {metric.min:g}")
        if metric.max_ratio_to_baseline is not None:
            checks.append(f"> {metric.max_ratio_to_baseline:g} x baseline")
        parts.append(f"{metric.name} {' or '.join(checks)}")
    return (
        ", ".join(parts)
        + f" ({spec.analysis.failure_limit} consecutive failed measurements, every "
        f"{spec.analysis.interval})"
    )


def _rollback_cost(window: list[StepPlan]) -> str:
    slow = [s.name for s in window for d in s.down if d.effect.long_running and not d.on_new_tables]
    if slow:
        return (
            "the down SQL of " + ", ".join(dict.fromkeys(slow)) + " reads or rewrites whole tables"
        )
    return "instant (every down statement is metadata-only)"


def _undo_text(plan: MigrationPlan, step: StepPlan) -> str:
    s = step.step
    if s.sql is not None:
        if not step.reversible:
            return "no down SQL: cannot be undone"
        if not step.down:
            return "down SQL from a ConfigMap (not provided)"
        return "; ".join(
            f"{code(d.statement.text, 100)} ({d.effect.describe_lock()})" for d in step.down
        )
    if s.backfill is not None:
        return backfill_undo(plan, step)
    if s.await_rollout is not None:
        return (
            "nothing to run (the rollout is undone above)"
            if plan.spec.undo_rollout_enabled
            else "nothing to run (rollback.undoRollout is off: the new version keeps running)"
        )
    return "cannot be undone by dbmigrate"


def _argo_cd_text(spec: DatabaseMigrationSpec) -> str:
    argo = spec.rollback.argo_cd
    if not argo.pause_auto_sync:
        return ""
    resumed = (
        "switched back on once its Git revision reverts the release"
        if argo.resume_auto_sync == "OnRevert"
        else "switched back on by a person"
    )
    return (
        " (if an Argo CD Application auto-syncs it, automated sync is paused first and its "
        f"sync under way ended; {resumed})"
    )
