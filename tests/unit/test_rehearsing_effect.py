"""The effect of `Rehearse` (reconcile.rehearsing) against a fake platform, a fake session and
a fake rehearsal (`db.rehearsal.rehearse`, our own seam; the real one is tested in
tests/integration/test_rehearsal.py).

Aspects: a pass records status.rehearsal and posts RehearsalPassed; a failure records it,
stops in Failed (RehearsalFailed, Stalled), posts one event and lets go of the migration lock;
a rehearsal that could not run records nothing, shows RehearsalUnavailable and backs off
(15 s, 30 s, 1 min … 5 min); rehearsal.dsnSecretRef is read through the platform's permission
check, and a refused or missing Secret is a wait, not a rehearsal; no DSN leaves in a message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from dbmigrate.api import reasons
from dbmigrate.api.models import DatabaseMigrationSpec, DatabaseMigrationStatus, RehearsalStatus
from dbmigrate.core import decide as d
from dbmigrate.db.rehearsal import RehearsalRequest, RehearsalUnavailable
from dbmigrate.reconcile import passes, rehearsing
from dbmigrate.reconcile.platform import NotFound, SecretNotPermitted
from dbmigrate.settings import Settings

DSN = "postgresql://app:hunter2-secret@db/app"
STAGING = "postgresql://stage:staging-secret@staging/app"


@dataclass
class FakePlatform:
    namespace: str = "ns"
    name: str = "m"
    has_rollouts: bool = True
    status: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[str, str, str]] = field(default_factory=list)
    secrets: dict[str, str | Exception] = field(default_factory=dict)

    async def write_status(self, patch: dict[str, Any]) -> None:
        self.status = {k: v for k, v in patch.items() if v is not None}

    async def event(self, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))

    async def read_secret(self, name: str, key: str) -> str:
        value = self.secrets[name]
        if isinstance(value, Exception):
            raise value
        return value


@dataclass
class FakeSession:
    released: int = 0

    async def release_lock(self) -> None:
        self.released += 1


@dataclass
class FakeRehearsal:
    """Answers with `verdict`, or raises `error`; remembers the requests."""

    verdict: RehearsalStatus | None = None
    error: Exception | None = None
    requests: list[RehearsalRequest] = field(default_factory=list)

    async def __call__(self, request: RehearsalRequest) -> RehearsalStatus:
        self.requests.append(request)
        if self.error is not None:
            raise self.error
        assert self.verdict is not None
        return self.verdict


def make_pass(platform: FakePlatform, session: FakeSession, **rehearsal: Any) -> passes.Pass:
    spec = DatabaseMigrationSpec.model_validate(
        {
            "migrationId": "20240115120000_add_c",
            "database": {"dsnSecretRef": {"name": "db", "key": "dsn"}},
            "steps": [{"name": "a", "sql": {"up": "SELECT 1", "down": "SELECT 1"}}],
            "rehearsal": rehearsal,
        }
    )
    return passes.Pass(
        report=passes.Reporter(platform, generation=3, dsn=DSN),  # type: ignore[arg-type]
        database=session,  # type: ignore[arg-type]
        settings=Settings(),
        body={"metadata": {"name": "m", "namespace": "ns", "uid": "u"}},
        spec=spec,
        status=DatabaseMigrationStatus(phase="Pending"),
        obs=d.Observation(now=datetime.now(UTC)),
        sql={},
    )


def ready(platform: FakePlatform) -> dict[str, Any]:
    return next(c for c in platform.status["conditions"] if c["type"] == "Ready")


async def run(p: passes.Pass, fake: FakeRehearsal, monkeypatch: pytest.MonkeyPatch) -> float:
    monkeypatch.setattr(rehearsing, "rehearse", fake)
    return await rehearsing.rehearse_migration(p, d.Rehearse())


async def test_a_pass_is_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    platform, session = FakePlatform(), FakeSession()
    fake = FakeRehearsal(RehearsalStatus(result="Passed", generation=3, message="all good"))
    delay = await run(make_pass(platform, session, sampleRows=5), fake, monkeypatch)
    assert delay == 0.0
    assert platform.status["rehearsal"]["result"] == "Passed"
    assert platform.status["phase"] == "Pending"
    assert [r for _, r, _ in platform.events] == [reasons.REHEARSING, reasons.REHEARSAL_PASSED]
    (request,) = fake.requests
    assert request.sample_rows == 5
    assert request.generation == 3
    assert request.timeout == 900.0
    assert request.real_dsn == DSN
    assert request.server_dsn is None
    assert request.database.startswith("dbmigrate_rehearsal_")
    assert session.released == 0


async def test_a_failure_stops_the_migration(monkeypatch: pytest.MonkeyPatch) -> None:
    platform, session = FakePlatform(), FakeSession()
    fake = FakeRehearsal(
        RehearsalStatus(result="Failed", generation=3, message="index public.i left behind")
    )
    p = make_pass(platform, session)
    await run(p, fake, monkeypatch)
    assert platform.status["phase"] == "Failed"
    assert platform.status["rehearsal"]["result"] == "Failed"
    assert ready(platform)["reason"] == reasons.REHEARSAL_FAILED
    stalled = next(c for c in platform.status["conditions"] if c["type"] == "Stalled")
    assert stalled["status"] == "True"
    assert ("Warning", reasons.REHEARSAL_FAILED) in [(t, r) for t, r, _ in platform.events]
    assert session.released == 1
    # The wait that follows says the same: no second event.
    assert p.report.memory.last_wait == (reasons.REHEARSAL_FAILED, "")


async def test_unavailable_is_no_verdict_and_backs_off(monkeypatch: pytest.MonkeyPatch) -> None:
    platform, session = FakePlatform(), FakeSession()
    p = make_pass(platform, session)
    fake = FakeRehearsal(error=RehearsalUnavailable("the role may not create databases"))
    delays = [await run(p, fake, monkeypatch) for _ in range(7)]
    assert delays == [15.0, 30.0, 60.0, 120.0, 240.0, 300.0, 300.0]
    assert "rehearsal" not in platform.status
    assert platform.status["phase"] == "Pending"
    assert ready(platform)["reason"] == reasons.REHEARSAL_UNAVAILABLE
    assert "not a verdict" in ready(platform)["message"]
    assert session.released == 0
    fake.error, fake.verdict = None, RehearsalStatus(result="Passed", generation=3)
    await run(p, fake, monkeypatch)
    assert p.report.memory.rehearsal_failures == 0


async def test_another_server_from_its_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    platform, session = FakePlatform(secrets={"staging": STAGING}), FakeSession()
    fake = FakeRehearsal(RehearsalStatus(result="Passed", generation=3))
    p = make_pass(platform, session, dsnSecretRef={"name": "staging", "key": "dsn"})
    await run(p, fake, monkeypatch)
    assert fake.requests[0].server_dsn == STAGING
    for _, _, message in platform.events:
        assert "staging-secret" not in message
        assert "hunter2" not in message
    assert "rehearsal.dsnSecretRef" in platform.events[0][2]


@pytest.mark.parametrize(
    ("secret", "reason"),
    [
        pytest.param(
            NotFound("secret 'staging' not found"), reasons.SECRET_NOT_FOUND, id="missing"
        ),
        pytest.param(
            SecretNotPermitted("lacks the label"), reasons.SECRET_NOT_PERMITTED, id="not-permitted"
        ),
        pytest.param("postgresql://a:b@c:notaport/d", reasons.INVALID_DSN, id="malformed"),
    ],
)
async def test_unusable_secret_waits(
    secret: str | Exception, reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform, session = FakePlatform(secrets={"staging": secret}), FakeSession()
    fake = FakeRehearsal(RehearsalStatus(result="Passed"))
    p = make_pass(platform, session, dsnSecretRef={"name": "staging", "key": "dsn"})
    await run(p, fake, monkeypatch)
    assert fake.requests == []
    assert ready(platform)["reason"] == reason
    assert "rehearsal" not in platform.status
