"""What `kubectl dbmigrate get` and `list` show, rendered from a DatabaseMigration object:
pure functions of the object and the time, no I/O.

`summarize` turns the object into the facts both renderings share (also what `-o json`
prints); `render_get` draws the tree of steps with the backfill bar, rate and ETA, the
analysis measurements against their thresholds, the rollout revision, the checklist, the
post-deployment watch and the conditions; `render_list` one line per migration. Every line fits
`width` columns (long messages cut with `…`). With `tty` the state symbols are coloured (ANSI);
without, the lines are plain text.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from dbmigrate.api.status import DatabaseMigrationStatus, StepStatus

WIDTH = 80
ELLIPSIS = "…"
BAR_CELLS = 16
STEP_KINDS = ("sql", "backfill", "awaitRollout", "job")

# The state symbols (kubectl argo rollouts' set) and the ANSI colour each gets on a terminal.
SYMBOLS: dict[str, tuple[str, str]] = {
    "Succeeded": ("✔", "32"),
    "Running": ("◌", "36"),
    "Progressing": ("◌", "36"),
    "Waiting": ("॥", "33"),
    "Suspended": ("॥", "33"),
    "Pending": ("•", "90"),
    "Failed": ("✖", "31"),
    "RollingBack": ("↺", "35"),
    "RolledBack": ("↺", "35"),
    "Skipped": ("-", "90"),
    "Successful": ("✔", "32"),
    "Inconclusive": ("?", "33"),
}


@dataclass(frozen=True)
class Screen:
    """Where the lines go: a terminal (colours) or not (plain), and its width."""

    tty: bool = False
    width: int = WIDTH


# --- small pieces ----------------------------------------------------------------------------


def fit(text: str, width: int) -> str:
    """`text` cut to `width` characters, the last one `…` when it was cut."""
    text = " ".join(text.split()) if "\n" in text else text
    if len(text) <= width:
        return text
    return text[: max(width - 1, 0)] + ELLIPSIS if width > 0 else ""


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def human_duration(seconds: float | None) -> str:
    """`850ms`, `12s`, `3m05s`, `2h04m`, `3d4h`; `-` when unknown."""
    if seconds is None or seconds < 0:
        return "-"
    if seconds == 0:
        return "<1s"  # timestamps to the second: within the same second
    if seconds < 1:
        return f"{int(seconds * 1000)}ms"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h"


def between(start: str | None, end: str | None, now: datetime) -> float | None:
    """Seconds from `start` to `end` (or to `now` while it has no end)."""
    began = parse_time(start)
    if began is None:
        return None
    ended = parse_time(end) or now
    return (ended - began).total_seconds()


def bar(percent: int | None, cells: int = BAR_CELLS, *, tty: bool = False) -> str:
    """`[██████░░░░]  60%` on a terminal, `[######----] 60%` in plain text."""
    done_char, todo_char = ("█", "░") if tty else ("#", "-")
    if percent is None:
        return f"[{todo_char * cells}]   ?%"
    p = min(max(percent, 0), 100)
    done = round(cells * p / 100)
    return f"[{done_char * done}{todo_char * (cells - done)}] {p:3d}%"


def number(value: float | None) -> str:
    """A measurement as people read it: 0.0042, 12.5, 1200."""
    if value is None:
        return "n/a"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}"


def paint(symbol_of: str, screen: Screen) -> str:
    """The state's symbol, coloured on a terminal (one visible column either way)."""
    symbol, colour = SYMBOLS.get(symbol_of, ("?", "0"))
    return f"\x1b[{colour}m{symbol}\x1b[0m" if screen.tty else symbol


# --- the facts both renderings share --------------------------------------------------------


def step_kind(spec_step: dict[str, Any]) -> str:
    return next((k for k in STEP_KINDS if spec_step.get(k) is not None), "?")


def _step_seconds(st: StepStatus | None, ended: str | None, now: datetime) -> float | None:
    """How long the step took, or has taken so far while it runs — until the migration
    `ended`, when it has (a step rolled back or failed without an end time has none)."""
    if st is None or (st.finished_at is None and st.state not in ("Running", "Waiting")):
        return None
    return between(st.started_at, st.finished_at or ended, now)


def _step_summary(
    spec_step: dict[str, Any], st: StepStatus | None, ended: str | None, now: datetime
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": spec_step.get("name", "?"),
        "kind": step_kind(spec_step),
        "state": st.state if st else "Pending",
        "durationSeconds": _step_seconds(st, ended, now),
        "attempts": st.attempts if st else 0,
        "job": st.job if st else None,
        "message": st.message if st else None,
    }
    if st and st.backfill:
        out["backfill"] = st.backfill.model_dump(by_alias=True, exclude_none=True)
    return out


def summarize(obj: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The migration as `get -o json` prints it (camelCase, durations in seconds)."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = DatabaseMigrationStatus.model_validate(obj.get("status") or {})
    spec_steps = [s for s in spec.get("steps") or [] if isinstance(s, dict)]
    steps = [
        _step_summary(s, status.step(str(s.get("name"))), status.finished_at, now)
        for s in spec_steps
    ]
    rollback = status.rollback
    out: dict[str, Any] = {
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
        "migrationId": spec.get("migrationId"),
        "phase": status.phase or "Pending",
        "progress": status.progress or f"0/{len(steps)}",
        "currentStep": status.current_step,
        "suspended": bool(spec.get("suspend")),
        "ageSeconds": between(meta.get("creationTimestamp"), None, now),
        "durationSeconds": between(status.started_at, status.finished_at, now),
        "targetRevision": status.target_revision,
        "undoneToRevision": rollback.undone_to_revision if rollback else None,
        "steps": steps,
    }
    if rollback is not None:
        out["rollback"] = rollback.model_dump(by_alias=True, exclude_none=True)
    if status.analysis is not None:
        out["analysis"] = status.analysis.model_dump(by_alias=True, exclude_none=True)
    if status.checklist is not None:
        out["checklist"] = status.checklist.model_dump(by_alias=True, exclude_none=True)
    if status.post_deploy is not None:
        out["postDeploy"] = status.post_deploy.model_dump(by_alias=True, exclude_none=True)
    out["conditions"] = [
        c.model_dump(by_alias=True, exclude_none=True) for c in status.conditions or []
    ]
    return out


# --- `get` -----------------------------------------------------------------------------------


def _field(label: str, value: str) -> str:
    return f"{label + ':':<12} {value}"


def _backfill_line(backfill: dict[str, Any], screen: Screen) -> str:
    done, total = backfill.get("rowsDone", 0), backfill.get("rowsEstimated")
    parts = [bar(backfill.get("percent"), tty=screen.tty)]
    parts.append(f"{done:,}/{total:,} rows" if total is not None else f"{done:,} rows")
    if backfill.get("rowsPerSecond") is not None:
        parts.append(f"{backfill['rowsPerSecond']:,} rows/s")
    if backfill.get("eta") and (backfill.get("percent") or 0) < 100:
        parts.append(f"ETA {backfill['eta']}")
    return "  ".join(parts)


def _tree(summary: dict[str, Any], screen: Screen) -> list[str]:
    lines: list[str] = []
    steps = summary["steps"]
    name_w = max([len(s["name"]) for s in steps] + [4])
    name_w = min(name_w, 24)
    for i, s in enumerate(steps):
        last = i == len(steps) - 1
        branch, stem = ("└── ", "    ") if last else ("├── ", "│   ")
        state = s["state"]
        dur = human_duration(s["durationSeconds"]) if s["durationSeconds"] is not None else ""
        text = f"{fit(s['name'], name_w):<{name_w}}  {s['kind']:<13}{state:<11}{dur}".rstrip()
        room = screen.width - len(branch) - 2
        lines.append(f"{branch}{paint(state, screen)} {fit(text, room)}")
        details: list[str] = []
        if s.get("backfill"):
            details.append(_backfill_line(s["backfill"], screen))
        if s.get("message") and state in ("Failed", "Waiting", "Running", "RolledBack"):
            details.append(s["message"])
        for j, d in enumerate(details):
            twig = "└── " if j == len(details) - 1 else "├── "
            lines.append(fit(f"{stem}{twig}{d}", screen.width))
    return lines


def _analysis(analysis: dict[str, Any], screen: Screen) -> list[str]:
    last = analysis.get("last") or []
    if not last:
        return []
    lines = ["Analysis:"]
    for m in last:
        value = number(m.get("value"))
        threshold = m.get("threshold") or "no threshold"
        head = f"  {paint(m.get('result', ''), screen)} "
        lines.append(head + fit(f"{m['metric']}  {value} (limit {threshold})", screen.width - 4))
        if m.get("result") != "Successful" and m.get("message"):
            lines.append(fit(f"      {m['message']}", screen.width))
    return lines


def _checklist(checklist: dict[str, Any], screen: Screen) -> list[str]:
    items = checklist.get("items") or []
    if not items:
        return []
    head = "complete" if checklist.get("complete", True) else "waiting"
    lines = [f"Checklist:   {head}"]
    for item in items:
        symbol = paint("Succeeded" if item.get("satisfied") else "Pending", screen)
        req = "required" if item.get("required") else "        "
        detail = item.get("detail") or ""
        lines.append(f"  {symbol} " + fit(f"{item['name']:<13}{req}  {detail}", screen.width - 4))
    return lines


def _post_deploy(post: dict[str, Any], now: datetime, screen: Screen) -> list[str]:
    state = post.get("state", "Watching")
    text = state
    if state == "Watching" and post.get("endsAt"):
        ends = parse_time(post["endsAt"])
        left = (ends - now).total_seconds() if ends else None
        text += f", {human_duration(left)} left" if left is not None and left > 0 else ""
    lines = [fit(f"Post-deploy: {text}", screen.width)]
    for f in post.get("findings") or []:
        lines.append(f"  {paint('Failed', screen)} " + fit(f"{f['kind']}: {f['message']}", 74))
    if post.get("message") and not post.get("findings"):
        lines.append(fit(f"  {post['message']}", screen.width))
    return lines


def _conditions(conditions: list[dict[str, Any]], screen: Screen) -> list[str]:
    if not conditions:
        return []
    lines = ["Conditions:"]
    for c in conditions:
        reason = c.get("reason") or ""
        text = f"{c['type']}={c['status']} {reason}".rstrip()
        if c.get("message"):
            text += f": {c['message']}"
        lines.append(fit(f"  {text}", screen.width))
    return lines


def render_get(obj: dict[str, Any], now: datetime, screen: Screen = Screen()) -> list[str]:
    """The `get` screen: header, the tree of steps, then analysis, checklist, post-deploy
    watch and conditions when the status has them."""
    s = summarize(obj, now)
    w = screen.width
    phase = s["phase"] + (" (suspended)" if s["suspended"] and s["phase"] != "Suspended" else "")
    lines = [
        fit(_field("Name", f"{s['name']} (namespace {s['namespace']})"), w),
        fit(_field("Migration", s["migrationId"] or "?"), w),
        _field("Status", f"{paint(s['phase'], screen)} ") + fit(phase, w - 15),
        fit(
            _field("Progress", f"{s['progress']} steps, {human_duration(s['durationSeconds'])}"), w
        ),
    ]
    if s["targetRevision"] or s["undoneToRevision"]:
        rev = f"revision {s['targetRevision'] or '?'} at the start"
        if s["undoneToRevision"]:
            rev += f", rolled back to revision {s['undoneToRevision']}"
        lines.append(fit(_field("Rollout", rev), w))
    rollback = s.get("rollback") or {}
    if rollback.get("reason") or rollback.get("trigger"):
        why = rollback.get("reason") or rollback.get("trigger") or ""
        if rollback.get("step"):
            why += f" (during step {rollback['step']})"
        lines.append(fit(_field("Rollback", why.strip()), w))
    argo = rollback.get("argoCD") or {}
    if argo.get("autoSyncPaused"):
        app = f"{argo.get('namespace')}/{argo.get('application')}"
        if argo.get("resumedAt"):
            text = f"automated sync of {app} back on"
            if argo.get("resumedRevision"):
                text += f" at {str(argo['resumedRevision'])[:7]}"
        else:
            text = f"automated sync of {app} off since the rollback"
        lines.append(fit(_field("Argo CD", text), w))
    lines.append("")
    lines.append(fit(f"{s['name']}", w))
    lines.extend(_tree(s, screen))
    for block in (
        _analysis(s.get("analysis") or {}, screen),
        _checklist(s.get("checklist") or {}, screen),
        _post_deploy(s["postDeploy"], now, screen) if s.get("postDeploy") else [],
        _conditions(s["conditions"], screen),
    ):
        if block:
            lines.append("")
            lines.extend(block)
    return lines


# --- `list` ----------------------------------------------------------------------------------

LIST_COLUMNS = ("NAME", "PHASE", "PROGRESS", "STEP", "AGE")


def list_rows(objs: Iterable[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    rows = []
    for obj in objs:
        s = summarize(obj, now)
        rows.append(
            {
                "name": s["name"],
                "namespace": s["namespace"],
                "phase": s["phase"],
                "progress": s["progress"],
                "currentStep": s["currentStep"],
                "ageSeconds": s["ageSeconds"],
            }
        )
    return rows


def shrink_to_fit(
    widths: list[int], *, flexible: set[int], minimum: list[int], room: int
) -> list[int]:
    """Column widths within `room`: the widest flexible column (names, steps) gives up a
    column at a time, down to its header's width; the others keep theirs."""
    out = list(widths)
    while sum(out) > room:
        candidates = [i for i in flexible if out[i] > minimum[i]]
        if not candidates:
            break
        widest = max(candidates, key=lambda i: out[i])
        out[widest] -= 1
    return out


def render_list(
    rows: list[dict[str, Any]], *, all_namespaces: bool = False, screen: Screen = Screen()
) -> list[str]:
    """A table like `kubectl get`'s: NAMESPACE (with -A), NAME, PHASE, PROGRESS, STEP, AGE."""
    table = [
        [
            *([r["namespace"] or ""] if all_namespaces else []),
            r["name"] or "",
            r["phase"],
            r["progress"],
            r["currentStep"] or "-",
            human_duration(r["ageSeconds"]),
        ]
        for r in rows
    ]
    head = [*(["NAMESPACE"] if all_namespaces else []), *LIST_COLUMNS]
    widths = shrink_to_fit(
        [max([len(head[i])] + [len(t[i]) for t in table]) for i in range(len(head))],
        flexible={head.index(c) for c in ("NAMESPACE", "NAME", "STEP") if c in head},
        minimum=[len(h) for h in head],
        room=screen.width - 2 * (len(head) - 1),
    )
    lines = []
    for cells in [head, *table]:
        line = "  ".join(f"{fit(c, widths[i]):<{widths[i]}}" for i, c in enumerate(cells))
        lines.append(fit(line.rstrip(), screen.width))
    return lines


# --- `history` -------------------------------------------------------------------------------


def render_history(rows: list[dict[str, Any]], screen: Screen = Screen()) -> list[str]:
    """`dbmigrate.history` rows: STEP, KIND, DIRECTION, APPLIED AT (UTC, to the second),
    DURATION."""
    head = ["STEP", "KIND", "DIRECTION", "APPLIED AT", "DURATION"]
    table = []
    for r in rows:
        at = parse_time(r["appliedAt"])
        when = at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if at else r["appliedAt"]
        table.append(
            [r["step"], r["kind"], r["direction"], when, human_duration(r["durationMs"] / 1000)]
        )
    widths = [min(max([len(head[i])] + [len(t[i]) for t in table]), 24) for i in range(5)]
    return [
        fit(
            "  ".join(f"{fit(c, widths[i]):<{widths[i]}}" for i, c in enumerate(cells)).rstrip(),
            screen.width,
        )
        for cells in [head, *table]
    ]
