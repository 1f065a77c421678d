"""OpenTelemetryHooks through the SDK's in-memory exporter and reader, on both backends:
the span tree, retries and failures, one trace across suspensions and across apps, the
metrics, and the trace context for outgoing CloudEvents."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import romancy_nb as rn
from romancy_nb.telemetry import OpenTelemetryHooks, trace_extensions
from romancy_nb.testing import eventually
from tests.conftest import FAST_RETRY

ATTEMPTS: dict[str, int] = {}
USER: dict[str, TracerProvider] = {}
"""The tracer provider user code in an activity makes its spans with (set by the test)."""


@rn.activity
async def ot_step(ctx: rn.ActivityContext, label: str) -> str:
    return label


@rn.activity
def ot_sync_traced(ctx: rn.ActivityContext) -> dict[str, str]:
    """A sync activity (a worker thread) making a span of its own and reading the headers."""
    with USER["provider"].get_tracer("user").start_as_current_span("user work"):
        pass
    return trace_extensions()


@rn.activity
async def ot_flaky(ctx: rn.ActivityContext, key: str) -> str:
    ATTEMPTS[key] = ATTEMPTS.get(key, 0) + 1
    if ATTEMPTS[key] < 3:
        raise ConnectionError(f"attempt {ATTEMPTS[key]} fails")
    return "ok"


@rn.activity
async def ot_broken(ctx: rn.ActivityContext) -> None:
    raise ValueError("broken for good")


@rn.workflow
async def ot_two_steps(ctx: rn.WorkflowContext) -> str:
    await ot_step(ctx, "a")
    return await ot_step(ctx, "b")


@rn.workflow
async def ot_retrying(ctx: rn.WorkflowContext, key: str) -> str:
    return await ot_flaky(ctx, key)


@rn.workflow
async def ot_failing(ctx: rn.WorkflowContext) -> None:
    await ot_broken(ctx)


@rn.workflow
async def ot_waiting(ctx: rn.WorkflowContext) -> Any:
    await ot_step(ctx, "before")
    await ctx.sleep(0.05)
    event = await ctx.wait_event("ot.go")
    await ot_step(ctx, "after")
    return event.data


@rn.workflow
async def ot_headers(ctx: rn.WorkflowContext) -> dict[str, str]:
    return await ot_sync_traced(ctx)


@dataclass
class Telemetry:
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader
    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    def hooks(self) -> OpenTelemetryHooks:
        return OpenTelemetryHooks(self.tracer_provider, self.meter_provider)

    def finished(self, prefix: str = "") -> list[ReadableSpan]:
        return [s for s in self.spans.get_finished_spans() if s.name.startswith(prefix)]

    def metric(self, name: str) -> list[Any]:
        data = self.metrics.get_metrics_data()
        assert data is not None
        return [
            point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    yield Telemetry(spans, reader, tracer_provider, meter_provider)
    tracer_provider.shutdown()
    meter_provider.shutdown()


def _parent(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def test_a_workflow_span_with_activity_children(store_url: str, telemetry: Telemetry) -> None:
    async with rn.App(store_url, hooks=telemetry.hooks()) as app:
        iid = await app.start(ot_two_steps)
        assert await app.result(iid, timeout=30) == "b"
    [workflow] = telemetry.finished("workflow")
    activities = telemetry.finished("activity")
    assert workflow.name == "workflow ot_two_steps"
    assert workflow.parent is None
    assert workflow.attributes is not None
    assert workflow.attributes["romancy.instance_id"] == iid
    assert workflow.attributes["romancy.status"] == "completed"
    assert [s.name for s in activities] == ["activity ot_step", "activity ot_step"]
    for span in activities:
        assert span.context.trace_id == workflow.context.trace_id
        assert _parent(span) == workflow.context.span_id
        assert span.attributes is not None and span.attributes["romancy.step_id"]
        assert span.status.status_code is StatusCode.UNSET
    [started] = telemetry.metric("romancy.workflow.started")
    [completed] = telemetry.metric("romancy.workflow.completed")
    assert (started.value, completed.value) == (1, 1)
    assert started.attributes == {"romancy.workflow": "ot_two_steps"}
    [durations] = telemetry.metric("romancy.activity.duration")
    assert durations.count == 2


async def test_a_retried_activity_and_a_failed_workflow(
    store_url: str, telemetry: Telemetry
) -> None:
    async with rn.App(store_url, default_retry=FAST_RETRY, hooks=telemetry.hooks()) as app:
        retrying = await app.start(ot_retrying, store_url)
        assert await app.result(retrying, timeout=30) == "ok"
        failing = await app.start(ot_failing)
        with pytest.raises(rn.RetryExhaustedError):
            await app.result(failing, timeout=30)
    flaky, broken = telemetry.finished("activity")
    assert flaky.name == "activity ot_flaky"
    retries = [e for e in flaky.events if e.name == "retry"]
    assert [e.attributes["romancy.attempt"] for e in retries] == [1, 2]  # type: ignore[index]
    assert retries[0].attributes["exception.message"] == "attempt 1 fails"  # type: ignore[index]
    assert flaky.status.status_code is StatusCode.UNSET
    assert flaky.attributes is not None and flaky.attributes["romancy.attempt"] == 3

    assert broken.status.status_code is StatusCode.ERROR
    assert [e.name for e in broken.events] == [*["exception", "retry"] * 2, "exception"]
    failed_span = next(s for s in telemetry.finished("workflow") if s.name.endswith("failing"))
    assert failed_span.status.status_code is StatusCode.ERROR
    assert failed_span.attributes is not None
    assert failed_span.attributes["romancy.status"] == "failed"

    [failed] = telemetry.metric("romancy.workflow.failed")
    assert failed.value == 1
    attempts = {
        (p.attributes["romancy.activity"], p.attributes["romancy.outcome"]): p.value
        for p in telemetry.metric("romancy.activity.attempts")
    }
    assert attempts == {
        ("ot_flaky", "retried"): 2,
        ("ot_flaky", "completed"): 1,
        ("ot_broken", "retried"): 2,
        ("ot_broken", "failed"): 1,
    }


async def test_a_suspended_and_resumed_workflow_stays_in_one_trace(
    store_url: str, telemetry: Telemetry
) -> None:
    async with rn.App(store_url, hooks=telemetry.hooks()) as app:
        iid = await app.start(ot_waiting)
        await eventually(lambda: app.get_instance(iid).status == "waiting_for_event")
        await app.send_event("ot.go", {"n": 1})
        assert await app.result(iid, timeout=30) == {"n": 1}
    first, *resumed = telemetry.finished("workflow")
    assert first.attributes is not None
    assert first.attributes["romancy.status"] == "waiting_for_timer"
    assert first.parent is None
    assert [s.attributes["romancy.status"] for s in resumed] == [  # type: ignore[index]
        "waiting_for_event",
        "completed",
    ]
    for span in resumed:
        assert span.context.trace_id == first.context.trace_id
        assert _parent(span) == first.context.span_id
        assert span.attributes is not None and span.attributes["romancy.resumed"] is True
    before, after = telemetry.finished("activity")
    assert _parent(before) == first.context.span_id
    assert _parent(after) == resumed[-1].context.span_id


async def test_the_trace_continues_in_another_app(store_url: str, telemetry: Telemetry) -> None:
    async with rn.App(store_url, hooks=telemetry.hooks()) as app:
        iid = await app.start(ot_waiting)
        await eventually(lambda: app.get_instance(iid).status == "waiting_for_event")
    [first, _] = telemetry.finished("workflow")  # to the timer, then to the event

    other = Telemetry(
        InMemorySpanExporter(), InMemoryMetricReader(), TracerProvider(), MeterProvider()
    )
    other.tracer_provider.add_span_processor(SimpleSpanProcessor(other.spans))
    try:
        async with rn.App(store_url, hooks=other.hooks()) as app:
            await app.send_event("ot.go", {"n": 2})
            assert await app.result(iid, timeout=30) == {"n": 2}
        [resumed] = other.finished("workflow")
        [after] = other.finished("activity")
    finally:
        other.tracer_provider.shutdown()
    assert resumed.context.trace_id == first.context.trace_id
    assert _parent(resumed) == first.context.span_id
    assert _parent(after) == resumed.context.span_id


async def test_spans_nest_under_the_activity_and_the_headers_name_it(
    store_url: str, telemetry: Telemetry
) -> None:
    USER["provider"] = telemetry.tracer_provider
    async with rn.App(store_url, hooks=telemetry.hooks()) as app:
        headers = await app.result(await app.start(ot_headers), timeout=30)
    [activity] = telemetry.finished("activity")
    [user] = telemetry.finished("user work")
    assert _parent(user) == activity.context.span_id
    trace_id = format(activity.context.trace_id, "032x")
    span_id = format(activity.context.span_id, "016x")
    flags = format(activity.context.trace_flags, "02x")
    assert headers == {"traceparent": f"00-{trace_id}-{span_id}-{flags}"}
    assert trace_extensions() == {}  # outside any run: no span is current


async def test_a_start_inside_a_span_joins_its_trace(store_url: str, telemetry: Telemetry) -> None:
    tracer = telemetry.tracer_provider.get_tracer("caller")
    async with rn.App(store_url, hooks=telemetry.hooks()) as app:
        with tracer.start_as_current_span("request") as request:
            iid = await app.start(ot_two_steps)
        await app.result(iid, timeout=30)
    [workflow] = telemetry.finished("workflow")
    assert workflow.context.trace_id == request.get_span_context().trace_id
    assert _parent(workflow) == request.get_span_context().span_id


async def test_a_run_this_worker_recovers_is_not_a_child_of_what_was_current(
    store_url: str, telemetry: Telemetry
) -> None:
    # A client that runs nothing starts the instance; a worker picks it up while it opens
    # inside an unrelated span. The run was not caused by that span: a trace of its own.
    tracer = telemetry.tracer_provider.get_tracer("caller")
    async with rn.App(store_url, max_concurrent=0) as client:
        iid = await client.start(ot_two_steps)
    with tracer.start_as_current_span("unrelated") as unrelated:
        async with rn.App(store_url, hooks=telemetry.hooks()) as worker:
            await worker.result(iid, timeout=30)
    [workflow] = telemetry.finished("workflow")
    assert workflow.parent is None
    assert workflow.context.trace_id != unrelated.get_span_context().trace_id
