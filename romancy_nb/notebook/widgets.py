"""Widgets: a workflow panel (form, Start, live instance list) and an instance view.

The step timeline is an anywidget whose view is the ES module ``widgets/timeline.js``; its
state is traitlets synced to the browser (no HTML is built here). Buttons are ipywidgets, so
the same objects are driven from Python in tests (``panel.start_button.click()``).

Per-step actions (rewind / roll back to a step) plug in with
``InstanceView.add_step_action(name, label, handler)``: the timeline shows a button on every
step and calls ``handler(view, step_id)``. The timer and event controls appear while the
instance waits on a timer or an event: Send / Approve / Reject call ``app.send_event``,
"fire now" calls ``app.fire_timer(instance_id, step_id)``.

Live updates are pushed by an engine listener (``App.add_listener``) for work done in this
kernel, with a slow poll on the kernel's loop as the safety net for other processes (see
``_Live``); the kernel stays free between refreshes. Actions refresh their view as soon as
they finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import typing
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anywidget
import ipywidgets as w
import traitlets

from romancy_nb.engine import App, Workflow
from romancy_nb.errors import WorkflowNotFound
from romancy_nb.notebook import aio, state

REFRESH_INTERVAL = 1.0
"""Seconds between refreshes for changes made by other processes (the safety net)."""
PUSH_DELAY = 0.02
"""Seconds a pushed change waits, so a burst of steps makes one refresh."""
FINAL = ("completed", "failed", "cancelled")
_DETAIL_CHARS = 120


def asset(name: str) -> Path:
    """A front-end file: inside the wheel (``_static``), else ``widgets/`` of the checkout."""
    packaged = Path(__file__).with_name("_static") / name
    if packaged.exists():
        return packaged
    return Path(__file__).resolve().parents[2] / "widgets" / name


def _short(value: Any) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= _DETAIL_CHARS else text[: _DETAIL_CHARS - 1] + "…"


def _error_text(error: Any) -> str:
    if not error:
        return ""
    if isinstance(error, dict):
        kind = str(error.get("type", "error")).rsplit(".", 1)[-1]
        return f"{kind}: {error.get('message', '')}"
    return str(error)


class Timeline(anywidget.AnyWidget):
    """The steps of one instance, rendered by ``widgets/timeline.js``."""

    _esm = asset("timeline.js")
    _css = asset("timeline.css")
    instance = traitlets.Dict().tag(sync=True)
    steps = traitlets.List().tag(sync=True)
    waiting = traitlets.Dict().tag(sync=True)
    actions = traitlets.List().tag(sync=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._handlers: dict[str, Callable[[dict[str, Any]], None]] = {}
        self.on_msg(self._on_msg)

    def on_action(self, name: str, handler: Callable[[dict[str, Any]], None]) -> None:
        self._handlers[name] = handler

    def _on_msg(self, _: Any, content: dict[str, Any], buffers: Any) -> None:
        handler = self._handlers.get(str(content.get("action")))
        if handler is not None:
            handler(content)


class _Live:
    """Keeps the visible views current.

    Pushed: an app listener (``App.add_listener``) marks the instances whose steps or runs
    changed in this process, and the views showing them refresh on the loop (bursts are
    coalesced). Polled, as the safety net for changes made by other processes (a worker, the
    CLI): one task on the kernel's loop refreshes the views that show unfinished work every
    ``REFRESH_INTERVAL`` seconds, and ends when nothing unfinished is shown.
    """

    def __init__(self) -> None:
        self.views: weakref.WeakSet[Any] = weakref.WeakSet()
        self.task: asyncio.Task[None] | None = None
        self.apps: weakref.WeakSet[App] = weakref.WeakSet()
        self.dirty: set[str] = set()
        self.flushing = False

    def watch(self, view: Any) -> None:
        self.views.add(view)
        if view.app not in self.apps:
            self.apps.add(view.app)
            loop = aio.shell_loop()
            view.app.add_listener(lambda iid, _step, loop=loop: self._changed_threadsafe(loop, iid))
        loop = aio.running_loop()
        if loop is not None and (self.task is None or self.task.done()):
            self.task = loop.create_task(self._run(), name="romancy-widgets")

    def _changed_threadsafe(self, loop: asyncio.AbstractEventLoop, instance_id: str) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed
            loop.call_soon_threadsafe(self._changed, loop, instance_id)

    def _changed(self, loop: asyncio.AbstractEventLoop, instance_id: str) -> None:
        self.dirty.add(instance_id)
        if not self.flushing:
            self.flushing = True
            loop.call_later(PUSH_DELAY, self._flush)

    def _flush(self) -> None:
        dirty, self.dirty, self.flushing = self.dirty, set(), False
        for view in list(self.views):
            if view.wants(dirty):
                self._refresh(view)

    def _refresh(self, view: Any) -> None:
        try:
            view.refresh()
        except Exception as error:  # a closed store, a deleted instance...
            view.show_message(f"refresh failed: {error}")
            self.views.discard(view)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_INTERVAL)
            live = [view for view in list(self.views) if view.is_live()]
            if not live:
                return
            for view in live:
                self._refresh(view)


_live = _Live()


class InstanceView(w.VBox):
    """One instance: its timeline, Cancel, and the timer / event controls while it waits."""

    def __init__(self, app: App, instance_id: str, *, pending: bool = False) -> None:
        self.app = app
        self.instance_id = instance_id
        # pending: the start was scheduled on the kernel's loop and is not stored yet.
        self._pending = pending
        self.timeline = Timeline()
        self.cancel_button = w.Button(description="Cancel", button_style="danger", icon="stop")
        self.message = w.HTML()
        self.fire_button = w.Button(description="fire now", icon="forward")
        self.timer_box = w.HBox([self.fire_button])
        self.event_data = w.Textarea(value="{}", placeholder="event data as JSON", rows=3)
        self.send_button = w.Button(description="Send", icon="paper-plane")
        self.approve_button = w.Button(description="Approve", button_style="success")
        self.reject_button = w.Button(description="Reject", button_style="warning")
        self.event_box = w.VBox(
            [self.event_data, w.HBox([self.send_button, self.approve_button, self.reject_button])]
        )
        self.cancel_button.on_click(lambda _: self.cancel())
        self.fire_button.on_click(lambda _: self.fire_timer())
        self.send_button.on_click(lambda _: self.send_event())
        self.approve_button.on_click(lambda _: self.send_event({"approved": True}))
        self.reject_button.on_click(lambda _: self.send_event({"approved": False}))
        # Hidden until a refresh finds the instance waiting on a timer or an event.
        self.timer_box.layout.display = "none"
        self.event_box.layout.display = "none"
        self._step_actions: dict[str, Callable[[InstanceView, str], Any]] = {}
        self._waiting_event: str | None = None
        self._waiting_timer: str | None = None
        self._status = ""
        super().__init__(
            [
                self.timeline,
                self.timer_box,
                self.event_box,
                w.HBox([self.cancel_button]),
                self.message,
            ]
        )
        self.refresh()
        _live.watch(self)

    # extension point for per-step actions (rewind, roll back to here)

    def add_step_action(
        self, name: str, label: str, handler: Callable[[InstanceView, str], Any]
    ) -> None:
        """Show a ``label`` button on every step; a click calls ``handler(view, step_id)``."""
        self._step_actions[name] = handler
        self.timeline.actions = [*self.timeline.actions, {"name": name, "label": label}]
        self.timeline.on_action(name, lambda content: self.step_action(name, content["step_id"]))

    def step_action(self, name: str, step_id: str) -> Any:
        return self._step_actions[name](self, step_id)

    # state

    @property
    def status(self) -> str:
        return self._status

    def is_live(self) -> bool:
        return self._status not in FINAL

    def wants(self, changed: set[str]) -> bool:
        return self.instance_id in changed

    def show_message(self, text: str) -> None:
        self.message.value = f"<span style='color:#b71c1c'>{text}</span>" if text else ""

    def refresh(self) -> None:
        """Read the instance, its steps and its waits from the store and show them."""
        try:
            info = self.app.get_instance(self.instance_id)
        except WorkflowNotFound:
            if not self._pending:
                raise
            self._status = "starting"
            self.timeline.instance = {"instance_id": self.instance_id, "status": "starting"}
            return
        self._pending = False
        self._status = info.status
        self.timeline.instance = {
            "instance_id": info.instance_id,
            "workflow_name": info.workflow_name,
            "status": info.status,
            "code_version": info.code_version or "",
            "error": _error_text(info.error),
        }
        session = state.session_started()
        self.timeline.steps = [
            {
                "seq": step.seq,
                "step_id": step.step_id,
                "kind": step.kind,
                "name": step.name,
                "status": step.status,
                "duration_ms": round(step.duration * 1000, 3),
                "attempts": step.attempts,
                "source": "executed" if step.finished_at.timestamp() >= session else "cached",
                "output": _short(step.output),
                "error": _error_text(step.error),
            }
            for step in self.app.get_history(self.instance_id)
        ]
        self._show_waits(info.status)
        self.cancel_button.disabled = info.status in FINAL

    def _show_waits(self, status: str) -> None:
        timer: dict[str, Any] | None = None
        event: dict[str, Any] | None = None
        if status not in FINAL:
            for wait in self.app.store.load_waits(self.instance_id):
                if wait.kind == "wait_event" and wait.channel:
                    event = {"type": wait.channel, "step_id": wait.step_id}
                elif wait.fire_at is not None:
                    timer = {"step_id": wait.step_id, "fire_at": wait.fire_at}
        self._waiting_timer = timer["step_id"] if timer else None
        self._waiting_event = event["type"] if event else None
        can_fire = timer is not None
        self.timeline.waiting = {
            **({"timer": timer} if timer else {}),
            **({"event": event} if event else {}),
            "can_fire": can_fire,
        }
        self.timer_box.layout.display = "flex" if timer else "none"
        self.fire_button.disabled = not can_fire
        self.fire_button.tooltip = "" if can_fire else "no pending timer"
        self.event_box.layout.display = "flex" if event else "none"

    # actions

    def _run(self, coro: Any, what: str) -> None:
        def done(_: Any, error: BaseException | None) -> None:
            self.show_message(f"{what} failed: {error}" if error else "")
            try:
                self.refresh()
            except Exception as failure:  # the app was closed meanwhile
                self.show_message(f"{what}: {failure}")

        try:
            ran, _ = aio.run_or_schedule(coro, done)
        except Exception as error:
            done(None, error)
            return
        if ran:
            done(None, None)

    def cancel(self, reason: str = "cancelled from the notebook panel") -> None:
        """Cancel the instance (its compensations run in reverse order)."""
        self._run(self.app.cancel(self.instance_id, reason), "cancel")

    def send_event(self, data: Any = None) -> None:
        """Send the awaited event with ``data`` (default: the JSON in the editor)."""
        if self._waiting_event is None:
            self.show_message("the instance is not waiting for an event")
            return
        if data is None:
            try:
                data = json.loads(self.event_data.value or "null")
            except ValueError as error:
                self.show_message(f"the event data is not valid JSON: {error}")
                return
        self._run(self.app.send_event(self._waiting_event, data, source="notebook-panel"), "send")

    def fire_timer(self) -> None:
        """Fire the pending timer now, as if it were due."""
        if self._waiting_timer is None:
            self.show_message("no timer to fire")
            return
        self._run(self.app.fire_timer(self.instance_id, self._waiting_timer), "fire now")


def _field(name: str, annotation: Any, default: Any) -> w.Widget:
    has_default = default is not inspect.Parameter.empty
    if annotation is bool:
        return w.Checkbox(value=bool(default) if has_default else False, description=name)
    if annotation is int:
        return w.IntText(value=default if has_default else 0, description=name)
    if annotation is float:
        return w.FloatText(value=default if has_default else 0.0, description=name)
    if annotation is str:
        return w.Text(value=default if has_default else "", description=name)
    value = json.dumps(default, default=str) if has_default else ""
    return w.Textarea(value=value, description=name, placeholder="JSON", rows=2)


class WorkflowPanel(w.VBox):
    """A form from the workflow's signature, Start, the instances, and the selected one."""

    def __init__(self, workflow: Workflow[Any, Any], app: App | None = None, limit: int = 20):
        self.workflow = workflow
        self.app = app or state.current_app()
        self.limit = limit
        self.fields: dict[str, w.Widget] = {}
        try:
            hints = typing.get_type_hints(workflow.fn)
        except Exception:  # a forward reference not defined yet: plain JSON fields
            hints = {}
        parameters = list(inspect.signature(workflow.fn).parameters.values())[1:]
        for parameter in parameters:
            annotation = hints.get(parameter.name, parameter.annotation)
            self.fields[parameter.name] = _field(parameter.name, annotation, parameter.default)
        self.instance_id = w.Text(placeholder="instance id (optional)", description="id")
        self.start_button = w.Button(description="Start", button_style="primary", icon="play")
        self.start_button.on_click(lambda _: self.start())
        self.message = w.HTML()
        self.instances = w.Select(
            options=[], rows=6, description="instances", layout=w.Layout(width="36em")
        )
        self.instances.observe(self._selected, names="value")
        self.detail = w.VBox()
        self.view: InstanceView | None = None
        self._active = False
        title = w.HTML(f"<b>{workflow.name}</b> <small>code {workflow.code_version}</small>")
        super().__init__(
            [
                title,
                *self.fields.values(),
                w.HBox([self.instance_id, self.start_button]),
                self.message,
                self.instances,
                self.detail,
            ]
        )
        self.refresh()
        _live.watch(self)

    def values(self) -> dict[str, Any]:
        """The form's values as keyword arguments (JSON fields decoded)."""
        kwargs: dict[str, Any] = {}
        for name, field in self.fields.items():
            if isinstance(field, w.Textarea):
                text = field.value.strip()
                try:
                    kwargs[name] = json.loads(text) if text else None
                except ValueError as error:
                    raise ValueError(f"{name}: not valid JSON ({error})") from None
            else:
                kwargs[name] = field.value
        return kwargs

    def start(self) -> str | None:
        """Start an instance with the form's values, select it, and return its id."""
        try:
            iid = state.start_instance(
                self.workflow, (), self.values(), self.instance_id.value.strip() or None
            )
        except Exception as error:
            self.message.value = f"<span style='color:#b71c1c'>cannot start: {error}</span>"
            return None
        self.message.value = ""
        self.instance_id.value = ""
        self.refresh(select=iid)
        return iid

    def is_live(self) -> bool:
        return self._active

    def wants(self, changed: set[str]) -> bool:
        return bool(changed)  # any instance may be one of this workflow's

    def show_message(self, text: str) -> None:
        self.message.value = f"<span style='color:#b71c1c'>{text}</span>" if text else ""

    def refresh(self, select: str | None = None) -> None:
        """Re-read the instance list (and the selected instance)."""
        page = self.app.list_instances(workflow=self.workflow.name, limit=self.limit)
        options = [(f"{i.instance_id} · {i.status}", i.instance_id) for i in page]
        ids = [value for _, value in options]
        if select is not None and select not in ids:  # started, not stored yet (a kernel)
            options.insert(0, (f"{select} · starting", select))
        self._active = any(i.status not in FINAL for i in page) or (
            select is not None and select not in ids
        )
        current = select or self.instances.value
        if options != list(self.instances.options):
            self.instances.options = options
        if current is not None and current in [value for _, value in options]:
            self.instances.value = current
        if self.view is not None and self.view.instance_id in ids:
            self.view.refresh()
        elif current in ids:
            self._show(current)

    def _selected(self, change: dict[str, Any]) -> None:
        self._show(change["new"])

    def _show(self, iid: str | None) -> None:
        if iid is None or (self.view is not None and self.view.instance_id == iid):
            return
        self.view = InstanceView(self.app, iid, pending=True)
        self.detail.children = [self.view]


def panel(workflow: Workflow[Any, Any] | str, app: App | None = None) -> WorkflowPanel:
    """The panel of a workflow (or its name): form, Start, live instances, timeline."""
    app = app or state.current_app()
    wf = workflow if isinstance(workflow, Workflow) else app.registry.workflow(workflow)
    return WorkflowPanel(wf, app)
