"""Widgets: a workflow panel (form, Start, live instance list) and an instance view.

The step timeline is an anywidget whose view is the ES module ``widgets/timeline.js``; the
instance and its waits are traitlets synced to the browser, its steps are sent as messages,
only the new ones (see :class:`Timeline`). Buttons are ipywidgets, so the same objects are
driven from Python in tests (``panel.start_button.click()``). Text from the user or the store
that goes into an HTML widget is escaped.

Per-step actions plug in with ``InstanceView.add_step_action(name, label, handler)``: the
timeline shows a button on every step but the compensations and calls
``handler(view, step_id)``. Time travel is three such actions — rewind, roll back (after a
confirmation that lists the compensations) and fork from here — plus Retry on a failed
instance and, on a run that diverged from its history, the diff and a rewind to before the
diverging step (see :class:`InstanceView`). The timer and event controls appear while the
instance waits on a timer or an event: Send / Approve / Reject call ``app.send_event``,
"fire now" calls ``app.fire_timer(instance_id, step_id)``.

Live updates are pushed by an engine listener (``App.add_listener``) for work done in this
kernel: a recorded step is appended to its instance's view as it is (no store read), a run
that starts or ends refreshes the views of that instance, and a panel only for its own
workflow's instances. A slow poll on the kernel's loop is the safety net for other processes
(see ``_Live``); the kernel stays free between refreshes. Actions refresh their view as soon
as they finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import inspect
import json
import typing
import weakref
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import anywidget
import ipywidgets as w
import traitlets

from romancy_nb.ai import agent as ai_agent
from romancy_nb.describe import (
    WAIT_KINDS,
    error_summary,
    short,
    step_duration,
    step_outcome,
    step_seconds,
)
from romancy_nb.engine import (
    App,
    HistoryChange,
    InstanceInfo,
    ReplayReport,
    StepInfo,
    Undo,
    Workflow,
)
from romancy_nb.engine.cuts import UNWINDING_KINDS
from romancy_nb.errors import WorkflowNotFound
from romancy_nb.notebook import aio, state
from romancy_nb.notebook.llm import call_outline
from romancy_nb.store import StepRecord

REFRESH_INTERVAL = 1.0
"""Seconds between refreshes for changes made by other processes (the safety net)."""
PUSH_DELAY = 0.02
"""Seconds a pushed change waits, so a burst of steps makes one refresh."""
FINAL = ("completed", "failed", "cancelled")
_DETAIL_CHARS = 120


def _outcome(step: StepInfo) -> str:
    """The timeline's one line of a step: a model call's prompt and answer, else its
    output."""
    outline = call_outline(step)
    return step_outcome(step, _DETAIL_CHARS) if outline is None else short(outline, _DETAIL_CHARS)


def asset(name: str) -> Path:
    """A front-end file: inside the wheel (``_static``), else ``widgets/`` of the checkout."""
    packaged = Path(__file__).with_name("_static") / name
    if packaged.exists():
        return packaged
    return Path(__file__).resolve().parents[2] / "widgets" / name


def _red(text: str) -> str:
    """``text`` (from the user or the store: escaped) as a red line of an HTML widget."""
    return f"<span style='color:#b71c1c'>{html.escape(text)}</span>" if text else ""


def _note(text: str) -> str:
    """``text`` (escaped) as a plain line of an HTML widget: what an action did."""
    return f"<span style='color:#1b5e20'>{html.escape(text)}</span>" if text else ""


def _code(text: str) -> str:
    return f"<code>{html.escape(text)}</code>"


def _steps(ids: Sequence[str]) -> str:
    return ", ".join(ids) if ids else "none"


class Timeline(anywidget.AnyWidget):
    """The steps of one instance, rendered by ``widgets/timeline.js``.

    The steps are not a synced trait: a trait sends its whole value on every change, so a
    run of n steps would send n(n+1)/2 rows. They go as ``{"kind": "steps", "from": i,
    "steps": rows}`` messages instead: the rows after the first ``i`` (``from`` 0: all of
    them). A view asks for all of them when it renders (``{"action": "snapshot"}``) and again
    if a message does not follow on from what it has.
    """

    _esm = asset("timeline.js")
    _css = asset("timeline.css")
    instance = traitlets.Dict().tag(sync=True)
    waiting = traitlets.Dict().tag(sync=True)
    actions = traitlets.List().tag(sync=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._steps: list[dict[str, Any]] = []
        self._handlers: dict[str, Callable[[dict[str, Any]], None]] = {}
        self.on_msg(self._on_msg)

    @property
    def steps(self) -> list[dict[str, Any]]:
        """The rows shown, in recording order."""
        return list(self._steps)

    def set_steps(self, rows: list[dict[str, Any]]) -> None:
        """Show ``rows``; sends only those after the ones shown if history only grew."""
        known = len(self._steps)
        if rows[:known] == self._steps:
            self.append_steps(rows[known:])
            return
        self._steps = list(rows)  # history changed under the shown rows: send it all
        self._send_steps(0)

    def append_steps(self, rows: list[dict[str, Any]]) -> None:
        """Show ``rows`` after the ones shown, sending only them."""
        if rows:
            self._steps.extend(rows)
            self._send_steps(len(self._steps) - len(rows))

    def _send_steps(self, start: int) -> None:
        self.send({"kind": "steps", "from": start, "steps": self._steps[start:]})

    def on_action(self, name: str, handler: Callable[[dict[str, Any]], None]) -> None:
        self._handlers[name] = handler

    def _on_msg(self, _: Any, content: dict[str, Any], buffers: Any) -> None:
        if content.get("action") == "snapshot":
            self._send_steps(0)
            return
        handler = self._handlers.get(str(content.get("action")))
        if handler is not None:
            handler(content)


class _Live:
    """Keeps the visible views current.

    Pushed: an app listener (``App.add_listener``) collects, per instance, the steps this
    process records and the runs that start or end here; on the loop (bursts coalesced)
    each view takes what concerns it (``view.pushed``): an instance view appends its new
    steps without reading the store, and re-reads its instance when one of its runs started
    or ended; a panel re-reads its list when a run of its own workflow did. Polled, as the
    safety net for changes made by other processes (a worker, the CLI): one task on the
    kernel's loop calls ``view.poll()`` on the views that show unfinished work every
    ``REFRESH_INTERVAL`` seconds, and ends when nothing unfinished is shown.
    """

    def __init__(self) -> None:
        self.views: weakref.WeakSet[Any] = weakref.WeakSet()
        self.task: asyncio.Task[None] | None = None
        self.apps: weakref.WeakSet[App] = weakref.WeakSet()
        self.steps: dict[str, list[StepRecord]] = {}
        self.runs: set[str] = set()
        self.flushing = False

    def watch(self, view: Any) -> None:
        self.views.add(view)
        if view.app not in self.apps:
            self.apps.add(view.app)
            loop = aio.shell_loop()
            view.app.add_listener(
                lambda iid, step, loop=loop: self._changed_threadsafe(loop, iid, step)
            )
        loop = aio.running_loop()
        if loop is not None and (self.task is None or self.task.done()):
            self.task = loop.create_task(self._run(), name="romancy-widgets")

    def _changed_threadsafe(
        self, loop: asyncio.AbstractEventLoop, instance_id: str, step: StepRecord | None
    ) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed
            loop.call_soon_threadsafe(self._changed, loop, instance_id, step)

    def _changed(
        self, loop: asyncio.AbstractEventLoop, instance_id: str, step: StepRecord | None
    ) -> None:
        if step is None:
            self.runs.add(instance_id)
        else:
            self.steps.setdefault(instance_id, []).append(step)
        if not self.flushing:
            self.flushing = True
            loop.call_later(PUSH_DELAY, self._flush)

    def _flush(self) -> None:
        steps, runs = self.steps, self.runs
        self.steps, self.runs, self.flushing = {}, set(), False
        for view in list(self.views):
            self._call(view, view.pushed, steps, runs)

    def _call(self, view: Any, update: Callable[..., None], *args: Any) -> None:
        try:
            update(*args)
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
                self._call(view, view.poll)


_live = _Live()


class InstanceView(w.VBox):
    """One instance: its timeline, Cancel, and the timer / event controls while it waits.

    Time travel: every step of the timeline (not the compensations) has "rewind to here",
    "roll back to here" (lists the compensations it would run, then asks to confirm) and
    "fork from here" (a form with the instance's input to edit, then Fork); a failed
    instance has Retry; a run whose code diverged from its history shows the diverging
    step with its diff and offers to rewind to the step before it. Each calls the app's
    method of that name on the kernel's loop and says in the message line what it did.
    """

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
        # An agent's tool call waiting for approval: the call, then Approve / Reject.
        self.approval = w.HTML()
        self._approval_call: str | None = None
        self.event_box = w.VBox(
            [
                self.approval,
                self.event_data,
                w.HBox([self.send_button, self.approve_button, self.reject_button]),
            ]
        )
        self.retry_button = w.Button(
            description="Retry", icon="redo", tooltip="resume from the step that failed"
        )
        # The roll back confirmation: the plan, Confirm and Cancel (which changes nothing).
        self.confirm_text = w.HTML()
        self.confirm_button = w.Button(description="Confirm", button_style="danger")
        self.dismiss_button = w.Button(description="Cancel")
        self.confirm_box = w.VBox(
            [self.confirm_text, w.HBox([self.confirm_button, self.dismiss_button])]
        )
        # The fork form: its fields are built when "fork from here" is clicked.
        self.fork_title = w.HTML()
        self.fork_form: _Form | None = None
        self.fork_id = w.Text(placeholder="new instance id (optional)", description="id")
        self.fork_button = w.Button(description="Fork", button_style="primary", icon="code-fork")
        self.fork_dismiss_button = w.Button(description="Cancel")
        self.fork_box = w.VBox()
        self.forked: str | None = None
        self.show_fork_button = w.Button(description="show the fork", icon="eye")
        self.fork_view: InstanceView | None = None
        self.fork_detail = w.VBox()
        self.divergence = w.HTML()
        self.divergence_button = w.Button(
            description="Rewind from the diverging step", button_style="warning", icon="undo"
        )
        self.divergence_box = w.VBox([self.divergence, self.divergence_button])
        self.cancel_button.on_click(lambda _: self.cancel())
        self.retry_button.on_click(lambda _: self.retry())
        self.confirm_button.on_click(lambda _: self.confirm_rollback())
        self.dismiss_button.on_click(lambda _: self.dismiss_rollback())
        self.fork_button.on_click(lambda _: self.fork())
        self.fork_dismiss_button.on_click(lambda _: self.dismiss_fork())
        self.show_fork_button.on_click(lambda _: self.show_fork())
        self.divergence_button.on_click(lambda _: self.rewind_divergence())
        self.fire_button.on_click(lambda _: self.fire_timer())
        self.send_button.on_click(lambda _: self.send_event())
        self.approve_button.on_click(lambda _: self.decide(True))
        self.reject_button.on_click(lambda _: self.decide(False))
        # Hidden until a refresh finds the instance waiting on a timer or an event.
        self.timer_box.layout.display = "none"
        self.event_box.layout.display = "none"
        for hidden in (
            self.retry_button,
            self.confirm_box,
            self.fork_box,
            self.show_fork_button,
            self.divergence_box,
        ):
            hidden.layout.display = "none"
        self._step_actions: dict[str, Callable[[InstanceView, str], Any]] = {}
        self._rollback_to: str | None = None  # the step a shown confirmation would roll to
        self._fork_at: str | None = None
        # The divergence check replays the instance once per (updated_at, code generation)
        # it looks diverged in. diverged_at: the step the replay diverged at, if it did;
        # _diverged_before: the step a rewind from there goes to (None: the start).
        self._replayed: tuple[Any, ...] | None = None
        self.diverged_at: str | None = None
        self._diverged_before: str | None = None
        self._waiting_event: str | None = None
        self._waiting_timer: str | None = None
        self._status = ""
        # What the last read saw (status, updated_at, lock_owner) and the last step shown,
        # so pushed steps append without a read and a poll reads only if another process
        # may have changed something.
        self._seen: tuple[Any, ...] | None = None
        self._last_seq = 0
        self._last_end: datetime | None = None
        super().__init__(
            [
                self.timeline,
                self.divergence_box,
                self.timer_box,
                self.event_box,
                w.HBox([self.cancel_button, self.retry_button]),
                self.confirm_box,
                self.fork_box,
                self.message,
                self.show_fork_button,
                self.fork_detail,
            ]
        )
        self.add_step_action("rewind", "rewind to here", InstanceView.rewind_to)
        self.add_step_action("rollback", "roll back to here", InstanceView.roll_back_to)
        self.add_step_action("fork", "fork from here", InstanceView.fork_from)
        self.refresh()
        _live.watch(self)

    # extension point for per-step actions (rewind, roll back to here)

    def add_step_action(
        self, name: str, label: str, handler: Callable[[InstanceView, str], Any]
    ) -> None:
        """Show a ``label`` button on every step but the compensations; a click calls
        ``handler(view, step_id)``. A ``name`` already added is replaced in place."""
        self._step_actions[name] = handler
        action = {"name": name, "label": label}
        actions = [a if a["name"] != name else action for a in self.timeline.actions]
        self.timeline.actions = actions if action in actions else [*actions, action]
        self.timeline.on_action(name, lambda content: self._clicked(name, content))

    def step_action(self, name: str, step_id: str) -> Any:
        return self._step_actions[name](self, step_id)

    def _clicked(self, name: str, content: dict[str, Any]) -> None:
        """A step button clicked in the browser: its error goes to the message line (a
        comm handler's exception would only reach the kernel's log)."""
        try:
            self.step_action(name, str(content["step_id"]))
        except Exception as error:
            self.show_message(f"{name} failed: {error}")

    # state

    @property
    def status(self) -> str:
        return self._status

    def is_live(self) -> bool:
        return self._status not in FINAL

    def show_message(self, text: str) -> None:
        self.message.value = _red(text)

    def show_note(self, text: str) -> None:
        """Say what an action did (not an error)."""
        self.message.value = _note(text)

    def pushed(self, steps: dict[str, list[StepRecord]], runs: set[str]) -> None:
        """Show what this process just recorded (see ``_Live``)."""
        if self.instance_id in runs:  # its status and waits may have changed
            self.refresh()
            return
        fresh = sorted(
            (step for step in steps.get(self.instance_id, ()) if step.seq > self._last_seq),
            key=lambda step: step.seq,
        )
        if not fresh:
            return
        expected = range(self._last_seq + 1, self._last_seq + 1 + len(fresh))
        if self._pending or [step.seq for step in fresh] != list(expected):
            self.refresh()  # a step recorded without a push (a wait the store answered)
            return
        self.timeline.append_steps([self._row(StepInfo.from_record(step)) for step in fresh])

    def poll(self) -> None:
        """Read the instance; its steps too if another process may have changed them."""
        try:
            info = self.app.get_instance(self.instance_id)
        except WorkflowNotFound:
            if not self._pending:
                raise
            return
        here = info.lock_owner in (None, self.app.worker_id)  # else pushes do not see it
        if not here or self._seen != (info.status, info.updated_at, info.lock_owner):
            self.refresh(info)

    def refresh(self, info: InstanceInfo | None = None) -> None:
        """Read the instance, its steps and its waits from the store and show them."""
        if info is None:
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
        self._seen = (info.status, info.updated_at, info.lock_owner)
        self.timeline.instance = {
            "instance_id": info.instance_id,
            "workflow_name": info.workflow_name,
            "status": info.status,
            "code_version": info.code_version or "",
            "error": error_summary(info.error, first_line=False),
        }
        self._last_seq, self._last_end = 0, info.created_at
        history = self.app.get_history(info.instance_id)
        self.timeline.set_steps([self._row(step) for step in history])
        self._show_waits(info.status)
        final = info.status in FINAL
        self.cancel_button.disabled = final
        self.cancel_button.layout.display = "none" if final else ""  # nothing left to cancel
        self.retry_button.layout.display = "" if info.status == "failed" else "none"
        self._check_divergence(info)

    def _row(self, step: StepInfo) -> dict[str, Any]:
        """One step as the timeline shows it; steps come in order (a wait's time starts at
        the end of the step before it when the store did not record its start)."""
        previous_end, self._last_seq, self._last_end = self._last_end, step.seq, step.finished_at
        session = state.session_started()
        return {
            "seq": step.seq,
            "step_id": step.step_id,
            "kind": step.kind,
            "name": step.name,
            "status": step.status,
            "duration_ms": round(step_seconds(step, previous_end) * 1000, 3),
            "duration": step_duration(step, previous_end),
            "wait": step.kind in WAIT_KINDS,
            "attempts": step.attempts,
            "source": "executed" if step.finished_at.timestamp() >= session else "cached",
            "output": "" if step.error else _outcome(step),
            "error": error_summary(step.error),
            "actionable": step.kind not in UNWINDING_KINDS,  # no travel to a compensation
        }

    def _show_waits(self, status: str) -> None:
        timer: dict[str, Any] | None = None
        event: dict[str, Any] | None = None
        if status not in FINAL:
            for wait in self.app.store.load_waits(self.instance_id):
                if wait.kind == "wait_event" and wait.channel:
                    event = {"type": wait.channel, "step_id": wait.step_id}
                    event.update(self._approval_of(wait.channel))
                elif wait.fire_at is not None:
                    timer = {"step_id": wait.step_id, "fire_at": wait.fire_at}
        self._waiting_timer = timer["step_id"] if timer else None
        self._waiting_event = event["type"] if event else None
        approval = event.pop("approval", None) if event else None
        self._approval_call = approval["tool_call_id"] if approval else None
        self.approval.value = (
            f"approve {_code(approval['tool'])}({_code(json.dumps(approval['args']))})?"
            if approval
            else ""
        )
        can_fire = timer is not None
        self.timeline.waiting = {
            **({"timer": timer} if timer else {}),
            **({"event": event} if event else {}),
            **({"approval": approval} if approval else {}),
            "can_fire": can_fire,
        }
        self.timer_box.layout.display = "flex" if timer else "none"
        self.fire_button.disabled = not can_fire
        self.fire_button.tooltip = "" if can_fire else "no pending timer"
        self.event_box.layout.display = "flex" if event else "none"

    # actions

    def _run(
        self,
        coro: Any,
        what: str,
        then: Callable[[Any], None] | None = None,
        *,
        refresh: bool = True,
    ) -> None:
        """Run ``coro`` on the kernel's loop (at once where no loop runs, as in a plain
        shell). Its error goes to the message line, never only to a log; its result to
        ``then`` (else the message line is cleared); then the view re-reads the instance."""

        def done(result: Any, error: BaseException | None) -> None:
            try:
                if error is not None:
                    self.show_message(f"{what} failed: {error}")
                elif then is not None:
                    then(result)
                else:
                    self.show_message("")
                if refresh:
                    self.refresh()
            except Exception as failure:  # the app was closed meanwhile
                self.show_message(f"{what}: {failure}")

        try:
            # The app's loop (engine-private: App exposes no accessor), where its calls
            # must run even when a click arrives on a kernel subshell's thread.
            ran, result = aio.run_on(self.app.loop, coro, done)
        except Exception as error:
            done(None, error)
            return
        if ran:
            done(result, None)

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

    def _approval_of(self, event_type: str) -> dict[str, Any]:
        """``{"approval": call}`` if ``event_type`` decides an agent's tool call."""
        if not event_type.startswith(ai_agent.APPROVAL_EVENT_PREFIX):
            return {}
        for call in ai_agent.pending_approvals(self.app, self.instance_id):
            if call.event_type == event_type:
                return {
                    "approval": {
                        "tool_call_id": call.tool_call_id,
                        "tool": call.tool,
                        "args": call.args,
                    }
                }
        return {}

    def decide(self, approved: bool) -> None:
        """Approve / Reject: an agent's tool call through ``rn.ai.approve`` (a ``reason``
        in the editor's JSON is what the model reads), else the event ``{"approved": ...}``."""
        if self._approval_call is None:
            self.send_event({"approved": approved})
            return
        try:
            data = json.loads(self.event_data.value or "null")
        except ValueError:
            data = None
        reason = data.get("reason") if isinstance(data, dict) else None
        self._run(
            ai_agent.approve(
                self.app, self.instance_id, self._approval_call, approved=approved, reason=reason
            ),
            "approve" if approved else "reject",
        )

    def fire_timer(self) -> None:
        """Fire the pending timer now, as if it were due."""
        if self._waiting_timer is None:
            self.show_message("no timer to fire")
            return
        self._run(self.app.fire_timer(self.instance_id, self._waiting_timer), "fire now")

    # time travel (the engine side: engine/travel.py)

    def rewind_to(self, step_id: str | None) -> None:
        """Keep ``step_id`` and what came before it (None: nothing), archive the rest and
        let the instance run on from there; no compensation runs."""

        def rewound(change: HistoryChange) -> None:
            self.show_note(
                f"rewound to {step_id or 'the start'}: kept {len(change.kept)} step(s), "
                f"archived {len(change.archived)}"
            )

        self._run(self.app.rewind(self.instance_id, to=step_id), "rewind", rewound)

    def roll_back_to(self, step_id: str) -> None:
        """Show the compensations a rollback to ``step_id`` would run and ask to confirm;
        nothing changes until Confirm."""
        self.dismiss_fork()

        def ask(plan: list[Undo]) -> None:
            self._rollback_to = step_id
            self.confirm_text.value = _plan_html(step_id, plan)
            self.confirm_box.layout.display = "flex"
            self.show_message("")

        self._run(
            self.app.rollback_plan(self.instance_id, to=step_id), "roll back", ask, refresh=False
        )

    def confirm_rollback(self) -> None:
        """Roll back to the step the confirmation shows: compensate the later steps
        (newest first), archive them and run on from there."""
        step_id, self._rollback_to = self._rollback_to, None
        self.confirm_box.layout.display = "none"
        if step_id is None:
            self.show_message("nothing to confirm: click roll back to here on a step")
            return

        def rolled_back(change: HistoryChange) -> None:
            undone = "no compensation ran"
            if change.compensated:
                undone = f"compensated {_steps(change.compensated)}"
            if change.status == "failed":
                self.show_message(
                    f"roll back to {step_id}: a compensation failed for good "
                    f"({undone}); the instance ended failed"
                )
                return
            self.show_note(
                f"rolled back to {step_id}: {undone}; kept {len(change.kept)} step(s), "
                f"archived {len(change.archived)}"
            )

        self._run(self.app.rollback(self.instance_id, to=step_id), "roll back", rolled_back)

    def dismiss_rollback(self) -> None:
        """Close the confirmation; nothing is rolled back."""
        self._rollback_to = None
        self.confirm_box.layout.display = "none"
        self.confirm_text.value = ""

    def fork_from(self, step_id: str) -> None:
        """Show the fork form: the instance's input to edit, an optional new id, Fork."""
        self.dismiss_rollback()
        info = self.app.get_instance(self.instance_id)
        workflow = self.app.registry.find_workflow(info.workflow_name)
        self._fork_at = step_id
        self.fork_form = None if workflow is None else _Form(workflow, info.input)
        fields = [] if self.fork_form is None else list(self.fork_form.fields.values())
        self.fork_title.value = (
            f"<b>fork from {_code(step_id)}</b>: a new instance with the history up to "
            "this step"
            + ("" if workflow else " (its workflow is not defined here: it keeps its input)")
        )
        self.fork_box.children = [
            self.fork_title,
            *fields,
            w.HBox([self.fork_id, self.fork_button, self.fork_dismiss_button]),
        ]
        self.fork_box.layout.display = "flex"

    def fork(self) -> None:
        """Fork from the step the form shows, with the form's input."""
        if self._fork_at is None:
            self.show_message("nothing to fork: click fork from here on a step")
            return
        try:
            values = None if self.fork_form is None else self.fork_form.values()
        except ValueError as error:
            self.show_message(f"cannot fork: {error}")
            return
        at = self._fork_at

        def forked(new_id: str) -> None:
            self.dismiss_fork()
            self.fork_id.value = ""
            self.forked = new_id
            self.show_fork_button.description = f"show {new_id}"
            self.show_fork_button.layout.display = ""
            self.show_note(f"forked from {at} as {new_id}")

        new_id = self.fork_id.value.strip() or None
        coro = self.app.fork(self.instance_id, at=at, input=values, instance_id=new_id)
        self._run(coro, "fork", forked, refresh=False)

    def dismiss_fork(self) -> None:
        """Close the fork form."""
        self._fork_at, self.fork_form = None, None
        self.fork_box.layout.display = "none"
        self.fork_box.children = []

    def show_fork(self) -> InstanceView | None:
        """Show the view of the instance the last fork made, below this one."""
        if self.forked is None:
            return None
        if self.fork_view is None or self.fork_view.instance_id != self.forked:
            self.fork_view = InstanceView(self.app, self.forked, pending=True)
            self.fork_detail.children = [self.fork_view]
        return self.fork_view

    def retry(self) -> None:
        """Resume the failed instance from the step that failed."""

        def retried(change: HistoryChange) -> None:
            self.show_note(
                f"retrying: kept {len(change.kept)} step(s), "
                f"archived {len(change.archived)} ({_steps(change.archived)})"
            )

        self._run(self.app.retry(self.instance_id), "retry", retried)

    def rewind_divergence(self) -> None:
        """Rewind to the step recorded before the one the code diverged at."""
        if self.diverged_at is None:
            self.show_message("no divergence to rewind from")
            return
        self.rewind_to(self._diverged_before)

    def _check_divergence(self, info: InstanceInfo) -> None:
        """Replay the instance when it looks diverged: running, but held by no worker and
        not running here (a diverged run let go of it and waits for a fix or a rewind).
        Once per state it is seen in; in any other state nothing is replayed."""
        looks_diverged = (
            info.status == "running"
            and info.lock_owner is None
            and info.instance_id not in self.app.running()
            and self.app.registry.find_workflow(info.workflow_name) is not None
        )
        if not looks_diverged:
            self._replayed = None
            self._show_divergence(None)
            return
        seen = (info.updated_at, self.app.registry.generation)
        if seen == self._replayed:
            return
        self._replayed = seen

        def checked(report: ReplayReport) -> None:
            if self._replayed == seen:  # else the instance moved on meanwhile
                self._show_divergence(report)

        self._run(self.app.replay(self.instance_id), "divergence check", checked, refresh=False)

    def _show_divergence(self, report: ReplayReport | None) -> None:
        diverged = report is not None and report.outcome == "diverged"
        self.diverged_at = report.diverged_at if report is not None and diverged else None
        if report is None or self.diverged_at is None:
            self.divergence_box.layout.display = "none"
            return
        row = next((r for r in report.rows if r.step_id == self.diverged_at), None)
        diff = getattr(report.error, "diff", None) or (row.diff if row else None) or ""
        # The step recorded before the diverging one (a compensation is no place to go).
        shown = self.timeline.steps
        at = next((s["seq"] for s in shown if s["step_id"] == self.diverged_at), 0)
        before = [s["step_id"] for s in shown if s["actionable"] and s["seq"] < at]
        self._diverged_before = before[-1] if before else None
        self.divergence.value = (
            f"<b style='color:#b71c1c'>diverged at {_code(self.diverged_at)}</b>: the code "
            "now asks for something other than what history recorded there"
            f"<pre>{html.escape(diff)}</pre>"
        )
        self.divergence_button.tooltip = (
            f"rewind to {self._diverged_before or 'the start'} and run on from there"
        )
        self.divergence_box.layout.display = "flex"


def _plan_html(step_id: str, plan: Sequence[Undo]) -> str:
    """The roll back confirmation: what will run, in order (escaped)."""
    head = f"<b>roll back to {_code(step_id)}?</b> "
    if not plan:
        return head + (
            "Nothing to undo: no compensation will run. The steps after it are archived and "
            "run again."
        )
    items = "".join(
        f"<li>{_code(undo.compensation)} undoes {_code(undo.step_id)}</li>"
        if undo.compensation is not None
        else f"<li>{_code(undo.step_id)}: its activity {_code(undo.activity)} is not defined "
        "here, so its compensation cannot run</li>"
        for undo in plan
    )
    return head + f"These compensations will run, in this order:<ol>{items}</ol>"


def _field(name: str, annotation: Any, default: Any) -> w.Widget:
    """A typed widget for a bool / int / float / str parameter whose value (``default``)
    fits the type, else a JSON text area (a ``qty: int = None`` keeps its None)."""
    has_default = default is not inspect.Parameter.empty

    def fits(kind: type) -> bool:
        return not has_default or (isinstance(default, kind) and not isinstance(default, bool))

    if annotation is bool and (not has_default or isinstance(default, bool)):
        return w.Checkbox(value=bool(default) if has_default else False, description=name)
    if annotation is int and fits(int):
        return w.IntText(value=default if has_default else 0, description=name)
    if annotation is float and fits(int | float):
        return w.FloatText(value=default if has_default else 0.0, description=name)
    if annotation is str and fits(str):
        return w.Text(value=default if has_default else "", description=name)
    value = json.dumps(default, default=str) if has_default else ""
    return w.Textarea(value=value, description=name, placeholder="JSON", rows=2)


class _Form:
    """Fields for a workflow's arguments, built from its signature (after ``ctx``): typed
    widgets where the annotation says so, JSON text otherwise. The panel's Start form and
    an instance's fork form (prefilled with that instance's input) are both one of these.
    """

    def __init__(self, workflow: Workflow[Any, Any], values: Mapping[str, Any] | None = None):
        try:
            hints = typing.get_type_hints(workflow.fn)
        except Exception:  # a forward reference not defined yet: plain JSON fields
            hints = {}
        parameters = list(inspect.signature(workflow.fn).parameters.values())[1:]
        self.required = [p.name for p in parameters if p.default is inspect.Parameter.empty]
        self.fields: dict[str, w.Widget] = {}
        for parameter in parameters:
            annotation = hints.get(parameter.name, parameter.annotation)
            value = (values or {}).get(parameter.name, parameter.default)
            self.fields[parameter.name] = _field(parameter.name, annotation, value)

    def values(self) -> dict[str, Any]:
        """The fields' values as keyword arguments (JSON fields decoded).

        A required field left empty raises ``ValueError`` naming it; an optional JSON field
        left empty is left out, so its default applies.
        """
        empty = [
            name
            for name, field in self.fields.items()
            if isinstance(field, w.Text | w.Textarea) and not field.value.strip()
        ]
        missing = [name for name in self.required if name in empty]
        if missing:
            raise ValueError(f"fill in {', '.join(missing)} (required)")
        kwargs: dict[str, Any] = {}
        for name, field in self.fields.items():
            if not isinstance(field, w.Textarea):
                kwargs[name] = field.value
            elif name not in empty:
                try:
                    kwargs[name] = json.loads(field.value)
                except ValueError as error:
                    raise ValueError(f"{name}: not valid JSON ({error})") from None
        return kwargs


class WorkflowPanel(w.VBox):
    """A form from the workflow's signature, Start, the instances, and the selected one."""

    def __init__(self, workflow: Workflow[Any, Any], app: App | None = None, limit: int = 20):
        self.workflow = workflow
        self.app = app or state.current_app()
        self.limit = limit
        self.form = _Form(workflow)
        self.fields, self.required = self.form.fields, self.form.required
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
        self._ours: dict[str, bool] = {}  # instance id -> of this workflow (pushes name ids)
        title = w.HTML(
            f"<b>{html.escape(workflow.name)}</b> "
            f"<small>code {html.escape(workflow.code_version)}</small>"
        )
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
        """The form's values as keyword arguments (see :meth:`_Form.values`)."""
        return self.form.values()

    def start(self) -> str | None:
        """Start an instance with the form's values, select it, and return its id."""
        try:
            iid = state.start_instance(
                self.workflow, (), self.values(), self.instance_id.value.strip() or None
            )
        except Exception as error:
            self.show_message(f"cannot start: {error}")
            return None
        self.message.value = ""
        self.instance_id.value = ""
        self._refresh_list(select=iid)
        return iid

    def is_live(self) -> bool:
        return self._active

    def show_message(self, text: str) -> None:
        self.message.value = _red(text)

    def pushed(self, steps: dict[str, list[StepRecord]], runs: set[str]) -> None:
        """Re-read the list when a run of this workflow's instances started or ended here
        (the statuses it shows change then; steps do not change them)."""
        if any(self._is_ours(iid) for iid in runs):
            self._refresh_list()

    def poll(self) -> None:
        self._refresh_list()

    def _is_ours(self, instance_id: str) -> bool:
        if instance_id not in self._ours:
            try:
                workflow = self.app.get_instance(instance_id).workflow_name
            except WorkflowNotFound:
                return False
            self._ours[instance_id] = workflow == self.workflow.name
        return self._ours[instance_id]

    def refresh(self, select: str | None = None) -> None:
        """Re-read the instance list and the selected instance."""
        self._refresh_list(select)
        if self.view is not None:
            self.view.refresh()

    def _refresh_list(self, select: str | None = None) -> None:
        """Re-read the instance list; show the selected instance (its view keeps itself
        current)."""
        page = self.app.list_instances(workflow=self.workflow.name, limit=self.limit)
        self._ours.update((i.instance_id, True) for i in page)
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
        if current in ids:
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
