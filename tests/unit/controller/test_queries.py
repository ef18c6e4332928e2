"""Prometheus queries asked on tasks of their own (respx stands in for Prometheus): asked at once when first
wanted and again at the cadence, shared by the owners that want them, forgotten when nobody does, the
reconciler poked only when an outcome changes meaning, and outcomes older than a moment left out."""

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import respx
from structlog.testing import capture_logs

from brupop.controller.queries import PrometheusQueries, Query
from brupop.models.health import Answer, Outcome, Unreachable, Vector
from brupop.models.policy import HealthQuery, PrometheusGate
from brupop.observe.prometheus import PrometheusClient
from tests.unit.controller.pokes import Pokes

URL = "http://prometheus.test:9090"
QUERY_URL = f"{URL}/api/v1/query"
ALERTS = 'ALERTS{alertstate="firing"}'
NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)


def vector(*alerts: str) -> dict[str, Any]:
    result = [{"metric": {"alertname": a, "alertstate": "firing"}, "value": [1, "1"]} for a in alerts]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


GATE = Query.of(PrometheusGate.from_wire({"url": URL, "query": ALERTS}))


def test_a_query_is_the_same_for_a_gate_and_a_health_query_with_the_same_source_and_promql() -> None:
    health = HealthQuery.from_wire({"url": URL, "query": ALERTS, "expect": "NonEmpty", "failOpen": True})
    assert Query.of(health) == GATE
    assert Query.of(PrometheusGate.from_wire({"url": URL, "query": ALERTS, "timeout": "3s"})) != GATE
    assert GATE.timeout == timedelta(seconds=10)


@respx.mock
async def test_a_wanted_query_is_asked_at_once_then_at_the_cadence_and_pokes_only_on_change() -> None:
    answers = [vector("Boom"), vector("Boom"), vector("Boom"), vector()]

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=answers.pop(0) if len(answers) > 1 else answers[0])

    route = respx.get(QUERY_URL).mock(side_effect=answer)
    pokes = Pokes()
    queries = PrometheusQueries(interval=timedelta(milliseconds=5), on_change=pokes, clock=Clock())
    assert queries.outcome(GATE) is None
    queries.want("gates", [GATE])
    await pokes.until(lambda: pokes.count)
    first = queries.outcome(GATE)
    assert isinstance(first, Answer)
    assert first.result == Vector(first.result.samples)
    assert [s.labels["alertname"] for s in first.result.samples] == ["Boom"]
    await pokes.until(lambda: pokes.count == 2)  # three answers alike, then the alert cleared
    assert route.call_count >= 4
    cleared = queries.outcome(GATE)
    assert isinstance(cleared, Answer)
    assert cleared.result == Vector(())
    await queries.aclose()


@respx.mock
async def test_a_query_nobody_wants_is_no_longer_asked_and_its_outcome_is_forgotten() -> None:
    asked = Pokes()

    def answer(request: httpx.Request) -> httpx.Response:
        asked()
        return httpx.Response(200, json=vector())

    respx.get(QUERY_URL).mock(side_effect=answer)
    pokes = Pokes()
    queries = PrometheusQueries(interval=timedelta(milliseconds=1), on_change=pokes, clock=Clock())
    queries.want("gates", [GATE])
    queries.want("verification", [GATE])
    await pokes.until(lambda: pokes.count)
    queries.want("gates", [])
    assert queries.outcome(GATE) is not None  # verification still wants it
    calls = asked.count
    await asked.until(lambda: asked.count > calls)  # and it is still asked
    assert queries.asking == frozenset({GATE})
    queries.want("verification", [])
    assert queries.outcome(GATE) is None
    assert queries.asking == frozenset()
    await queries.aclose()


@respx.mock
async def test_an_outcome_asked_before_a_moment_is_left_out_and_a_failure_is_an_outcome() -> None:
    respx.get(QUERY_URL).mock(side_effect=httpx.ConnectError("[Errno 111] Connection refused"))
    pokes = Pokes()
    clock = Clock()
    queries = PrometheusQueries(interval=timedelta(hours=1), on_change=pokes, clock=clock)
    queries.want("verification", [GATE])
    await pokes.until(lambda: pokes.count)
    down = queries.outcome(GATE)
    assert isinstance(down, Unreachable)
    assert queries.outcome(GATE, since=NOW) == down
    assert queries.outcome(GATE, since=NOW + timedelta(seconds=1)) is None
    clock.now = NOW + 2 * (timedelta(hours=1) + GATE.timeout)
    assert queries.outcome(GATE) == down
    clock.now += timedelta(seconds=1)
    assert queries.outcome(GATE) is None  # its task should have asked again: too old to use
    await queries.aclose()


class Broken(PrometheusClient):
    async def query(self, promql: str, *, at: datetime | None = None) -> Outcome:
        raise RuntimeError("a bug")


async def test_a_query_task_that_dies_is_reported_and_started_again_by_the_next_want() -> None:
    made: list[Broken] = []

    def client(query: Query) -> Broken:
        made.append(Broken(url=query.url, timeout=query.timeout))
        return made[-1]

    queries = PrometheusQueries(
        interval=timedelta(hours=1), on_change=lambda: None, clock=Clock(), client=client
    )
    with capture_logs() as logs:
        queries.want("gates", [GATE])
        (task,) = queries._tasks.values()
        with pytest.raises(RuntimeError):
            await task
    assert queries.outcome(GATE) is None
    assert queries.asking == frozenset()
    assert [entry["event"] for entry in logs] == [
        "a Prometheus query's task ended; it is asked again at the next pass"
    ]
    queries.want("gates", [GATE])
    (again,) = queries._tasks.values()
    assert again is not task
    with pytest.raises(RuntimeError):
        await again  # asked again (and, this client being broken, dead again)
    assert len(made) == 2
    await queries.aclose()
