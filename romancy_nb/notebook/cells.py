"""``%%workflow`` / ``%%activity`` cells: run the cell as written, register its function.

The cell is ordinary Python that defines one function (``def`` or ``async def``; helper
imports and constants may come with it). It is compiled under a file name IPython keeps in
``linecache``, so ``inspect.getsource`` sees exactly the cell's text: editing the cell and
running it again registers a new definition whose code version differs.
"""

from __future__ import annotations

import ast
from typing import Any

from IPython.core.error import UsageError

from romancy_nb.engine import Activity, RetryPolicy, Workflow, activity, registry, workflow


def _function_name(source: str) -> str:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return ""  # let the real compile below report it with the cell's line numbers
    defs = [
        node.name for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    ]
    if not defs:
        raise UsageError(
            "the cell must define a function (def or async def) at top level; "
            "the magic registers the last one defined"
        )
    return defs[-1]


def function_name(cell: str) -> str:
    """The name of the last function a cell defines ("" if it cannot tell yet)."""
    try:
        return _function_name(cell)
    except UsageError:
        return ""


def run_cell_source(shell: Any, cell: str) -> Any:
    """Execute the cell in the user namespace and return the last function it defines."""
    source = shell.transform_cell(cell)
    name = _function_name(source)
    filename = shell.compile.cache(source, shell.execution_count, raw_code=cell)
    code = compile(source, filename, "exec", dont_inherit=True)
    exec(code, shell.user_ns)
    if not name:  # pragma: no cover - compile raised already
        raise UsageError("the cell does not define a function")
    fn = shell.user_ns.get(name)
    if isinstance(fn, Workflow | Activity):
        raise UsageError(
            f"{name!r} is decorated already: in a %%workflow / %%activity cell, write the "
            "plain function and let the magic register it (remove @rn.workflow/@rn.activity)"
        )
    if not callable(fn):
        raise UsageError(f"{name!r} is not a function after running the cell")
    return fn


def retry_policy(attempts: int | None, interval: float | None) -> RetryPolicy | None:
    if attempts is None and interval is None:
        return None
    if attempts is not None and attempts < 1:
        raise UsageError("--retry must be at least 1 (1 means no retry)")
    if interval is not None and interval < 0:
        raise UsageError("--retry-interval must not be negative")
    if interval is None:
        return RetryPolicy(max_attempts=attempts or RetryPolicy().max_attempts)
    return RetryPolicy.fixed(attempts or RetryPolicy().max_attempts, interval)


def define_workflow(
    shell: Any,
    cell: str,
    *,
    name: str | None,
    event_handler: bool,
    on_divergence: str | None = None,
) -> Workflow[Any, Any]:
    fn = run_cell_source(shell, cell)
    try:
        wf: Workflow[Any, Any] = workflow(
            fn, name=name, event_handler=event_handler, on_divergence=on_divergence
        )
    except (TypeError, ValueError) as error:
        raise UsageError(str(error)) from None
    shell.user_ns[fn.__name__] = wf
    return wf


def define_activity(
    shell: Any,
    cell: str,
    *,
    name: str | None,
    retry: RetryPolicy | None,
    timeout: float | None,
    transactional: bool,
    compensation_of: str | None,
) -> Activity[Any, Any]:
    fn = run_cell_source(shell, cell)
    if compensation_of is not None:
        target = shell.user_ns.get(compensation_of)
        if not isinstance(target, Activity):
            target = registry.find_activity(compensation_of)
        if target is None:
            raise UsageError(
                f"--compensation-of {compensation_of}: no activity of that name; run its "
                "%%activity cell first"
            )
        compensator: Activity[Any, Any] = target.compensation(fn, retry=retry)
        shell.user_ns[fn.__name__] = compensator
        return compensator
    old = registry.find_activity(name or fn.__name__)
    try:
        act: Activity[Any, Any] = activity(
            fn, name=name, retry=retry, timeout=timeout, transactional=transactional
        )
    except (TypeError, ValueError) as error:
        raise UsageError(str(error)) from None
    if old is not None and old.compensator is not None:
        # Re-running an activity cell keeps the compensation defined by another cell.
        act.compensator = old.compensator
        old.compensator.compensation_of = act
    shell.user_ns[fn.__name__] = act
    return act
