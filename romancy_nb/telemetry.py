"""OpenTelemetry for romancy_nb: spans and metrics from ``App(hooks=OpenTelemetryHooks())``.

Spans. Each run of an instance is a ``workflow <name>`` span; each activity (and each
compensation) step is a child span, ``activity <name>``, from its first attempt to its
end, with a ``retry`` event (and the exception) for every attempt that is retried. The
first run's span starts under whatever span is current where the instance was started
(a web request, say), or a new trace. Its W3C trace context is saved with the instance,
so a run that resumes the instance later — after a sleep or an event, maybe in another
process — is a child of that first span: one trace per instance, across its waits.
While a span is open it is the current span of the workflow code (or of the activity's
body, threads included), so spans made there nest under it, and
:func:`trace_extensions` gives the headers for an outgoing CloudEvent.

Metrics (meter ``romancy_nb``): counters ``romancy.workflow.started``, ``.completed``,
``.failed``, ``.cancelled`` (attribute ``romancy.workflow``), ``romancy.activity.attempts``
(``romancy.activity``, ``romancy.outcome``: completed / retried / failed) and the
histogram ``romancy.activity.duration`` (seconds per attempt).

An edge module: it needs the ``otel`` extra (``opentelemetry-api``; an SDK to export),
and the engine never imports it.
"""

from __future__ import annotations

import time
from contextvars import Token
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from romancy_nb.engine.hooks import ActivityCall, Hooks, RunInfo
from romancy_nb.errors import DeterminismViolation, WorkflowCancelled

_PROPAGATOR = TraceContextTextMapPropagator()
"""W3C trace context (``traceparent``, ``tracestate``) whatever the global propagator is:
what is saved with an instance must read back the same in every process."""

_SCOPE = "romancy_nb"


@dataclass
class _Step:
    """An activity step's open span and the attempt under way."""

    span: Span
    token: Token[otel_context.Context] | None = None
    began: float = 0.0


@dataclass
class _Run:
    """A run's open span, the context token that made it current, its open steps."""

    span: Span
    token: Token[otel_context.Context]
    steps: dict[str, _Step] = field(default_factory=dict)


class OpenTelemetryHooks(Hooks):
    """Spans and metrics for every run, activity and compensation of the app.

    ``tracer_provider`` / ``meter_provider``: where they go (default: the global ones
    set with ``trace.set_tracer_provider`` / ``metrics.set_meter_provider``). Pass it as
    ``App(hooks=OpenTelemetryHooks())``; see the module doc for what is recorded.
    """

    def __init__(self, tracer_provider: Any = None, meter_provider: Any = None) -> None:
        self._tracer = trace.get_tracer(_SCOPE, tracer_provider=tracer_provider)
        meter = metrics.get_meter(_SCOPE, meter_provider=meter_provider)
        self._workflows = {
            event: meter.create_counter(
                f"romancy.workflow.{event}", unit="{workflow}", description=f"workflows {event}"
            )
            for event in ("started", "completed", "failed", "cancelled")
        }
        self._attempts = meter.create_counter(
            "romancy.activity.attempts", unit="{attempt}", description="activity attempts"
        )
        self._duration = meter.create_histogram(
            "romancy.activity.duration", unit="s", description="duration of an activity attempt"
        )
        self._runs: dict[RunInfo, _Run] = {}

    # runs

    def workflow_started(self, run: RunInfo) -> None:
        # Under the span current where the instance was started (its task inherits it).
        span = self._begin(run, otel_context.get_current())
        _PROPAGATOR.inject(run.trace, context=trace.set_span_in_context(span))
        self._workflows["started"].add(1, {"romancy.workflow": run.workflow})

    def workflow_resumed(self, run: RunInfo) -> None:
        # No saved context (an instance started before tracing was on): a new trace.
        parent = _PROPAGATOR.extract(run.trace) if run.trace else otel_context.Context()
        self._begin(run, parent)

    def _begin(self, run: RunInfo, parent: otel_context.Context) -> Span:
        span = self._tracer.start_span(
            f"workflow {run.workflow}",
            context=parent,
            kind=SpanKind.INTERNAL,
            attributes={
                "romancy.instance_id": run.instance_id,
                "romancy.workflow": run.workflow,
                "romancy.resumed": run.resumed,
            },
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        self._runs[run] = _Run(span, token)
        return span

    def workflow_completed(self, run: RunInfo, result: Any) -> None:
        self._workflows["completed"].add(1, {"romancy.workflow": run.workflow})
        self._end(run, "completed")

    def workflow_failed(self, run: RunInfo, error: BaseException) -> None:
        self._workflows["failed"].add(1, {"romancy.workflow": run.workflow})
        self._end(run, "failed", error)

    def workflow_cancelled(self, run: RunInfo, error: WorkflowCancelled) -> None:
        self._workflows["cancelled"].add(1, {"romancy.workflow": run.workflow})
        self._end(run, "cancelled")

    def workflow_suspended(self, run: RunInfo, status: str) -> None:
        self._end(run, status)

    def workflow_stopped(self, run: RunInfo, status: str, error: BaseException | None) -> None:
        self._end(run, status, error)

    def replay_diverged(self, run: RunInfo, violation: DeterminismViolation) -> None:
        state = self._runs.get(run)
        if state is not None:
            state.span.add_event("diverged", {"romancy.message": str(violation)})

    def _end(self, run: RunInfo, status: str, error: BaseException | None = None) -> None:
        state = self._runs.pop(run, None)
        if state is None:
            return
        for step in state.steps.values():  # interrupted (the run was cancelled or stopped)
            step.span.set_attribute("romancy.status", "interrupted")
            step.span.end()
        span = state.span
        span.set_attribute("romancy.status", status)
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        span.end()
        otel_context.detach(state.token)

    # activities

    def activity_started(self, call: ActivityCall) -> None:
        state = self._runs.get(call.run)
        if state is None:
            return
        step = state.steps.get(call.step_id)
        if step is None:
            span = self._tracer.start_span(
                f"{call.kind} {call.activity}",
                context=trace.set_span_in_context(state.span),
                attributes={
                    "romancy.instance_id": call.run.instance_id,
                    "romancy.workflow": call.run.workflow,
                    "romancy.step_id": call.step_id,
                    "romancy.activity": call.activity,
                    "romancy.kind": call.kind,
                },
            )
            step = state.steps[call.step_id] = _Step(span)
        step.span.set_attribute("romancy.attempt", call.attempt)
        step.token = otel_context.attach(trace.set_span_in_context(step.span))
        step.began = time.perf_counter()

    def activity_completed(self, call: ActivityCall) -> None:
        step = self._attempt_ended(call, "completed")
        if step is not None:
            step.span.end()

    def activity_retried(self, call: ActivityCall, error: BaseException, delay: float) -> None:
        state = self._runs.get(call.run)
        step = state.steps.get(call.step_id) if state is not None else None
        if step is not None:
            step.span.record_exception(error)
            step.span.add_event(
                "retry",
                {
                    "romancy.attempt": call.attempt,
                    "romancy.delay": delay,
                    "exception.type": type(error).__name__,
                    "exception.message": str(error),
                },
            )
        self._attempt_ended(call, "retried", keep=True)

    def activity_failed(self, call: ActivityCall, error: BaseException) -> None:
        step = self._attempt_ended(call, "failed")
        if step is not None:
            step.span.record_exception(error)
            step.span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
            step.span.end()

    def _attempt_ended(self, call: ActivityCall, outcome: str, keep: bool = False) -> _Step | None:
        """Count and time the attempt, make the workflow span current again; the step
        (forgotten unless ``keep``: it is retried)."""
        attributes = {
            "romancy.workflow": call.run.workflow,
            "romancy.activity": call.activity,
            "romancy.outcome": outcome,
        }
        self._attempts.add(1, attributes)
        state = self._runs.get(call.run)
        if state is None:
            return None
        step = state.steps.get(call.step_id) if keep else state.steps.pop(call.step_id, None)
        if step is None:
            return None
        self._duration.record(time.perf_counter() - step.began, attributes)
        if step.token is not None:
            otel_context.detach(step.token)
            step.token = None
        return step


def trace_extensions() -> dict[str, str]:
    """The current span's W3C trace context as CloudEvents extension attributes
    (``traceparent``, ``tracestate``; the CloudEvents distributed-tracing extension).

    Inside a workflow or activity traced by :class:`OpenTelemetryHooks` it names that
    span: ``app.send_event(type, data, extensions=trace_extensions())`` lets the receiver
    continue the trace. Empty when no span is current.
    """
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier


__all__ = ["OpenTelemetryHooks", "trace_extensions"]
