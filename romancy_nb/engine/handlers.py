"""Event-handler workflows: an event whose type names a workflow registered with
``@rn.workflow(event_handler=True)`` starts it, with the event's data as its input.

Only that opt-in makes a workflow startable from outside (``app.send_event``,
``romancy-nb event``, the HTTP ingress): an event of any other workflow's name is an event,
nothing more. How the data becomes arguments, so the same JSON works from every path:

- a JSON object whose keys all name parameters, and that gives every required one, binds
  them by name (Edda starts its handlers with ``**data``);
- ``null`` (no data) starts a workflow that has no required parameters with its defaults;
- otherwise a workflow with exactly one parameter receives the data as that parameter's
  value (Romancy decodes the data into the workflow's input type);
- anything else is refused, naming the parameters.

The arguments are then checked against the annotations like ``app.start``'s, before
anything is stored. The instance id is ``"<type>:<event id>"``: the event id is the
idempotency key, so a redelivered event starts nothing new (``app.start`` with an existing
id starts nothing), and an event delivered again after a crash between storing the event
and starting the instance starts it then.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from romancy_nb.engine import ids
from romancy_nb.engine.codec import InvalidArgumentsError
from romancy_nb.store.protocol import MessageRecord

if TYPE_CHECKING:
    from romancy_nb.engine.definitions import Workflow
    from romancy_nb.engine.registry import Registry


@dataclass(frozen=True)
class HandlerStart:
    """The instance an event starts: its workflow, checked arguments and id."""

    workflow: Workflow[Any, Any]
    args: tuple[Any, ...]
    instance_id: str


@dataclass(frozen=True)
class PreparedEvent:
    """An event checked and encoded, not yet stored (``App.prepare_event``): a batch is
    checked whole before any of it is stored."""

    type: str
    id: str
    message: MessageRecord
    start: HandlerStart | None


@dataclass(frozen=True)
class EventReceipt:
    """What ``App.deliver_event`` did with an event."""

    type: str
    id: str
    instance_id: str | None
    """The event-handler instance the event started (or had started already: a repeat)."""
    duplicate: bool
    """The event was stored before (same type and id): nothing new was stored."""


def instance_id_for(event_type: str, event_id: str) -> str:
    """The id of the instance an event-handler event starts (see the module docstring)."""
    return ids.validate_instance_id(f"{event_type}:{event_id}")


def handler_start(
    registry: Registry, event_type: str, event_id: str, data: Any
) -> HandlerStart | None:
    """The start an event asks for, checked; None if its type names no opted-in workflow."""
    wf = registry.find_workflow(event_type)
    if wf is None or not wf.event_handler:
        return None
    shape = wf.shape
    values = shape.validate_input(shape.bind(*_arguments(wf, data)))
    return HandlerStart(wf, values, instance_id_for(event_type, event_id))


def _arguments(wf: Workflow[Any, Any], data: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    params = wf.shape.params
    names = [p.name for p in params]
    required = {p.name for p in params if p.default is inspect.Parameter.empty}
    if isinstance(data, dict) and set(data) <= set(names) and required <= set(data):
        return (), data
    if data is None and not required:
        return (), {}
    if len(params) == 1:
        return (data,), {}
    wanted = ", ".join(names) or "none"
    raise InvalidArgumentsError(
        f"the data of event {wf.name!r} must be a JSON object of the parameters of workflow "
        f"{wf.name!r} ({wanted}; required: {', '.join(sorted(required)) or 'none'}), "
        f"not {_short(data)}",
        what=f"workflow {wf.name!r}",
    )


def _short(data: Any) -> str:
    text = repr(data)
    return text if len(text) <= 120 else text[:117] + "..."
