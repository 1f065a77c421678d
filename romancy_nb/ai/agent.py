"""``rn.ai.RomancyAgent``: a Pydantic AI agent whose model requests and tool calls are steps.

Built the way Pydantic AI's own durable integrations are (Temporal, DBOS, Prefect), on its
public durable-execution surface: :class:`RomancyDurability` is a
``BaseDurabilityCapability`` whose operation backend runs every durable unit the agent asks
for (a model request, a tool call, an MCP server's tool list or call) as one activity of the
workflow whose context the run was given. The activity's recorded input is the request
(model, messages serialized by Pydantic AI's own codec, settings, tool definitions; or the
tool and its arguments) and its output the answer with its token usage and latency. So a
replay, a resume after a crash or a rewind returns the recorded answers without asking the
model or calling the tool again, and a rewind to a step before a model request asks the
model again from there.

Tools that need a human (``requires_approval=True``, Pydantic AI's deferred tools) end the
agent's run with their calls; :meth:`RomancyAgent.run` then records each call
(``rn.ai.approval``), waits durably for its decision (:func:`approve`, or the notebook
panel's Approve / Reject), and continues the run with the decisions.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from pydantic_ai import (
    DeferredToolRequests,
    DeferredToolResults,
    ModelMessagesTypeAdapter,
    ToolDenied,
)
from pydantic_ai.agent import AbstractAgent, AgentRunResult
from pydantic_ai.durable_exec import (
    JSON_CODEC,
    BaseDurabilityCapability,
    DurabilityEngineSpec,
    DurableOperationId,
    JournalCallableOperationBackend,
    ModelRequestId,
    RoleBasedOperationConfig,
    ToolsetCallToolId,
    ToolsetGetInstructionsId,
    ToolsetGetToolsId,
    conversation_id_from_run_id,
)
from pydantic_ai.durable_exec._operation_backend import in_durable_unit
from pydantic_ai.exceptions import ModelAPIError, ModelHTTPError
from pydantic_ai.tools import AgentDepsT
from pydantic_core import to_jsonable_python

from romancy_nb.engine import Activity, ActivityContext, App, RetryPolicy, WorkflowContext
from romancy_nb.engine import registry as default_registry
from romancy_nb.errors import RomancyError, TerminalError

APPROVAL_STEP = "rn.ai.approval"
"""The activity that records a tool call waiting for a decision (what the panel shows)."""

APPROVAL_EVENT_PREFIX = "rn.ai.approval:"
"""Approval events are ``rn.ai.approval:<instance id>:<tool call id>``: one per call."""


@dataclass(frozen=True)
class _Scope:
    ctx: WorkflowContext
    agent: RomancyAgent


_scope: ContextVar[_Scope | None] = ContextVar("rn.ai.agent.scope", default=None)
_body: ContextVar[Callable[[], Awaitable[object]] | None] = ContextVar(
    "rn.ai.agent.body", default=None
)
_step_context: ContextVar[ActivityContext | None] = ContextVar("rn.ai.agent.step", default=None)


def step_context() -> ActivityContext:
    """The :class:`~romancy_nb.ActivityContext` of the tool call (or compensation) running now.

    A tool of a :class:`RomancyAgent` runs as an activity: ``rn.ai.step_context().session``
    writes rows in the same transaction as the tool call's record, so a crash never leaves
    a row without its step, nor repeats it on resume.
    """
    ctx = _step_context.get()
    if ctx is None:
        raise RomancyError(
            "rn.ai.step_context() is only available inside a tool (or model request) of a "
            "RomancyAgent run, while it runs as a step of a workflow"
        )
    return ctx


def _transient(error: BaseException) -> bool:
    """Whether asking the model again may help: lost connections, rate limits, 5xx."""
    if isinstance(error, ModelHTTPError):
        return error.status_code in (408, 409, 429) or error.status_code >= 500
    if isinstance(error, ModelAPIError):  # no HTTP status: the connection failed
        return True
    import openai

    if isinstance(error, openai.APIConnectionError):
        return True
    if isinstance(error, openai.APIStatusError):
        return error.status_code in (408, 409, 429) or error.status_code >= 500
    return False


def _without_timestamps(value: Any) -> Any:
    """JSON ``value`` without ``timestamp`` keys: a message's time is when the workflow code
    built it, different at every replay, and the recorded input must match on replay."""
    if isinstance(value, dict):
        return {k: _without_timestamps(v) for k, v in value.items() if k != "timestamp"}
    if isinstance(value, list):
        return [_without_timestamps(v) for v in value]
    return value


def _recorded_input(
    operation_id: DurableOperationId, name: str, cache_key: tuple[object, ...]
) -> dict[str, Any]:
    """What a durable unit is asked, as its step's input: no run context, no clock."""
    if isinstance(operation_id, ModelRequestId):
        _, messages, settings, parameters, _ = cache_key
        return {
            "model": operation_id.model_name,
            "messages": _without_timestamps(
                ModelMessagesTypeAdapter.dump_python(messages, mode="json")  # type: ignore[arg-type]
            ),
            "settings": to_jsonable_python(settings),
            "parameters": _without_timestamps(to_jsonable_python(parameters)),
        }
    if isinstance(operation_id, ToolsetCallToolId):
        tool, args = cache_key[0], cache_key[1]
        return {"tool": tool, "args": to_jsonable_python(args)}
    if isinstance(operation_id, ToolsetGetToolsId | ToolsetGetInstructionsId):
        return {"toolset": operation_id.toolset_id}
    return {"operation": name}


class _Steps:
    """One registered activity per durable-unit name, so the saga and the time-travel code
    find them in the registry like any other activity (a compensation included)."""

    def __init__(self) -> None:
        self._steps: dict[str, Activity[Any, Any]] = {}

    def get(
        self,
        name: str,
        *,
        model: bool,
        retry: RetryPolicy | None,
        compensation: Callable[..., Any] | None,
    ) -> Activity[Any, Any]:
        step = self._steps.get(name)
        if step is None or step.retry != retry:
            step = Activity(
                _run_unit_model if model else _run_unit,
                name=name,
                retry=retry,
                transactional=not model,
            )
            if compensation is not None:
                step.compensation(_undo(compensation))
            self._steps[name] = step
            default_registry.add_activity(step)
        return step


async def _unit(ctx: ActivityContext, model: bool) -> dict[str, Any]:
    body = _body.get()
    if body is None:
        raise RomancyError(f"step {ctx.step_id} is a RomancyAgent step: run it through the agent")
    token = _step_context.set(ctx)
    started = time.monotonic()
    try:
        result = await body()
    except Exception as error:
        if model and not _transient(error):
            raise TerminalError(f"model request failed: {error}") from error
        raise
    finally:
        _step_context.reset(token)
    return {"result": result, "latency": time.monotonic() - started}


async def _run_unit_model(ctx: ActivityContext, request: dict[str, Any]) -> dict[str, Any]:
    """A model request: transient errors (connection, 429, 5xx) retried, others final."""
    return await _unit(ctx, model=True)


async def _run_unit(ctx: ActivityContext, request: dict[str, Any]) -> dict[str, Any]:
    """A tool call or a toolset's listing, in its own transaction (``step_context()``)."""
    return await _unit(ctx, model=False)


def _undo(compensation: Callable[..., Any]) -> Callable[..., Any]:
    """A tool's compensation, called with the activity context and the tool's arguments."""

    async def undo(ctx: ActivityContext, request: dict[str, Any]) -> None:
        token = _step_context.set(ctx)
        try:
            result = compensation(ctx, **request.get("args", {}))
            if inspect.isawaitable(result):
                await result
        finally:
            _step_context.reset(token)

    return undo


class RomancyOperationBackend(JournalCallableOperationBackend[RetryPolicy | None]):
    """Runs each durable unit Pydantic AI asks for as an activity of the current workflow."""

    def __init__(self, durability: RomancyDurability[Any], agent_name: str) -> None:
        super().__init__(
            agent_name=agent_name,
            config=RoleBasedOperationConfig(
                model=durability.model_retry,
                event=durability.model_retry,
                capability=durability.tool_retry,
                tool=durability.tool_retry,
            ),
        )
        self._durability = durability

    async def execute(
        self,
        *,
        operation_id: DurableOperationId,
        name: str,
        body: Callable[[], Awaitable[object]],
        cache_key: tuple[object, ...],
        config: RetryPolicy | None,
    ) -> object:
        scope = _scope.get()
        if scope is None:  # guarded by in_durable_context
            raise RomancyError("a RomancyAgent step ran outside RomancyAgent.run")
        tool = cache_key[0] if isinstance(operation_id, ToolsetCallToolId) else None
        step = self._durability.steps.get(
            name,
            model=isinstance(operation_id, ModelRequestId),
            retry=config,
            compensation=self._durability.compensations.get(tool)
            if isinstance(tool, str)
            else None,
        )
        token = _body.set(body)
        try:
            out = await step(scope.ctx, _recorded_input(operation_id, name, cache_key))
        finally:
            _body.reset(token)
        return out["result"]


class RomancyDurability(BaseDurabilityCapability[AgentDepsT]):
    """The capability that routes an agent's model requests and tool calls through steps.

    :class:`RomancyAgent` adds it to each run; inside ``RomancyAgent.run`` every unit is an
    activity, outside it the agent runs as usual.
    """

    engine_spec = DurabilityEngineSpec(
        engine_name="romancy_nb",
        durable_unit_noun="step",
        durable_container_noun="workflow",
        codec=JSON_CODEC,  # the store keeps JSON: values go through Pydantic AI's adapters
        serialization_failure=lambda error: TerminalError(f"not storable as JSON: {error}"),
        wrapped_toolset_kinds=frozenset({"function", "mcp", "dynamic"}),
        toolset_lifecycles={
            "function": "enter-always",
            "mcp": "enter-in-durable-unit",
            "dynamic": "enter-never",
        },
        journal_discovery=True,
        # Step ids follow call order: tools one after another keep that order stable.
        sequential_tools_in_durable_context=True,
    )

    def __init__(
        self,
        *,
        name: str | None = None,
        model_retry: RetryPolicy | None = None,
        tool_retry: RetryPolicy | None = None,
        compensations: Mapping[str, Callable[..., Any]] | None = None,
    ) -> None:
        super().__init__(name=name)
        self.model_retry = model_retry
        self.tool_retry = tool_retry
        self.compensations = dict(compensations or {})
        self.steps = _Steps()

    @property
    def in_durable_context(self) -> bool:
        return _scope.get() is not None and not in_durable_unit()

    def get_default_conversation_id(self, run_id: str) -> str | None:
        return conversation_id_from_run_id(run_id) if self.in_durable_context else None

    def get_durable_operation_backend(self) -> RomancyOperationBackend:
        return RomancyOperationBackend(self, self.name)


@dataclass(frozen=True)
class PendingApproval:
    """A tool call waiting for a human: what the panel shows with Approve / Reject."""

    instance_id: str
    tool_call_id: str
    tool: str
    args: dict[str, Any]
    event_type: str


def approval_event_type(instance_id: str, tool_call_id: str) -> str:
    """The event that decides one tool call of one instance."""
    return f"{APPROVAL_EVENT_PREFIX}{instance_id}:{tool_call_id}"


def _record_call(ctx: ActivityContext, call: dict[str, Any]) -> dict[str, Any]:
    """Records the call waiting for a decision, so the panel can show its arguments."""
    return call


_approval_step: Activity[Any, dict[str, Any]] = Activity(
    _record_call, name=APPROVAL_STEP, retry=RetryPolicy.none(), transactional=False
)
default_registry.add_activity(_approval_step)


class RomancyAgent:
    """A Pydantic AI agent made durable: ``await agent.run(ctx, prompt)`` in a workflow.

    Every model request and tool call of the run is a step of the workflow (replayed, not
    repeated, after a crash or a rewind); a tool with ``requires_approval=True`` waits
    durably for :func:`approve`. ``model_retry`` is the retry policy of the model requests
    (transient errors only: connection, 429, 5xx), ``tool_retry`` that of the tool calls
    (the app's default when None). ``compensations`` maps a tool's name to the function
    that undoes it, called as ``fn(ctx, **tool_args)`` when the workflow is compensated.
    ``approval_timeout`` bounds each wait for a decision (seconds; None waits forever).
    """

    def __init__(
        self,
        agent: AbstractAgent[Any, Any],
        *,
        name: str | None = None,
        model_retry: RetryPolicy | None = None,
        tool_retry: RetryPolicy | None = None,
        compensations: Mapping[str, Callable[..., Any]] | None = None,
        approval_timeout: float | None = None,
    ) -> None:
        if not isinstance(agent, AbstractAgent):
            raise TypeError(f"RomancyAgent wraps a pydantic_ai Agent, not {type(agent).__name__}")
        name = name or agent.name
        if not name:
            raise ValueError(
                "RomancyAgent needs a name: it names the agent's steps in the history "
                "(Agent(..., name='support') or RomancyAgent(agent, name='support'))"
            )
        for tool, fn in (compensations or {}).items():
            if not callable(fn):
                raise TypeError(f"the compensation of tool {tool!r} must be callable")
        self.wrapped = agent
        self.name = name
        self.approval_timeout = approval_timeout
        self.durability: RomancyDurability[Any] = RomancyDurability(
            name=name, model_retry=model_retry, tool_retry=tool_retry, compensations=compensations
        )

    async def run(
        self,
        ctx: WorkflowContext,
        user_prompt: Any = None,
        *,
        output_type: Any = None,
        message_history: Sequence[Any] | None = None,
        **kwargs: Any,
    ) -> AgentRunResult[Any]:
        """Run the agent as steps of the workflow whose context is ``ctx``.

        Arguments after ``user_prompt`` are those of ``Agent.run`` (``deps``,
        ``model_settings``, ``usage_limits``...). Returns the run's result; its
        ``all_messages()`` hold every request and answer, approvals included.
        """
        if not isinstance(ctx, WorkflowContext):
            raise TypeError(
                "RomancyAgent.run takes the workflow's context first: await agent.run(ctx, prompt)"
            )
        if _scope.get() is not None:
            raise RomancyError("a RomancyAgent run cannot start inside another one's step")
        wanted = output_type if output_type is not None else self.wrapped.output_type
        outputs = [*(wanted if isinstance(wanted, list) else [wanted]), DeferredToolRequests]
        token = _scope.set(_Scope(ctx, self))
        try:
            result = await self._run_once(ctx, user_prompt, outputs, message_history, None, kwargs)
            while isinstance(result.output, DeferredToolRequests):
                decisions = await self._decide(ctx, result.output)
                result = await self._run_once(
                    ctx, None, outputs, result.all_messages(), decisions, kwargs
                )
            return result
        finally:
            _scope.reset(token)

    async def _run_once(
        self,
        ctx: WorkflowContext,
        user_prompt: Any,
        outputs: list[Any],
        history: Sequence[Any] | None,
        decisions: DeferredToolResults | None,
        kwargs: dict[str, Any],
    ) -> AgentRunResult[Any]:
        # A run id from the history (a recorded uuid), so replayed messages match.
        return await self.wrapped.run(
            user_prompt,
            output_type=outputs,
            message_history=history,
            deferred_tool_results=decisions,
            run_id=str(ctx.uuid()),
            capabilities=[self.durability],
            **kwargs,
        )

    async def _decide(
        self, ctx: WorkflowContext, requests: DeferredToolRequests
    ) -> DeferredToolResults:
        if requests.calls:
            names = ", ".join(call.tool_name for call in requests.calls)
            raise TerminalError(
                f"the agent called tools that run outside it ({names}): RomancyAgent resolves "
                "approvals (requires_approval=True), not external calls (CallDeferred)"
            )
        decisions = DeferredToolResults()
        for call in requests.approvals:
            event_type = approval_event_type(ctx.instance_id, call.tool_call_id)
            await _approval_step(
                ctx,
                {
                    "tool_call_id": call.tool_call_id,
                    "tool": call.tool_name,
                    "args": call.args_as_dict(),
                    "event_type": event_type,
                },
            )
            event = await ctx.wait_event(
                event_type,
                timeout=self.approval_timeout,
                wait_id=f"{APPROVAL_STEP}:{call.tool_call_id}",
            )
            data = event.data if isinstance(event.data, dict) else {}
            if data.get("approved") is True:
                decisions.approvals[call.tool_call_id] = True
            else:
                reason = data.get("reason") or "The tool call was rejected."
                decisions.approvals[call.tool_call_id] = ToolDenied(str(reason))
        return decisions

    def __repr__(self) -> str:
        return f"<RomancyAgent {self.name}>"


def pending_approvals(app: App, instance_id: str | None = None) -> list[PendingApproval]:
    """The tool calls waiting for a decision (of one instance, or of all of them)."""
    ids = (
        [instance_id]
        if instance_id is not None
        else [i.instance_id for i in app.list_instances(status="waiting_for_event")]
    )
    out: list[PendingApproval] = []
    for iid in ids:
        waiting = {
            wait.channel
            for wait in app.store.load_waits(iid)
            if wait.kind == "wait_event" and (wait.channel or "").startswith(APPROVAL_EVENT_PREFIX)
        }
        if not waiting:
            continue
        for step in app.get_history(iid):
            call = step.output if step.name == APPROVAL_STEP else None
            if isinstance(call, dict) and call.get("event_type") in waiting:
                out.append(
                    PendingApproval(
                        iid, call["tool_call_id"], call["tool"], call["args"], call["event_type"]
                    )
                )
    return out


async def approve(
    app: App,
    instance_id: str,
    tool_call_id: str,
    *,
    approved: bool = True,
    reason: str | None = None,
) -> None:
    """Decide a tool call waiting for approval: run it, or tell the model it was rejected
    (``approved=False``; ``reason`` is what the model reads). The panel's Approve / Reject
    buttons call this. Refused if the instance is not waiting for that call's decision."""
    if not isinstance(approved, bool):
        raise TypeError(f"approved must be True or False, not {approved!r}")
    if not any(p.tool_call_id == tool_call_id for p in pending_approvals(app, instance_id)):
        raise RomancyError(
            f"instance {instance_id!r} is not waiting for a decision on tool call "
            f"{tool_call_id!r} (see rn.ai.pending_approvals(app))"
        )
    await app.send_event(
        approval_event_type(instance_id, tool_call_id),
        {"approved": approved, "reason": reason},
        source="rn.ai.approve",
    )
