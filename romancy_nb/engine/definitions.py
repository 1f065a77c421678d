"""``@workflow`` and ``@activity``: what a durable function is, before anything runs it."""

from __future__ import annotations

import functools
import hashlib
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Generic, ParamSpec, TypeVar, overload

from romancy_nb.engine.registry import Registry, registry
from romancy_nb.engine.retry import RetryPolicy
from romancy_nb.engine.shapes import CallShape

P = ParamSpec("P")
R = TypeVar("R")


def _code_version(fn: Callable[..., Any]) -> str:
    """A short hash of the function's source (or bytecode), recorded with each instance."""
    try:
        text = inspect.getsource(fn).encode()
    except (OSError, TypeError):
        text = fn.__code__.co_code
    return hashlib.sha256(text).hexdigest()[:12]


class _Definition:
    """What workflows and activities share: a name, a function and its typed call shape."""

    kind = "definition"

    def __init__(self, fn: Callable[..., Any], name: str | None) -> None:
        if not callable(fn):
            raise TypeError(f"@{self.kind} decorates a function, not {type(fn).__name__}")
        self.fn = fn
        self.name = name or fn.__name__
        self.is_async = inspect.iscoroutinefunction(fn)
        self.code_version = _code_version(fn)
        self._shape: CallShape | None = None
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]

    @property
    def shape(self) -> CallShape:
        """Parameters and result type, resolved at first use (types may be defined later)."""
        if self._shape is None:
            self._shape = CallShape(self.fn, f"{self.kind} {self.name!r}")
        return self._shape

    def __repr__(self) -> str:
        return f"<{self.kind} {self.name}>"


class Activity(_Definition, Generic[P, R]):
    """A recorded step of a workflow: its result is stored once and replayed after."""

    kind = "activity"

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        transactional: bool = True,
        compensation_of: Activity[Any, Any] | None = None,
    ) -> None:
        super().__init__(fn, name)
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be a positive number of seconds")
        self.retry = retry
        self.timeout = timeout
        self.transactional = transactional
        self.compensator: Activity[Any, Any] | None = None
        self.compensation_of = compensation_of

    def __call__(self, ctx: Any, *args: Any, activity_id: str | None = None, **kwargs: Any) -> Any:
        """Run as a step of the workflow whose context is ``ctx``; await the result.

        The step id is taken here, when the call is *made*, so ids follow call order even
        under ``asyncio.gather``.
        """
        runtime = getattr(ctx, "_runtime", None)
        if runtime is None:
            raise TypeError(
                f"activity {self.name!r} must be called with the workflow's context as its "
                f"first argument: await {self.name}(ctx, ...). To call the plain function "
                f"(in a test, say), use {self.name}.fn(...)."
            )
        return runtime.call_activity(self, args, kwargs, activity_id)

    def compensation(
        self, fn: Callable[..., Any] | None = None, *, retry: RetryPolicy | None = None
    ) -> Any:
        """Register the function that undoes this activity (saga).

        It receives the same arguments as the activity. On failure or cancellation of the
        workflow, the compensations of completed steps run in reverse order, durably.
        """

        def register(function: Callable[..., Any]) -> Activity[Any, Any]:
            compensator: Activity[Any, Any] = Activity(
                function,
                name=f"{self.name}.compensation",
                retry=retry,
                transactional=self.transactional,
                compensation_of=self,
            )
            self.compensator = compensator
            return compensator

        return register(fn) if fn is not None else register


class Workflow(_Definition, Generic[P, R]):
    """Deterministic orchestration code, replayed from history after any interruption."""

    kind = "workflow"

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        event_handler: bool = False,
        on_divergence: str | None = None,
    ) -> None:
        super().__init__(fn, name)
        if not self.is_async:
            raise TypeError(
                f"workflow {self.name!r} must be an async function (async def): a workflow "
                "awaits its activities"
            )
        self.event_handler = event_handler
        self.on_divergence = check_divergence_policy(on_divergence, allow_none=True)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"workflow {self.name!r} is not called directly: start it with "
            f"await app.start({self.name}, ...) or app.run({self.name}, ...)"
        )


@overload
def activity(fn: Callable[..., Awaitable[R]], /) -> Activity[Any, R]: ...
@overload
def activity(fn: Callable[..., R], /) -> Activity[Any, R]: ...
@overload
def activity(
    *,
    name: str | None = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
    transactional: bool = True,
    registry: Registry | None = None,
) -> Callable[[Callable[..., Any]], Activity[Any, Any]]: ...


def activity(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
    transactional: bool = True,
    registry: Registry | None = None,
) -> Any:
    """Declare an activity: a durable step whose result is recorded exactly once.

    Sync functions run in a worker thread, so the event loop (and a notebook) stays
    responsive. ``transactional=True`` (the default) lets the activity write its own tables
    through ``ctx.session`` in the same transaction as its history record.
    """

    def wrap(function: Callable[..., Any]) -> Activity[Any, Any]:
        act: Activity[Any, Any] = Activity(
            function, name=name, retry=retry, timeout=timeout, transactional=transactional
        )
        (registry or _default()).add_activity(act)
        return act

    return wrap(fn) if fn is not None else wrap


def workflow(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    event_handler: bool = False,
    on_divergence: str | None = None,
    registry: Registry | None = None,
) -> Any:
    """Declare a workflow: async orchestration code made durable by replay.

    ``on_divergence`` overrides the app's policy for this workflow (see
    :class:`~romancy_nb.engine.app.App`): ``"error"`` stops a run whose code no longer
    matches its history, ``"rewind"`` archives history from the first diverging step and
    re-executes from there.
    """
    check_divergence_policy(on_divergence, allow_none=True)

    def wrap(function: Callable[..., Any]) -> Workflow[Any, Any]:
        wf: Workflow[Any, Any] = Workflow(
            function, name=name, event_handler=event_handler, on_divergence=on_divergence
        )
        (registry or _default()).add_workflow(wf)
        return wf

    return wrap(fn) if fn is not None else wrap


DIVERGENCE_POLICIES = ("error", "rewind")


def check_divergence_policy(value: str | None, *, allow_none: bool = False) -> str | None:
    """``value`` if it names a divergence policy; a ValueError naming the choices if not."""
    if value is None and allow_none:
        return None
    if value not in DIVERGENCE_POLICIES:
        raise ValueError(f"on_divergence must be 'error' or 'rewind', not {value!r}")
    return value


def _default() -> Registry:
    return registry
