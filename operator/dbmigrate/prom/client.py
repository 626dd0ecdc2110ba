"""The Prometheus HTTP API client the SLO analysis reads its measurements with.

Owns the two questions the analysis asks: "what is this query's value now?" (`query`, an
instant query) and "what was it on average over the baseline window?" (`query_average`, a
range query averaged). Every answer is a `QueryResult`; nothing here raises for a bad
answer. An empty vector, several series, NaN/Inf, an HTTP error, a timeout, a refused
connection, a Prometheus `status: error` — each becomes a result without a value and with a
message a person can act on, because the analysis must call those Inconclusive, never Failed.

Credentials may be given in the address (`https://user:password@prometheus:9090`): they are
moved into HTTP basic auth and never appear in messages or logs (`redact` is the form shown).
`probe` asks one trivial question with a short timeout: is the analysis possible at all?
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import httpx

from dbmigrate.core.slo import QueryResult

log = logging.getLogger(__name__)

# Prometheus answers fast or not at all; the analysis runs every `interval` and a slow
# Prometheus must not hold up a reconcile pass for long.
DEFAULT_TIMEOUT = 10.0
# A baseline averages at most this many points, whatever the window's length.
BASELINE_POINTS = 60
_BODY_SNIPPET = 200


def redact(address: str) -> str:
    """The address without user info or query string: safe to log and to put in status."""
    try:
        url = httpx.URL(address)
    except (httpx.InvalidURL, TypeError):
        return "<invalid Prometheus address>"
    return str(url.copy_with(userinfo=b"", query=None, fragment=None))


# A probe before anything runs: a Prometheus that cannot answer `vector(1)` in this long will
# not answer the analysis either, and a person is waiting for the first line of output.
PROBE_TIMEOUT = 3.0


async def probe(address: str) -> str | None:
    """None when Prometheus at `address` answers a trivial query; else why not, in words.

    The question is the analysis's own (an instant query on the HTTP API), so anything that
    answers it (Prometheus, Thanos, Mimir's Prometheus API) passes.
    """
    async with PrometheusClient(address, timeout=PROBE_TIMEOUT) as prom:
        result = await prom.query("vector(1)")
    return None if result.value is not None else result.error or "no answer"


def _timestamp(at: datetime) -> float:
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.timestamp()


class PrometheusClient:
    """An async client of one Prometheus server's HTTP API.

    Use as `async with PrometheusClient(address) as prom: ...` (or call `aclose`).
    """

    def __init__(self, address: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.address = redact(address)
        self.timeout = timeout
        self._invalid: str | None = None
        try:
            url = httpx.URL(address)
            if url.scheme not in ("http", "https") or not url.host:
                raise httpx.InvalidURL("not an http(s) URL with a host")
        except (httpx.InvalidURL, TypeError) as exc:
            # A bad address is a bad answer to every query, not a crash of the caller.
            self._invalid = f"invalid Prometheus address: {exc}"
            url = httpx.URL("http://invalid.invalid")
        auth = httpx.BasicAuth(url.username, url.password) if url.username else None
        self._http = httpx.AsyncClient(
            base_url=url.copy_with(userinfo=b"", fragment=None),
            auth=auth,
            timeout=httpx.Timeout(timeout),
            headers={"Accept": "application/json"},
        )

    async def __aenter__(self) -> PrometheusClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- the two questions ----------------------------------------------------------------

    async def query(self, promql: str, at: datetime | None = None) -> QueryResult:
        """The value of an instant query (now, or `at`): one series or a scalar."""
        params: dict[str, str | float] = {"query": promql}
        if at is not None:
            params["time"] = _timestamp(at)
        data = await self._get("api/v1/query", params)
        if isinstance(data, QueryResult):
            return data
        return _instant_value(data)

    async def query_average(self, promql: str, start: datetime, end: datetime) -> QueryResult:
        """The query's average over [start, end]: the baseline of a ratio threshold.

        Evaluated with `/api/v1/query_range` at a step of max(1s, window/60); the finite
        samples are averaged (points where the query had no value or NaN do not count).
        """
        first, last = _timestamp(start), _timestamp(end)
        if last <= first:
            return QueryResult.failed(
                f"empty baseline window ({start.isoformat()} .. {end.isoformat()})"
            )
        step = max(1.0, (last - first) / BASELINE_POINTS)
        params: dict[str, str | float] = {
            "query": promql,
            "start": first,
            "end": last,
            "step": step,
        }
        data = await self._get("api/v1/query_range", params)
        if isinstance(data, QueryResult):
            return data
        return _range_average(data)

    # --- transport ------------------------------------------------------------------------

    async def _get(self, path: str, params: dict[str, str | float]) -> dict[str, Any] | QueryResult:
        """The `data` member of a successful answer, or a failed result saying what went wrong."""
        # Prometheus stops evaluating at its own timeout; ours bounds the whole exchange
        # (httpx's timeout is per read, a slow trickle could outlast it).
        if self._invalid:
            return self._failed(self._invalid)
        params = {**params, "timeout": f"{self.timeout:g}"}
        try:
            async with asyncio.timeout(self.timeout):
                response = await self._http.get(path, params=params)
        except (TimeoutError, httpx.TimeoutException):
            return self._failed(f"Prometheus at {self.address} did not answer in {self.timeout:g}s")
        except httpx.ConnectError as exc:
            return self._failed(f"cannot connect to Prometheus at {self.address}: {_why(exc)}")
        except (httpx.HTTPError, OSError) as exc:
            return self._failed(f"request to Prometheus at {self.address} failed: {_why(exc)}")

        try:
            body = response.json()
        except ValueError:
            body = None
        # Nothing of the answer's body goes into the message (status and Events, which the
        # migration's namespace reads): the address may point at any service the operator can
        # reach. The body goes to the operator's own log.
        if isinstance(body, dict) and body.get("status") == "error":
            kind = str(body.get("errorType") or "error")
            log.info("Prometheus at %s rejected a query: %s", self.address, body.get("error"))
            kind = kind if kind.isidentifier() and len(kind) <= 32 else "error"
            return self._failed(
                f"Prometheus rejected the query ({kind}); try it in Prometheus's own UI"
            )
        if response.status_code >= 400:
            log.info(
                "Prometheus at %s answered HTTP %s: %s",
                self.address,
                response.status_code,
                response.text[:_BODY_SNIPPET].strip(),
            )
            return self._failed(
                f"Prometheus at {self.address} answered HTTP {response.status_code}"
            )
        if not isinstance(body, dict) or body.get("status") != "success":
            return self._failed(f"Prometheus at {self.address} sent an answer that is not its API")
        data = body.get("data")
        if not isinstance(data, dict):
            return self._failed("Prometheus answer has no data")
        return data

    def _failed(self, message: str) -> QueryResult:
        log.debug("prometheus query failed: %s", message)
        return QueryResult.failed(message)


def _why(exc: BaseException) -> str:
    """The root cause of a transport error in a few words.

    httpx's own message is often generic ("All connection attempts failed"); the cause
    chain holds the useful part (ECONNREFUSED, a name that does not resolve, a TLS problem).
    """
    chain: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and len(chain) < 10:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    for err in chain:
        if isinstance(err, ConnectionRefusedError):
            return "connection refused"
        if isinstance(err, socket.gaierror):
            return f"cannot resolve the host name ({err.strerror or err})"
    root = chain[-1]
    return str(getattr(root, "strerror", None) or root or exc) or type(exc).__name__


# --- answers ----------------------------------------------------------------------------------


def _sample(pair: Any) -> float:
    """A sample `[unix_time, "value"]` as a float (Prometheus sends values as strings)."""
    return float(pair[1])


def _instant_value(data: dict[str, Any]) -> QueryResult:
    try:
        kind = data.get("resultType")
        result = data.get("result")
        if kind == "scalar":
            return QueryResult.of(_sample(result))
        if kind == "vector":
            if not result:
                return QueryResult.failed(
                    "query returned no data (empty vector): no such series, "
                    "or none in the lookback window"
                )
            if len(result) > 1:
                return QueryResult.failed(
                    f"query returned {len(result)} series; aggregate it "
                    "(e.g. sum(...)) so it returns one"
                )
            return QueryResult.of(_sample(result[0]["value"]))
        if kind == "matrix":
            return QueryResult.failed(
                "query returned a range vector; use an instant expression (e.g. rate(x[1m]))"
            )
        return QueryResult.failed(f"query returned a {kind}, not a number")
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        return QueryResult.failed(f"unexpected Prometheus answer: {exc!r}")


def _range_average(data: dict[str, Any]) -> QueryResult:
    try:
        if data.get("resultType") != "matrix":
            return QueryResult.failed(
                f"range query returned a {data.get('resultType')}, not a matrix"
            )
        result = data.get("result") or []
        if not result:
            return QueryResult.failed("query returned no data in the baseline window")
        if len(result) > 1:
            return QueryResult.failed(
                f"query returned {len(result)} series; aggregate it "
                "(e.g. sum(...)) so it returns one"
            )
        values = [_sample(pair) for pair in result[0]["values"]]
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        return QueryResult.failed(f"unexpected Prometheus answer: {exc!r}")
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return QueryResult.failed(
            f"no finite value in the baseline window ({len(values)} NaN/Inf samples: "
            "for a ratio, no traffic)"
        )
    return QueryResult.of(math.fsum(finite) / len(finite))
