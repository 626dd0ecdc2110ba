"""The post-deployment watch (`spec.postDeploy`, the seed's Step 6.1) and the cleanup after it:
what a sample of the database's statistics means, and what to do next once the migration is
Succeeded.

Pure. `reconcile.watching` reads the snapshot taken before the first step and a sample now
(`db.watch`); `judge` compares them: a statement that touches a migrated table is a regression
when the mean time of its calls since the snapshot is `maxQueryRegression` times its mean before
it (and at least `MIN_MEAN_INCREASE_MS` more: a 0.02 ms lookup that takes 0.06 ms is noise, not a
regression), after `minCalls` calls; an index that was not there at the snapshot and was never
scanned when the watch ends is an unused index. `decide_post_deploy` is what `core.decide` asks
for a Succeeded migration whose watch or cleanup is not over.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from dbmigrate.api import reasons
from dbmigrate.api.durations import parse_duration
from dbmigrate.api.models import DatabaseMigrationSpec, DatabaseMigrationStatus
from dbmigrate.api.postdeploy import (
    Finding,
    PostDeploy,
    PostDeployStatus,
    WatchedIndex,
    WatchedStatement,
)
from dbmigrate.core.actions import (
    Action,
    FinishPostDeploy,
    Observation,
    RecordCleanup,
    RecordWatch,
    RunCleanup,
    StartRollback,
    Wait,
    is_applied,
)
from dbmigrate.core.rollback import past_point_of_no_return, rollout_to_keep

# A regression must also add this much to a statement's mean: ratios of tiny times are noise.
MIN_MEAN_INCREASE_MS = 1.0
# How many statements status.postDeploy lists (the worst first).
SHOWN_STATEMENTS = 10
QUERY_TEXT = 200


@dataclass(frozen=True)
class StatementStats:
    """One pg_stat_statements entry (cumulative since its last reset)."""

    queryid: str
    query: str
    calls: int
    total_ms: float
    max_ms: float = 0.0


@dataclass(frozen=True)
class IndexStats:
    name: str
    table: str
    scans: int


@dataclass(frozen=True)
class WatchBaseline:
    """What the database looked like before the first step."""

    tables: tuple[str, ...]
    statements: tuple[StatementStats, ...]
    indexes: frozenset[str]
    statements_available: bool = True


@dataclass(frozen=True)
class WatchSample:
    """The statements touching the watched tables and the tables' indexes, now.

    `statements_unavailable` says why there are no statements (pg_stat_statements missing)."""

    statements: tuple[StatementStats, ...]
    indexes: tuple[IndexStats, ...]
    statements_unavailable: str | None = None


@dataclass(frozen=True)
class WatchObservation:
    baseline: WatchBaseline | None
    sample: WatchSample


@dataclass(frozen=True)
class Judgement:
    statements: tuple[WatchedStatement, ...]
    indexes: tuple[WatchedIndex, ...]
    findings: tuple[Finding, ...]  # all of them, those of earlier samples first
    new_findings: tuple[Finding, ...]


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _iso(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def watch_window(post: PostDeploy, now: datetime) -> tuple[str, str]:
    """(started, ends) of a watch that starts now."""
    return _iso(now), _iso(now + timedelta(seconds=parse_duration(post.watch)))


def watch_over(pd: PostDeployStatus, now: datetime) -> bool:
    return pd.ends_at is not None and now >= _parse(pd.ends_at)


def seconds_until_sample(post: PostDeploy, pd: PostDeployStatus, now: datetime) -> float:
    """0 when a sample is due: never taken, `interval` passed, or the watch is over."""
    if pd.last_sampled_at is None or watch_over(pd, now):
        return 0.0
    due = _parse(pd.last_sampled_at) + timedelta(seconds=parse_duration(post.interval))
    left = (due - now).total_seconds()
    if pd.ends_at is not None:
        left = min(left, (_parse(pd.ends_at) - now).total_seconds())
    return max(0.0, left)


def _compare(
    post: PostDeploy, before: StatementStats | None, now: StatementStats
) -> WatchedStatement:
    if before is not None and now.calls >= before.calls:
        calls, total = now.calls - before.calls, now.total_ms - before.total_ms
    else:  # new, or pg_stat_statements was reset since the snapshot: all calls are since
        calls, total = now.calls, now.total_ms
    mean = total / calls if calls else 0.0
    base = before.total_ms / before.calls if before is not None and before.calls else None
    ratio = mean / base if base and calls >= post.min_calls else None
    return WatchedStatement(
        queryid=now.queryid,
        query=now.query[:QUERY_TEXT],
        calls=calls,
        mean_ms=round(mean, 3),
        max_ms=round(now.max_ms, 3),
        baseline_mean_ms=None if base is None else round(base, 3),
        ratio=None if ratio is None else round(ratio, 2),
    )


def _regressed(post: PostDeploy, s: WatchedStatement) -> bool:
    return (
        s.ratio is not None
        and s.baseline_mean_ms is not None
        and s.ratio >= post.max_query_regression
        and s.mean_ms - s.baseline_mean_ms >= MIN_MEAN_INCREASE_MS
    )


def judge(
    post: PostDeploy,
    seen: WatchObservation,
    earlier: list[Finding] | None,
    now: datetime,
    final: bool,
) -> Judgement:
    """The watched statements and new indexes now, and the findings (`final`: the watch ends
    with this sample, so a new index still never scanned is unused)."""
    at = _iso(now)
    baseline = seen.baseline
    before = {s.queryid: s for s in baseline.statements} if baseline else {}
    compared = [_compare(post, before.get(s.queryid), s) for s in seen.sample.statements]
    compared = [s for s in compared if s.calls > 0]
    compared.sort(key=lambda s: (-(s.ratio or 0.0), -s.calls))
    known = {(f.kind, f.queryid or f.index or "") for f in earlier or []}
    new: list[Finding] = []
    for s in compared:
        if _regressed(post, s) and ("QueryRegression", s.queryid) not in known:
            new.append(
                Finding(
                    kind="QueryRegression",
                    queryid=s.queryid,
                    at=at,
                    message=f"query {s.queryid} ({_short(s.query)}) takes {s.mean_ms} ms on "
                    f"average over {s.calls} call(s) since the migration, {s.ratio}x its "
                    f"{s.baseline_mean_ms} ms before it (limit {post.max_query_regression}x)",
                )
            )
    indexes: list[WatchedIndex] = []
    if baseline is not None:
        for ix in seen.sample.indexes:
            if ix.name in baseline.indexes:
                continue
            indexes.append(WatchedIndex(name=ix.name, table=ix.table, scans=ix.scans))
            if final and ix.scans == 0 and ("UnusedIndex", ix.name) not in known:
                new.append(
                    Finding(
                        kind="UnusedIndex",
                        index=ix.name,
                        at=at,
                        message=f"index {ix.name} on {ix.table}, created by the migration, "
                        f"was never scanned during the {post.watch} watch: drop it, or keep "
                        "it for a query the watch did not see",
                    )
                )
    return Judgement(
        statements=tuple(compared[:SHOWN_STATEMENTS]),
        indexes=tuple(indexes),
        findings=(*(earlier or []), *new),
        new_findings=tuple(new),
    )


def _short(query: str) -> str:
    text = " ".join(query.split())
    return text if len(text) <= 60 else text[:57] + "..."


def watch_pending(status: DatabaseMigrationStatus) -> bool:
    """A Succeeded migration whose watch or cleanup is not over (its runner goes on)."""
    pd = status.post_deploy
    return pd is not None and pd.finished_at is None and pd.state in ("Watching", "CleaningUp")


def decide_post_deploy(
    spec: DatabaseMigrationSpec, status: DatabaseMigrationStatus, obs: Observation
) -> Action:
    """Succeeded, with the watch or its cleanup under way."""
    pd, post = status.post_deploy, spec.post_deploy
    assert pd is not None
    if post is None:
        return FinishPostDeploy("spec.postDeploy was removed: the watch ends")
    if obs.problem is not None:
        return Wait(
            "Succeeded",
            obs.problem.reason,
            f"{obs.problem.message} (post-deployment {pd.state.lower()})",
            stalled=obs.problem.reason != reasons.DATABASE_UNREACHABLE,
            requeue_after=10.0,
        )
    if pd.state == "CleaningUp":
        return _decide_cleanup(post, pd, obs)
    regressions = [f for f in pd.findings or [] if f.kind == "QueryRegression"]
    if regressions and post.on_regression == "Rollback":
        pnr = past_point_of_no_return(spec, obs)
        if pnr is None:
            return StartRollback(
                reasons.QUERY_REGRESSION,
                f"after the migration, {regressions[0].message}; postDeploy.onRegression is "
                "Rollback",
                keep_rollout=rollout_to_keep(spec, obs),
            )
    if obs.watch is not None:
        final = watch_over(pd, obs.now)
        return RecordWatch(judge(post, obs.watch, pd.findings, obs.now, final), obs.watch, final)
    return Wait(
        "Succeeded",
        reasons.WATCHING,
        watch_message(pd),
        requeue_after=max(0.5, seconds_until_sample(post, pd, obs.now)),
    )


def watch_message(pd: PostDeployStatus) -> str:
    found = len(pd.findings or [])
    return f"watching the migrated tables' queries and new indexes until {pd.ends_at}" + (
        f"; {found} finding(s) so far" if found else ""
    )


def _decide_cleanup(post: PostDeploy, pd: PostDeployStatus, obs: Observation) -> Action:
    if not obs.lock_held:
        return Wait(
            "Succeeded",
            reasons.ANOTHER_MIGRATION_RUNNING,
            "the cleanup waits for the database's migration lock (another migration holds it)",
            requeue_after=5.0,
        )
    done = {c.name for c in pd.cleanup or [] if c.state == "Succeeded"}
    for step in post.cleanup or []:
        if is_applied(obs, step.name):
            if step.name not in done:
                return RecordCleanup(step.name)
            continue
        return RunCleanup(step.name)
    return FinishPostDeploy(f"watch over; {len(post.cleanup or [])} cleanup step(s) done")
