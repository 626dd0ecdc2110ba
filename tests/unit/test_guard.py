"""The blocking guard's decision (core.guard): when to cancel, how often to look, what to say.

Aspects: the limit is reached when the longest wait of a session on us is at the limit;
nobody waiting is never a breach; the sampling interval is a quarter of the limit within
50-250 ms; the episode and the retry read as events say them.
"""

from __future__ import annotations

import pytest

from dbmigrate.core.guard import (
    BlockedSample,
    breached,
    describe_episode,
    retry_text,
    sample_interval,
)


@pytest.mark.parametrize(
    ("sample", "limit", "expected"),
    [
        pytest.param(BlockedSample(0, 0.0), 2.0, False, id="nobody-waits"),
        pytest.param(BlockedSample(3, 1.99), 2.0, False, id="under-the-limit"),
        pytest.param(BlockedSample(1, 2.0), 2.0, True, id="at-the-limit"),
        pytest.param(BlockedSample(5, 7.5), 2.0, True, id="over-the-limit"),
        pytest.param(BlockedSample(0, 9.0), 2.0, False, id="a-wait-without-waiters"),
    ],
)
def test_breached(sample: BlockedSample, limit: float, expected: bool) -> None:
    assert breached(sample, limit) is expected


@pytest.mark.parametrize(
    ("limit", "interval"),
    [
        pytest.param(0.1, 0.05, id="shortest-limit-floor"),
        pytest.param(0.5, 0.125, id="quarter"),
        pytest.param(2.0, 0.25, id="default-cap"),
        pytest.param(600.0, 0.25, id="longest-limit-cap"),
    ],
)
def test_sample_interval(limit: float, interval: float) -> None:
    assert sample_interval(limit) == pytest.approx(interval)


@pytest.mark.parametrize(
    ("sample", "text"),
    [
        pytest.param(
            BlockedSample(1, 2.04),
            "1 application query waited 2.0s on ALTER TABLE t",
            id="one",
        ),
        pytest.param(
            BlockedSample(3, 2.06),
            "3 application queries waited 2.1s on ALTER TABLE t",
            id="several",
        ),
    ],
)
def test_describe_episode(sample: BlockedSample, text: str) -> None:
    assert describe_episode(sample, "ALTER TABLE t") == text


@pytest.mark.parametrize(
    ("attempt", "limit", "text"),
    [
        pytest.param(1, 30, "cancelled, retry 1/30", id="first"),
        pytest.param(30, 30, "cancelled, retry 30/30", id="last"),
        pytest.param(31, 30, "cancelled; no retries left (30)", id="exhausted"),
        pytest.param(1, 0, "cancelled; no retries left (0)", id="no-retries"),
    ],
)
def test_retry_text(attempt: int, limit: int, text: str) -> None:
    assert retry_text(attempt, limit) == text
