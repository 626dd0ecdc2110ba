"""kstatus conditions (Ready / Reconciling / Stalled) derived from a phase and a reason."""

from __future__ import annotations

from dbmigrate.api import reasons
from dbmigrate.api.models import Condition, DatabaseMigrationStatus

ACTIVE_PHASES = frozenset({"Pending", "Progressing", "Waiting", "RollingBack"})


def _put(
    status: DatabaseMigrationStatus,
    type_: str,
    value: bool,
    reason: str,
    message: str,
    generation: int,
    now: str,
) -> None:
    conditions = list(status.conditions or [])
    text = "True" if value else "False"
    for i, cond in enumerate(conditions):
        if cond.type == type_:
            changed = cond.status != text
            conditions[i] = Condition(
                type=type_,
                status=text,
                reason=reason,
                message=message,
                last_transition_time=now if changed else cond.last_transition_time,
                observed_generation=generation,
            )
            break
    else:
        conditions.append(
            Condition(
                type=type_,
                status=text,
                reason=reason,
                message=message,
                last_transition_time=now,
                observed_generation=generation,
            )
        )
    status.conditions = conditions


def set_condition(
    status: DatabaseMigrationStatus,
    type_: str,
    value: bool,
    *,
    reason: str,
    message: str,
    generation: int,
    now: str,
) -> None:
    """One condition besides the kstatus three (Watching)."""
    _put(status, type_, value, reason, message, generation, now)


def set_conditions(
    status: DatabaseMigrationStatus,
    *,
    reason: str,
    message: str,
    generation: int,
    now: str,
    stalled: bool = False,
) -> None:
    """Set Ready/Reconciling/Stalled from status.phase and the reason of the latest decision."""
    phase = status.phase or "Pending"
    ready = phase == "Succeeded"
    reconciling = phase in ACTIVE_PHASES and not stalled
    _put(status, reasons.READY, ready, reason, message, generation, now)
    _put(
        status,
        reasons.RECONCILING,
        reconciling,
        reason,
        message if reconciling else "",
        generation,
        now,
    )
    is_stalled = stalled or phase == "Failed"
    _put(
        status,
        reasons.STALLED,
        is_stalled,
        reason,
        message if is_stalled else "",
        generation,
        now,
    )
    status.observed_generation = generation
