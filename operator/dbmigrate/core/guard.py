"""The blocking guard's decision: does a statement of ours make the application wait too long?

Pure. While one of our statements runs (a step's SQL, a backfill batch), `dbmigrate.db.guard`
samples the sessions waiting on it — directly, or queued behind another waiter that waits on it
(PostgreSQL's lock queue: an ACCESS EXCLUSIVE request makes every later request wait too) — and
asks here whether to cancel it, how often to look, and how to say what happened.

Rules, decided here once:

- The statement is cancelled when the longest wait of another session on it has reached
  `safety.maxBlockedDuration`. The sessions of dbmigrate itself do not count.
- The guard looks every quarter of that limit, at least every 250 ms and at most every 50 ms:
  an application query waits at most the limit plus one sampling interval plus the time the
  cancel takes to roll our transaction back.
"""

from __future__ import annotations

from dataclasses import dataclass

# How often the guard samples, as a fraction of the limit, and the bounds of that interval.
SAMPLES_PER_LIMIT = 4
MIN_INTERVAL = 0.05
MAX_INTERVAL = 0.25


@dataclass(frozen=True)
class BlockedSample:
    """What one look at the lock waits found: sessions waiting on our backend, and the longest
    wait among them in seconds."""

    waiters: int = 0
    longest_wait: float = 0.0


def sample_interval(max_blocked: float) -> float:
    """Seconds between two samples for a limit of `max_blocked` seconds."""
    return min(MAX_INTERVAL, max(MIN_INTERVAL, max_blocked / SAMPLES_PER_LIMIT))


def breached(sample: BlockedSample, max_blocked: float) -> bool:
    """Whether the statement under watch must be cancelled."""
    return sample.waiters > 0 and sample.longest_wait >= max_blocked


def describe_episode(sample: BlockedSample, what: str) -> str:
    """`3 application queries waited 2.1s on ALTER TABLE users ...`."""
    queries = "query" if sample.waiters == 1 else "queries"
    return f"{sample.waiters} application {queries} waited {sample.longest_wait:.1f}s on {what}"


def retry_text(attempt: int, limit: int) -> str:
    """What happens after an episode: `cancelled, retry 1/30` or `cancelled; no retries left`."""
    if attempt > limit:
        return f"cancelled; no retries left ({limit})"
    return f"cancelled, retry {attempt}/{limit}"
