"""Widgets through their Python API: set values, click, and check the store."""

from __future__ import annotations

import asyncio
from typing import Any

import ipywidgets as w

import romancy_nb as rn
from romancy_nb.notebook import aio
from romancy_nb.notebook.widgets import InstanceView, Timeline, WorkflowPanel, asset
from tests.notebook.conftest import Shell


def run(coro: Any) -> Any:
    """Drive the shell's loop (a plain shell runs it only while a cell awaits)."""
    return aio.shell_loop().run_until_complete(coro)


async def until(check: Any, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


def define(ip: Shell) -> None:
    ip.run(
        "%%activity --retry 3 --retry-interval 0\n"
        "def pack(ctx, item: str, qty: int) -> str:\n"
        "    if ctx.attempt == 1 and item == 'flaky':\n"
        "        raise RuntimeError('first try fails')\n"
        "    return f'{qty} x {item}'"
    )
    ip.run(
        "%%workflow\n"
        "async def ship(ctx, item: str, qty: int = 2, express: bool = False,\n"
        "               tags: list[str] | None = None) -> str:\n"
        "    return await pack(ctx, item, qty)"
    )


def test_panel_form_from_signature_and_start(ip: Shell) -> None:
    define(ip)
    panel = rn.panel("ship")
    assert isinstance(panel, WorkflowPanel)
    assert isinstance(panel.fields["item"], w.Text)
    assert isinstance(panel.fields["qty"], w.IntText) and panel.fields["qty"].value == 2
    assert isinstance(panel.fields["express"], w.Checkbox)
    assert isinstance(panel.fields["tags"], w.Textarea)
    panel.fields["item"].value = "flaky"
    panel.fields["qty"].value = 3
    panel.fields["tags"].value = '["a", "b"]'
    panel.instance_id.value = "p-1"
    panel.start_button.click()
    assert run(rn.current_app().result("p-1")) == "3 x flaky"
    assert rn.current_app().get_instance("p-1").input == {
        "item": "flaky",
        "qty": 3,
        "express": False,
        "tags": ["a", "b"],
    }
    panel.refresh()
    assert panel.instances.value == "p-1"
    assert panel.instances.options[0] == ("p-1 · completed", "p-1")
    view = panel.view
    assert isinstance(view, InstanceView) and view.instance_id == "p-1"
    (step,) = view.timeline.steps
    assert step["step_id"] == "pack:1"
    assert step["status"] == "completed"
    assert step["attempts"] == 2
    assert step["source"] == "executed"
    assert step["output"] == "3 x flaky"
    assert view.timeline.instance["status"] == "completed"
    # Nothing left to cancel: the button is gone, not a disabled red one.
    assert view.cancel_button.disabled and view.cancel_button.layout.display == "none"
    assert not panel.is_live()


def test_panel_start_with_bad_input_shows_the_error(ip: Shell) -> None:
    define(ip)
    panel = rn.panel("ship")
    panel.fields["item"].value = "cup"
    panel.fields["tags"].value = "[not json"
    assert panel.start() is None
    assert "not valid JSON" in panel.message.value
    assert rn.instances().empty


def test_start_refuses_an_empty_required_field_and_names_it(ip: Shell) -> None:
    define(ip)
    panel = rn.panel("ship")
    assert panel.required == ["item"]
    panel.fields["item"].value = "   "
    panel.start_button.click()
    assert "fill in item (required)" in panel.message.value
    assert rn.instances().empty
    # An optional JSON field left empty takes its default; qty keeps its form value.
    panel.fields["item"].value = "pen"
    panel.fields["tags"].value = ""
    panel.instance_id.value = "req-1"
    panel.start_button.click()
    assert panel.message.value == ""
    assert run(rn.current_app().result("req-1")) == "2 x pen"
    assert rn.current_app().get_instance("req-1").input == {
        "item": "pen",
        "qty": 2,
        "express": False,
        "tags": None,
    }


def test_text_from_users_and_the_store_is_escaped_in_html(ip: Shell) -> None:
    define(ip)
    panel = rn.panel("ship")
    panel.fields["item"].value = "cup"
    panel.fields["tags"].value = '"<img src=x onerror=alert(1)>"'  # not a list of strings
    assert panel.start() is None
    assert "cannot start" in panel.message.value
    assert "<img" not in panel.message.value and "&lt;img" in panel.message.value
    view = InstanceView(rn.current_app(), "nothing-yet", pending=True)
    view.show_message("refresh failed: <b>bold</b> & co")
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; co" in view.message.value


def test_cancel_button_cancels_in_the_store(ip: Shell) -> None:
    ip.run(
        "%%activity\nasync def slow(ctx) -> None:\n    import asyncio\n    await asyncio.sleep(60)"
    )
    ip.run("%%workflow\nasync def slow_flow(ctx) -> None:\n    await slow(ctx)")
    ip.run(
        "await rn.current_app().start(slow_flow, instance_id='x-1')\n"
        "import asyncio\nawait asyncio.sleep(0.05)"
    )
    view = ip.run("%romancy show x-1")
    assert isinstance(view, InstanceView)
    assert view.is_live() and not view.cancel_button.disabled
    assert view.cancel_button.layout.display != "none"
    view.cancel_button.click()
    assert rn.current_app().get_instance("x-1").status == "cancelled"
    assert view.timeline.instance["status"] == "cancelled"
    assert view.cancel_button.disabled and view.cancel_button.layout.display == "none"


def test_event_controls_approve_a_waiting_instance(ip: Shell) -> None:
    ip.run(
        "%%workflow\nasync def approval(ctx, what: str) -> str:\n"
        "    event = await ctx.wait_event('approval')\n"
        "    return what + (' approved' if event.data['approved'] else ' rejected')"
    )
    for iid in ("e-1", "e-2", "e-3"):
        ip.run(f"await rn.current_app().start(approval, 'deploy', instance_id='{iid}')")
    app = rn.current_app()
    run(
        until(
            lambda: all(
                app.get_instance(i).status == "waiting_for_event" for i in ("e-1", "e-2", "e-3")
            )
        )
    )
    views = {iid: InstanceView(app, iid) for iid in ("e-1", "e-2", "e-3")}
    view = views["e-1"]
    assert view.timeline.waiting["event"]["type"] == "approval"
    assert view.event_box.layout.display == "flex"
    assert view.timer_box.layout.display == "none"
    view.approve_button.click()
    assert run(app.result("e-1", timeout=10)) == "deploy approved"
    # One event wakes every subscriber: the others were waiting for "approval" too.
    assert run(app.result("e-2", timeout=10)) == "deploy approved"
    view.refresh()
    assert view.event_box.layout.display == "none"
    assert view.timeline.waiting == {"can_fire": False}


def test_send_with_json_editor_and_reject(ip: Shell) -> None:
    ip.run(
        "%%workflow\nasync def echo_event(ctx) -> dict:\n"
        "    return (await ctx.wait_event('answer')).data"
    )
    app = rn.current_app()
    ip.run("await rn.current_app().start(echo_event, instance_id='j-1')")
    run(until(lambda: app.get_instance("j-1").status == "waiting_for_event"))
    view = InstanceView(app, "j-1")
    view.event_data.value = "{broken"
    view.send_button.click()
    assert "not valid JSON" in view.message.value
    view.event_data.value = '{"answer": 42}'
    view.send_button.click()
    assert run(app.result("j-1", timeout=10)) == {"answer": 42}
    ip.run("await rn.current_app().start(echo_event, instance_id='j-2')")
    run(until(lambda: app.get_instance("j-2").status == "waiting_for_event"))
    InstanceView(app, "j-2").reject_button.click()
    assert run(app.result("j-2", timeout=10)) == {"approved": False}


def test_timer_shows_a_countdown_and_fire_now_ends_the_sleep(ip: Shell) -> None:
    ip.run("%%workflow\nasync def nap(ctx) -> str:\n    await ctx.sleep(3600)\n    return 'up'")
    app = rn.current_app()
    ip.run("await rn.current_app().start(nap, instance_id='t-1')")
    run(until(lambda: app.get_instance("t-1").status == "waiting_for_timer"))
    view = InstanceView(app, "t-1")
    timer = view.timeline.waiting["timer"]
    assert timer["step_id"] == "sleep:1" and timer["fire_at"] > 0
    assert view.timer_box.layout.display == "flex"
    assert not view.fire_button.disabled
    view.fire_button.click()  # an hour early
    assert run(app.result("t-1", timeout=10)) == "up"
    fired = app.get_history("t-1")[0]
    assert fired.step_id == "sleep:1" and fired.status == "completed"


def test_step_actions_plug_into_the_timeline(ip: Shell) -> None:
    define(ip)
    ip.run(
        "await rn.current_app().result(await rn.current_app().start(ship, 'box', "
        "instance_id='s-1'))"
    )
    view = InstanceView(rn.current_app(), "s-1")
    seen: list[str] = []
    view.add_step_action("inspect", "inspect", lambda v, step: seen.append(step))
    assert view.timeline.actions == [
        {"name": "rewind", "label": "rewind to here"},
        {"name": "rollback", "label": "roll back to here"},
        {"name": "fork", "label": "fork from here"},
        {"name": "inspect", "label": "inspect"},
    ]
    view.timeline._on_msg(view.timeline, {"action": "inspect", "step_id": "pack:1"}, [])
    assert seen == ["pack:1"]
    # The same name again replaces the action in place (no second button).
    view.add_step_action("inspect", "look", lambda v, step: seen.append("again " + step))
    assert [a["label"] for a in view.timeline.actions][-1] == "look"
    assert len(view.timeline.actions) == 4
    view.timeline._on_msg(view.timeline, {"action": "inspect", "step_id": "pack:1"}, [])
    assert seen == ["pack:1", "again pack:1"]


def test_front_end_assets_exist() -> None:
    assert asset("timeline.js").read_text().count("export default") == 1
    assert asset("timeline.css").exists()
    assert Timeline().steps == []


def test_a_pending_view_hides_the_wait_controls(ip: Shell) -> None:
    view = InstanceView(rn.current_app(), "not-stored-yet", pending=True)
    assert view.status == "starting" and view.is_live()
    assert view.event_box.layout.display == "none"
    assert view.timer_box.layout.display == "none"


def test_views_update_from_engine_pushes_without_refresh(ip: Shell) -> None:
    define(ip)
    panel = rn.panel("ship")
    panel.fields["item"].value = "cup"
    panel.instance_id.value = "push-1"
    panel.start_button.click()
    view = panel.view
    assert view is not None and view.instance_id == "push-1"
    assert run(rn.current_app().result("push-1")) == "2 x cup"
    run(until(lambda: view.status == "completed"))  # no refresh() call: pushed
    assert [step["step_id"] for step in view.timeline.steps] == ["pack:1"]
    assert panel.instances.options[0] == ("push-1 · completed", "push-1")


def test_a_wait_step_shows_how_long_it_waited(ip: Shell) -> None:
    ip.run(
        "%%workflow\nasync def hold(ctx) -> str:\n    await ctx.wait_event('go')\n    return 'went'"
    )
    app = rn.current_app()
    ip.run("await rn.current_app().start(hold, instance_id='w-1')")
    run(until(lambda: app.get_instance("w-1").status == "waiting_for_event"))
    run(asyncio.sleep(0.3))
    view = InstanceView(app, "w-1")
    view.send_event({"ok": True})
    assert run(app.result("w-1", timeout=10)) == "went"
    view.refresh()
    (step,) = view.timeline.steps
    assert step["step_id"] == "wait_event:1" and step["wait"]
    assert step["duration_ms"] >= 300  # not the instant it was answered
    assert step["duration"].startswith("waited ") and "µs" not in step["duration"]


def _record_messages(widget: Any) -> list[dict[str, Any]]:
    """Every message the widget sends to the front end, as sent (its comm is a dummy)."""
    sent: list[dict[str, Any]] = []
    comm_send = widget.comm.send

    def send(data: Any = None, metadata: Any = None, buffers: Any = None) -> None:
        sent.append(data)
        comm_send(data=data, metadata=metadata, buffers=buffers)

    widget.comm.send = send
    return sent


def _count_calls(obj: Any, name: str, monkeypatch: Any) -> list[int]:
    """Count the calls of ``obj.name`` (the real method still runs)."""
    calls = [0]
    real = getattr(obj, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(obj, name, counted)
    return calls


STEPS = 30


def test_a_live_view_sends_each_step_once_and_reads_no_history_per_step(
    ip: Shell, monkeypatch: Any
) -> None:
    # Each step outlasts the push coalescing delay, so every step is its own push.
    ip.run(
        "%%activity\nasync def tick(ctx, i: int) -> int:\n"
        "    import asyncio\n    await asyncio.sleep(0.03)\n    return i"
    )
    ip.run(
        "%%workflow\nasync def ticks(ctx, n: int) -> int:\n"
        "    for i in range(n):\n        await tick(ctx, i)\n    return n"
    )
    app = rn.current_app()
    panel = rn.panel("ticks")
    panel.fields["n"].value = STEPS
    panel.instance_id.value = "tick-1"
    history_reads = _count_calls(app.store, "load_history", monkeypatch)
    panel.start_button.click()
    view = panel.view
    assert view is not None and view.instance_id == "tick-1"
    sent = _record_messages(view.timeline)
    assert run(app.result("tick-1", timeout=30)) == STEPS
    run(until(lambda: view.status == "completed"))
    assert [step["seq"] for step in view.timeline.steps] == list(range(1, STEPS + 1))
    step_messages = [m["content"] for m in sent if m.get("method") == "custom"]
    rows_sent = sum(len(message["steps"]) for message in step_messages)
    assert rows_sent == STEPS  # each row once: not the whole history again on each step
    assert all("steps" not in m.get("state", {}) for m in sent)
    # Reads of the history: when the run started and when it ended, not once per step.
    assert history_reads[0] <= 4, history_reads


def test_a_panel_refreshes_only_for_its_own_workflow(ip: Shell, monkeypatch: Any) -> None:
    define(ip)
    ip.run("%%workflow\nasync def other(ctx) -> str:\n    return await pack(ctx, 'x', 1)")
    app = rn.current_app()
    panel = rn.panel("ship")
    listings = _count_calls(app, "list_instances", monkeypatch)
    run_to_end = "await rn.current_app().result(await rn.current_app().start({}))"
    for n in range(3):
        ip.run(run_to_end.format(f"other, instance_id='o-{n}'"))
    run(asyncio.sleep(0.1))  # the pushes of those runs are flushed
    assert listings[0] == 0
    ip.run(run_to_end.format("ship, 'cup', instance_id='s-9'"))
    run(until(lambda: panel.instances.options[:1] == (("s-9 · completed", "s-9"),)))
    assert listings[0] >= 1


def test_the_timeline_sends_new_rows_all_rows_after_a_rewind_and_on_request() -> None:
    timeline = Timeline()
    sent = _record_messages(timeline)
    one, two = {"seq": 1, "step_id": "a:1"}, {"seq": 2, "step_id": "b:1"}
    timeline.set_steps([one])
    timeline.set_steps([one, two])  # history grew: only the new row goes
    timeline.set_steps([one, two])  # nothing new: nothing sent
    timeline.set_steps([one, {"seq": 2, "step_id": "c:1"}])  # rewound and re-run: all of it
    timeline._on_msg(timeline, {"action": "snapshot"}, [])  # a view rendering asks for all
    assert [(m["content"]["from"], m["content"]["steps"]) for m in sent] == [
        (0, [one]),
        (1, [two]),
        (0, [one, {"seq": 2, "step_id": "c:1"}]),
        (0, [one, {"seq": 2, "step_id": "c:1"}]),
    ]


# time travel from the instance view


def define_trip(ip: Shell) -> list[str]:
    """A three-booking trip whose bookings are undone by ``unbook``; each execution of
    either is appended to the returned ledger (in the shell's namespace)."""
    ledger: list[str] = []
    ip.ns["ledger"] = ledger
    ip.run(
        "%%activity\ndef book(ctx, what: str) -> str:\n"
        "    ledger.append('book ' + what)\n    return what.upper()"
    )
    ip.run(
        "%%activity --compensation-of book\ndef unbook(ctx, what: str) -> None:\n"
        "    ledger.append('unbook ' + what)"
    )
    ip.run(
        "%%workflow\nasync def trip(ctx, city: str, nights: int = 1) -> list[str]:\n"
        "    return [await book(ctx, city), await book(ctx, f'hotel x{nights}'),\n"
        "            await book(ctx, 'car')]"
    )
    return ledger


def finished_trip(ip: Shell, iid: str) -> InstanceView:
    ip.run(
        "await rn.current_app().result(await rn.current_app().start(trip, 'rome', "
        f"instance_id='{iid}'))"
    )
    return InstanceView(rn.current_app(), iid)


def click_step(view: InstanceView, action: str, step_id: str) -> None:
    """What a step button in the browser sends (the timeline's message)."""
    view.timeline._on_msg(view.timeline, {"action": action, "step_id": step_id}, [])


def step_ids(iid: str) -> list[tuple[str, str]]:
    return [(s.step_id, s.status) for s in rn.current_app().get_history(iid)]


BOOKED = ["book rome", "book hotel x1", "book car"]
ALL_BOOKED = [("book:1", "completed"), ("book:2", "completed"), ("book:3", "completed")]


def test_rewind_to_here_keeps_the_step_and_reruns_the_rest(ip: Shell) -> None:
    ledger = define_trip(ip)
    view = finished_trip(ip, "tr-1")
    app = rn.current_app()
    assert ledger == BOOKED
    assert view.retry_button.layout.display == "none"  # not failed
    click_step(view, "rewind", "book:1")
    assert "rewound to book:1: kept 1 step(s), archived 2" in view.message.value
    assert run(app.result("tr-1", timeout=10)) == ["ROME", "HOTEL X1", "CAR"]
    assert ledger == [*BOOKED, "book hotel x1", "book car"]  # book:1 kept, not re-run
    (archived,) = app.archived_runs("tr-1")
    assert (archived.status, archived.cut_after, archived.steps) == ("rewound", "book:1", 2)
    assert step_ids("tr-1") == ALL_BOOKED
    run(until(lambda: view.status == "completed"))


def test_roll_back_lists_the_compensations_and_runs_them_on_confirm(ip: Shell) -> None:
    ledger = define_trip(ip)
    view = finished_trip(ip, "tr-2")
    app = rn.current_app()
    assert view.confirm_box.layout.display == "none"
    click_step(view, "rollback", "book:1")
    plan = view.confirm_text.value
    assert view.confirm_box.layout.display == "flex"
    assert "<code>unbook</code> undoes <code>book:3</code>" in plan
    assert plan.index("book:3") < plan.index("book:2")  # newest first
    assert ledger == BOOKED and app.archived_runs("tr-2") == []  # asking changed nothing
    view.confirm_button.click()
    assert view.confirm_box.layout.display == "none"
    message = view.message.value
    assert "rolled back to book:1: compensated book:3, book:2" in message, message
    assert run(app.result("tr-2", timeout=10)) == ["ROME", "HOTEL X1", "CAR"]
    assert ledger == [*BOOKED, "unbook car", "unbook hotel x1", "book hotel x1", "book car"]
    (archived,) = app.archived_runs("tr-2")
    assert (archived.status, archived.cut_after) == ("rolled_back", "book:1")
    assert step_ids("tr-2") == ALL_BOOKED


def test_cancelling_the_roll_back_confirmation_changes_nothing(ip: Shell) -> None:
    ledger = define_trip(ip)
    view = finished_trip(ip, "tr-3")
    app = rn.current_app()
    before = app.get_instance("tr-3")
    click_step(view, "rollback", "book:2")
    assert "<code>unbook</code> undoes <code>book:3</code>" in view.confirm_text.value
    view.dismiss_button.click()
    assert view.confirm_box.layout.display == "none"
    view.confirm_button.click()  # a stale Confirm after Cancel does not roll back either
    assert "nothing to confirm" in view.message.value
    assert ledger == BOOKED
    assert app.archived_runs("tr-3") == [] and step_ids("tr-3") == ALL_BOOKED
    after = app.get_instance("tr-3")
    assert (after.status, after.updated_at) == ("completed", before.updated_at)
    # The last step: nothing after it to undo, and the confirmation says so.
    click_step(view, "rollback", "book:3")
    assert "no compensation will run" in view.confirm_text.value
    view.dismiss_button.click()
    assert app.archived_runs("tr-3") == [] and ledger == BOOKED


def test_fork_from_here_with_an_edited_input(ip: Shell) -> None:
    ledger = define_trip(ip)
    view = finished_trip(ip, "tr-4")
    app = rn.current_app()
    click_step(view, "fork", "book:1")
    assert view.fork_box.layout.display == "flex"
    form = view.fork_form
    assert form is not None
    city, nights = form.fields["city"], form.fields["nights"]
    assert isinstance(city, w.Text) and city.value == "rome"  # the instance's input
    assert isinstance(nights, w.IntText) and nights.value == 1
    assert city in view.fork_box.children
    city.value = ""
    view.fork_button.click()
    assert "cannot fork: fill in city (required)" in view.message.value
    city.value = "rome"
    nights.value = 3
    view.fork_id.value = "tr-4-long"
    view.fork_button.click()
    assert "forked from book:1 as tr-4-long" in view.message.value
    assert view.forked == "tr-4-long" and view.fork_box.layout.display == "none"
    assert view.show_fork_button.layout.display != "none"
    assert run(app.result("tr-4-long", timeout=10)) == ["ROME", "HOTEL X3", "CAR"]
    assert ledger == [*BOOKED, "book hotel x3", "book car"]  # book:1 came with the copy
    fork = app.get_instance("tr-4-long")
    assert fork.input == {"city": "rome", "nights": 3}
    assert (fork.forked_from, fork.forked_at) == ("tr-4", "book:1")
    assert step_ids("tr-4") == ALL_BOOKED and app.archived_runs("tr-4") == []  # untouched
    view.show_fork_button.click()
    shown = view.fork_view
    assert shown is not None and shown.instance_id == "tr-4-long"
    assert list(view.fork_detail.children) == [shown]
    assert shown.status == "completed"


def test_retry_shows_on_a_failed_instance_and_resumes_it(ip: Shell) -> None:
    ledger = define_trip(ip)
    ip.ns["broken"] = True
    ip.run(
        "%%activity --retry 1\ndef pay(ctx, amount: int) -> int:\n"
        "    ledger.append(f'pay {amount}')\n"
        "    if broken:\n        raise RuntimeError('card <declined>')\n    return amount"
    )
    ip.run(
        "%%workflow\nasync def paid_trip(ctx, city: str) -> int:\n"
        "    await book(ctx, city)\n    return await pay(ctx, 100)"
    )
    app = rn.current_app()
    ip.run("await rn.current_app().start(paid_trip, 'oslo', instance_id='tr-5')")
    run(until(lambda: app.get_instance("tr-5").status == "failed"))
    assert ledger == ["book oslo", "pay 100", "unbook oslo"]
    view = InstanceView(app, "tr-5")
    assert view.retry_button.layout.display != "none"
    rows = {row["step_id"]: row for row in view.timeline.steps}
    assert rows["compensate:book:1"]["kind"] == "compensation"
    assert not rows["compensate:book:1"]["actionable"]  # no travel buttons on it
    assert rows["book:1"]["actionable"] and rows["pay:1"]["actionable"]
    # A compensation is refused by the engine too: the refusal shows, escaped.
    click_step(view, "rewind", "compensate:book:1")
    assert "rewind failed" in view.message.value and "unwinding" in view.message.value
    ip.ns["broken"] = False
    view.retry_button.click()
    assert "retrying:" in view.message.value
    assert run(app.result("tr-5", timeout=10)) == 100
    # The compensated booking runs again, then the payment: once each.
    assert ledger == ["book oslo", "pay 100", "unbook oslo", "book oslo", "pay 100"]
    assert [run.status for run in app.archived_runs("tr-5")] == ["retried"]
    assert step_ids("tr-5") == [("book:1", "completed"), ("pay:1", "completed")]
    run(until(lambda: view.status == "completed"))
    assert view.retry_button.layout.display == "none"
    view.retry()  # asked anyway: the engine's refusal goes to the message line
    assert "retry failed" in view.message.value and "not failed" in view.message.value


def test_errors_of_travel_buttons_show_escaped_in_the_view(ip: Shell) -> None:
    define_trip(ip)
    view = finished_trip(ip, "tr-6")
    click_step(view, "rewind", "<b>nope</b>:1")
    message = view.message.value
    assert "rewind failed" in message and "has no step" in message
    assert "<b>" not in message and "&lt;b&gt;nope&lt;/b&gt;" in message
    click_step(view, "rollback", "nope:1")
    assert "roll back failed" in view.message.value
    assert view.confirm_box.layout.display == "none"
    assert rn.current_app().archived_runs("tr-6") == []


def test_a_diverged_run_shows_its_diff_and_rewinds_from_the_diverging_step(
    ip: Shell, monkeypatch: Any
) -> None:
    ledger = define_trip(ip)
    pipeline = (
        "%%workflow\nasync def pipeline(ctx, topic: str) -> list[str]:\n"
        "    a = await book(ctx, topic + '-1')\n"
        "    b = await book(ctx, topic + '-2{suffix}')\n"
        "    await ctx.wait_event('go')\n"
        "    return [a, b]"
    )
    ip.run(pipeline.format(suffix=""))
    app = rn.current_app()
    replays = _count_calls(app, "replay", monkeypatch)
    finished = finished_trip(ip, "tr-7")
    finished.refresh()
    assert replays[0] == 0  # a completed instance is never replayed to look for a divergence
    ip.run("await rn.current_app().start(pipeline, 'd', instance_id='dv-1')")
    run(until(lambda: app.get_instance("dv-1").status == "waiting_for_event"))
    waiting = InstanceView(app, "dv-1")
    assert waiting.divergence_box.layout.display == "none" and replays[0] == 0
    ip.run(pipeline.format(suffix="-<edited>"))  # the cell is edited and run again
    run(app.send_event("go", {}))

    def let_go() -> bool:  # the woken run diverged and released the instance
        info = app.get_instance("dv-1")
        return info.status == "running" and info.lock_owner is None and not app.running()

    run(until(let_go))
    view = waiting  # the end of the run is pushed to it: it re-reads and checks, once
    run(until(lambda: view.diverged_at is not None))
    assert replays[0] == 1
    assert view.diverged_at == "book:2"
    assert view.divergence_box.layout.display == "flex"
    shown = view.divergence.value
    assert "<pre>" in shown and "book:2" in shown
    assert "+    &quot;d-2-&lt;edited&gt;&quot;" in shown and "<edited>" not in shown
    view.refresh()
    view.refresh()
    assert replays[0] == 1  # once for the state it is in, not on every refresh
    assert ledger == [*BOOKED, "book d-1", "book d-2"]

    view.divergence_button.click()  # to book:1, the step recorded before book:2
    assert "rewound to book:1: kept 1 step(s), archived 2" in view.message.value  # + the wait
    run(until(lambda: app.get_instance("dv-1").status == "waiting_for_event"))
    run(app.send_event("go", {}))
    assert run(app.result("dv-1", timeout=10)) == ["D-1", "D-2-<EDITED>"]
    assert ledger == [*BOOKED, "book d-1", "book d-2", "book d-2-<edited>"]
    (archived,) = app.archived_runs("dv-1")
    assert (archived.status, archived.cut_after) == ("rewound", "book:1")
    run(until(lambda: view.status == "completed"))
    assert view.divergence_box.layout.display == "none" and view.diverged_at is None


def test_calls_from_another_thread_run_on_the_apps_loop() -> None:
    # JupyterLab delivers widget messages on a kernel subshell: a click's handler runs in
    # another thread, with another loop running there. The call must go to the app's loop.
    import threading

    app_loop = asyncio.new_event_loop()
    thread = threading.Thread(target=app_loop.run_forever)
    thread.start()
    try:
        where: list[Any] = []
        done = threading.Event()

        async def call() -> str:
            where.append(asyncio.get_running_loop())
            return "ok"

        async def click() -> Any:  # a handler running in the subshell's own loop
            return aio.run_on(app_loop, call(), lambda r, e: (where.append((r, e)), done.set()))

        ran, _ = asyncio.run(click())
        assert not ran and done.wait(10)
        assert where == [app_loop, ("ok", None)]
    finally:
        app_loop.call_soon_threadsafe(app_loop.stop)
        thread.join()
        app_loop.close()
