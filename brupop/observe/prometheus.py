"""An async client for the Prometheus HTTP API's instant queries (`GET <url>/api/v1/query`), over httpx.

Every call returns a fact (`brupop.models.health.Outcome`): the typed result, or what went wrong in words
(unreachable, timed out, an HTTP error, Prometheus's own PromQL error, an answer that does not follow the
API, a token or CA file that cannot be read). Nothing a server sends can raise out of `query`; only a
cancellation of the caller does.

Credentials change while brupop runs: the bearer token file is read again for every query (projected
service-account tokens rotate), and the CA file is read again whenever it changes on disk (cert-manager
renews). Answers are read up to `max_answer` bytes, so a query matching millions of series costs a bounded
amount of memory and comes back as a bad answer that says so.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import httpx

from brupop.models.health import (
    Answer,
    BadAnswer,
    HttpError,
    Matrix,
    NotSent,
    Outcome,
    QueryError,
    Result,
    Sample,
    Scalar,
    Series,
    String,
    TimedOut,
    Unreachable,
    Vector,
)
from brupop.models.policy import PrometheusSource, duration

MAX_ANSWER: Final = 4 * 1024 * 1024
"""Bytes of an answer read at most (about 20,000 series of a typical alert)."""
_BODY_EXCERPT: Final = 200


class _NotTheApiError(ValueError):
    """An answer that does not follow the API (inside the reader only: `query` returns BadAnswer)."""


class PrometheusClient:
    """Instant queries to one Prometheus server. Use as an async context manager, or call `aclose`."""

    def __init__(
        self,
        *,
        url: str,
        timeout: timedelta,
        bearer_token_file: str | None = None,
        ca_file: str | None = None,
        max_answer: int = MAX_ANSWER,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._token_file = None if bearer_token_file is None else Path(bearer_token_file)
        self._ca_file = None if ca_file is None else Path(ca_file)
        self._max_answer = max_answer
        self._transport = transport
        self._clock = clock
        self._http: httpx.AsyncClient | None = None
        self._ca_seen: tuple[int, int] | None = None

    @classmethod
    def for_source(cls, source: PrometheusSource, **options: Any) -> PrometheusClient:
        """A client for a policy's Prometheus settings (`options`: transport, clock, max_answer)."""
        return cls(
            url=source.url,
            timeout=duration(source.timeout),
            bearer_token_file=source.bearer_token_file,
            ca_file=source.ca_file,
            **options,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def query(self, promql: str, *, at: datetime | None = None) -> Outcome:
        """Evaluate `promql` at `at` (default: Prometheus's now)."""
        asked = self._clock()
        try:
            headers = self._headers()
            http = await self._client()
        except ssl.SSLError as err:  # an OSError too: first
            detail = getattr(err, "reason", None) or err
            why = f"the CA file {self._ca_file} holds no PEM certificates ({detail})"
            return NotSent(url=self.url, reason=why)
        except OSError as err:
            return NotSent(url=self.url, reason=_os_reason(err))
        params = {"query": promql, "timeout": f"{self.timeout.total_seconds():g}"}  # seconds
        if at is not None:
            params["time"] = f"{at.timestamp():.3f}"
        try:
            async with asyncio.timeout(self.timeout.total_seconds()):
                status, body, complete = await self._get(http, params, headers)
        except (TimeoutError, httpx.TimeoutException):
            return TimedOut(url=self.url, after=self.timeout)
        except httpx.DecodingError as err:
            return BadAnswer(url=self.url, reason=f"the body cannot be decoded ({err})")
        except httpx.RequestError as err:
            return Unreachable(url=self.url, reason=_transport_reason(err))
        if not complete:
            reason = f"the answer is larger than {self._max_answer} bytes: narrow the query"
            return BadAnswer(url=self.url, reason=reason)
        return outcome(url=self.url, query=promql, asked=asked, status=status, body=body)

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self._token_file is not None:
            token = self._token_file.read_text(errors="replace").strip()
            if not token or not token.isascii() or not token.isprintable() or " " in token:
                raise OSError(f"the bearer token file {self._token_file} holds no token (one printable word)")
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def _client(self) -> httpx.AsyncClient:
        """The pooled HTTP client, made again when the CA file has changed."""
        seen = None
        if self._ca_file is not None:
            stat = os.stat(self._ca_file)
            seen = (stat.st_mtime_ns, stat.st_size)
        if self._http is None or seen != self._ca_seen:
            verify: ssl.SSLContext | bool = True
            if self._ca_file is not None:
                verify = ssl.create_default_context(cafile=str(self._ca_file))
            await self.aclose()
            self._http = httpx.AsyncClient(
                base_url=self.url + "/",
                verify=verify,
                timeout=self.timeout.total_seconds(),
                transport=self._transport,
                follow_redirects=False,
            )
            self._ca_seen = seen
        return self._http

    async def _get(
        self, http: httpx.AsyncClient, params: Mapping[str, str], headers: Mapping[str, str]
    ) -> tuple[int, bytes, bool]:
        """Status, the body up to max_answer bytes, and whether that is all of it."""
        async with http.stream("GET", "api/v1/query", params=params, headers=headers) as response:
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > self._max_answer:
                    return response.status_code, bytes(body[: self._max_answer]), False
            return response.status_code, bytes(body), True


def outcome(*, url: str, query: str, asked: datetime, status: int, body: bytes) -> Outcome:
    """What an HTTP answer to an instant query means, whatever its status and body."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nested too deep to be an answer
        document = None
    if isinstance(document, dict) and document.get("status") == "error":
        return QueryError(
            url=url,
            error_type=str(document.get("errorType") or "unknown"),
            message=str(document.get("error") or "(no message)"),
        )
    if not 200 <= status < 300:
        return HttpError(url=url, status=status, body=_excerpt(body))
    if document is None:
        return BadAnswer(url=url, reason=f"not JSON: {_excerpt(body)!r}")
    try:
        result, warnings = read_answer(document)
    except _NotTheApiError as err:
        return BadAnswer(url=url, reason=str(err))
    return Answer(query=query, at=asked, result=result, warnings=warnings)


def read_answer(document: object) -> tuple[Result, tuple[str, ...]]:
    """A successful query's JSON (`{"status": "success", "data": {...}}`) as a typed result and warnings."""
    if not isinstance(document, dict) or document.get("status") != "success":
        raise _NotTheApiError('expected an object with "status": "success"')
    data = document.get("data")
    if not isinstance(data, dict):
        raise _NotTheApiError('"data" is not an object')
    kind, result = data.get("resultType"), data.get("result")
    warnings = document.get("warnings", [])
    if not isinstance(warnings, list):
        raise _NotTheApiError('"warnings" is not a list')
    notes = tuple(str(w) for w in warnings)
    if kind == "vector":
        return Vector(tuple(_sample(item, at=f"data.result[{i}]") for i, item in _items(result))), notes
    if kind == "matrix":
        return Matrix(tuple(_series(item, at=f"data.result[{i}]") for i, item in _items(result))), notes
    if kind == "scalar":
        return Scalar(_float(_point(result, at="data.result")[1], at="data.result")), notes
    if kind == "string":
        value = _point(result, at="data.result")[1]
        if not isinstance(value, str):
            raise _NotTheApiError("data.result: a string result's value is not a string")
        return String(value), notes
    raise _NotTheApiError(f"data.resultType: {kind!r} is not vector, matrix, scalar or string")


def _items(value: object) -> enumerate[Any]:
    if not isinstance(value, list):
        raise _NotTheApiError("data.result is not a list")
    return enumerate(value)


def _labels(item: dict[str, Any], at: str) -> dict[str, str]:
    metric = item.get("metric", {})
    if not isinstance(metric, dict) or not all(isinstance(v, str) for v in metric.values()):
        raise _NotTheApiError(f"{at}.metric: labels are not an object of strings")
    return dict(metric)


def _point(value: object, *, at: str) -> tuple[float, object]:
    if not isinstance(value, list) or len(value) != 2:
        raise _NotTheApiError(f"{at}: expected [time, value]")
    moment = value[0]
    if isinstance(moment, bool) or not isinstance(moment, int | float):
        raise _NotTheApiError(f"{at}: the time is not a number")
    return float(moment), value[1]


def _float(value: object, *, at: str) -> float:
    # Prometheus writes sample values as strings: "1", "0.5", "NaN", "+Inf", "-Inf".
    if not isinstance(value, str):
        raise _NotTheApiError(f"{at}: the value is not a string")
    try:
        return float(value)
    except ValueError:
        raise _NotTheApiError(f"{at}: {value!r} is not a number") from None


def _object(item: object, at: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise _NotTheApiError(f"{at}: not an object")
    return item


def _sample(item: object, *, at: str) -> Sample:
    found = _object(item, at)
    labels = _labels(found, at)
    if "histogram" in found:
        _point(found["histogram"], at=f"{at}.histogram")
        return Sample(labels=labels, value=None)
    value = _point(found.get("value"), at=f"{at}.value")[1]
    return Sample(labels=labels, value=_float(value, at=f"{at}.value"))


def _series(item: object, *, at: str) -> Series:
    found = _object(item, at)
    points: list[tuple[float, float | None]] = []
    values, histograms = found.get("values", []), found.get("histograms", [])
    if not isinstance(values, list) or not isinstance(histograms, list):
        raise _NotTheApiError(f"{at}: values and histograms must be lists")
    for j, point in enumerate(values):
        moment, value = _point(point, at=f"{at}.values[{j}]")
        points.append((moment, _float(value, at=f"{at}.values[{j}]")))
    for j, point in enumerate(histograms):
        points.append((_point(point, at=f"{at}.histograms[{j}]")[0], None))
    return Series(labels=_labels(found, at), points=tuple(sorted(points, key=lambda p: p[0])))


def _excerpt(body: bytes) -> str:
    text = body[:_BODY_EXCERPT].decode("utf-8", errors="replace").strip()
    return " ".join(text.split())


def _os_reason(err: OSError) -> str:
    if err.filename is not None and err.strerror:
        return f"cannot read {err.filename}: {err.strerror.lower()}"
    return str(err)


def _transport_reason(err: httpx.RequestError) -> str:
    """The root cause in words: connection refused, name not known, certificate not trusted, ..."""
    cause: BaseException | None = err
    seen: set[int] = set()
    while cause is not None and id(cause) not in seen:  # chains can loop
        seen.add(id(cause))
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"TLS certificate not trusted ({cause.verify_message})"
        if isinstance(cause, ssl.SSLError):
            return f"TLS failed ({getattr(cause, 'reason', None) or cause.strerror or cause})"
        if isinstance(cause, OSError) and (cause.strerror or cause.errno):
            # asyncio words a refusal "Connect call failed (...)": the errno says it better. Name lookups'
            # errors (negative EAI_* codes) have only their own words.
            code = cause.errno
            return (os.strerror(code) if code is not None and code > 0 else str(cause.strerror)).lower()
        cause = cause.__cause__ or cause.__context__
    return str(err).strip().lower() or type(err).__name__
