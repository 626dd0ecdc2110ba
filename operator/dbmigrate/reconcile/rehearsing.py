"""The effect of `Rehearse`: the migration run on a scratch copy before it starts.

The rehearsal (`db.rehearsal.rehearse`) runs in the pass, off the event loop's way (its SQL on
async sessions, its backfills and the client tools in threads and processes). Its verdict is
recorded in status.rehearsal with an event: `RehearsalPassed` (the next pass starts the
migration) or `RehearsalFailed` (the migration stops before the real database is touched; the
next pass says so). A rehearsal that could not run at all (no CREATEDB, pg_dump missing or too
old, the scratch server out of reach, its Secret missing) is no verdict: `RehearsalUnavailable`
is shown and it is tried again with backoff; status.rehearsal stays unset, as it does when the
operator dies mid-rehearsal (the next one drops the leftover scratch database first).
"""

from __future__ import annotations

from dbmigrate.api import reasons
from dbmigrate.api.durations import parse_duration
from dbmigrate.core import decide as d
from dbmigrate.core.rehearsal import scratch_database_name
from dbmigrate.db.errors import MalformedDsn, check_dsn
from dbmigrate.db.rehearsal import RehearsalRequest, RehearsalUnavailable, rehearse
from dbmigrate.reconcile.passes import Pass
from dbmigrate.reconcile.platform import NotFound, SecretNotPermitted

# Backoff between rehearsals that could not run: 15 s, 30 s, 1 min, ... at most 5 min.
RETRY_FIRST, RETRY_MAX = 15.0, 300.0


def retry_delay(failures: int) -> float:
    return min(RETRY_MAX, RETRY_FIRST * 2.0 ** max(0, failures - 1))


async def _server_dsn(p: Pass) -> str | d.Wait | None:
    """The DSN of the server named by rehearsal.dsnSecretRef (None: the migration's own), or
    the Wait that says why it cannot be used; its Secret is checked like the database's."""
    config = p.spec.rehearsal
    assert config is not None
    ref = config.dsn_secret_ref
    if ref is None:
        return None
    try:
        dsn = await p.report.platform.read_secret(ref.name, ref.key)
        check_dsn(dsn, f"Secret {ref.name} key {ref.key} (rehearsal.dsnSecretRef)")
    except NotFound as exc:
        return d.Wait("Pending", reasons.SECRET_NOT_FOUND, str(exc), requeue_after=10.0)
    except SecretNotPermitted as exc:
        return d.Wait(
            "Pending", reasons.SECRET_NOT_PERMITTED, str(exc), stalled=True, requeue_after=10.0
        )
    except MalformedDsn as exc:
        return d.Wait("Pending", reasons.INVALID_DSN, str(exc), stalled=True, requeue_after=10.0)
    return dsn


async def rehearse_migration(p: Pass, action: d.Rehearse) -> float:
    spec, status, report = p.spec, p.status, p.report
    config = spec.rehearsal
    assert config is not None
    assert report.dsn is not None
    server = await _server_dsn(p)
    if isinstance(server, d.Wait):
        await report.report_wait(status, server)
        return server.requeue_after
    database = scratch_database_name(
        p.report.platform.namespace, p.report.platform.name, spec.migration_id
    )
    where = "another server (rehearsal.dsnSecretRef)" if server else "the database's server"
    status.rehearsal = None
    status.phase = "Pending"
    message = (
        f"rehearsing on scratch database {database} on {where} with up to "
        f"{config.sample_rows} sample rows per table"
    )
    await report.save(status, reasons.REHEARSING, message, recount=False)
    await report.event("Normal", reasons.REHEARSING, message)
    request = RehearsalRequest(
        spec=spec,
        sql=p.sql,
        real_dsn=report.dsn,
        database=database,
        server_dsn=server,
        sample_rows=config.sample_rows,
        timeout=parse_duration(config.timeout),
        generation=report.generation,
    )
    try:
        verdict = await rehearse(request)
    except RehearsalUnavailable as exc:
        report.memory.rehearsal_failures += 1
        delay = retry_delay(report.memory.rehearsal_failures)
        wait = d.Wait(
            "Pending",
            reasons.REHEARSAL_UNAVAILABLE,
            f"could not rehearse (tried again in {delay:.0f}s; this is not a verdict on the "
            f"migration): {exc}",
            requeue_after=delay,
        )
        await report.report_wait(status, wait)
        return delay
    report.memory.rehearsal_failures = 0
    status.rehearsal = verdict
    if verdict.result == "Passed":
        await report.save(
            status, reasons.REHEARSING, f"rehearsal passed: {verdict.message}", recount=False
        )
        await report.event(
            "Normal", reasons.REHEARSAL_PASSED, f"rehearsal passed: {verdict.message}"
        )
        return 0.0
    status.phase = "Failed"
    text = f"the rehearsal on a scratch copy failed: {verdict.message}"
    await report.save(status, reasons.REHEARSAL_FAILED, text, stalled=True, recount=False)
    await report.event("Warning", reasons.REHEARSAL_FAILED, text)
    report.memory.last_wait = (reasons.REHEARSAL_FAILED, "")  # the wait that follows: no event
    await p.database.release_lock()  # other migrations of this database may go on
    return 0.0
