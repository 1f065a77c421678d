"""``rn.wait_until``: a notebook's wait for a status always ends, with a clear outcome."""

from __future__ import annotations

import romancy_nb as rn
from tests.notebook.conftest import Shell

GATED = """%%workflow
async def gated_wait(ctx) -> str:
    await ctx.wait_event("wait-test-go")
    return "through"
"""


def test_returns_once_the_instance_has_the_status(ip: Shell) -> None:
    ip.run(GATED)
    ip.run("iid = await rn.current_app().start(gated_wait, instance_id='wu-1')")
    info = ip.run("await rn.wait_until(iid, 'waiting_for_event')")
    assert (info.instance_id, info.status) == ("wu-1", "waiting_for_event")
    ip.run("await rn.current_app().send_event('wait-test-go')")
    assert ip.run("(await rn.wait_until(iid, 'completed')).output") == "through"


def test_an_instance_that_ended_otherwise_fails_at_once(ip: Shell) -> None:
    # A notebook run again finds its instance completed: it will never wait again.
    ip.run(GATED)
    ip.run("iid = await rn.current_app().start(gated_wait, instance_id='wu-2')")
    ip.run("await rn.wait_until(iid, 'waiting_for_event')")
    ip.run("await rn.current_app().send_event('wait-test-go')")
    ip.run("await rn.current_app().result(iid, timeout=30)")
    error = ip.fails("await rn.wait_until(iid, 'waiting_for_event', timeout=3600)")
    assert isinstance(error, rn.InvalidWorkflowState)
    assert str(error) == "instance 'wu-2' is completed: it will never be waiting_for_event"


def test_a_status_not_reached_in_time_is_a_timeout_naming_both(ip: Shell) -> None:
    ip.run(GATED)
    ip.run("iid = await rn.current_app().start(gated_wait, instance_id='wu-3')")
    ip.run("await rn.wait_until(iid, 'waiting_for_event')")
    error = ip.fails("await rn.wait_until(iid, 'completed', 'failed', timeout=0.2)")
    assert isinstance(error, TimeoutError)
    assert str(error) == (
        "instance 'wu-3' is still waiting_for_event after 0.2 s (waited for completed or failed)"
    )


def test_an_unknown_status_is_refused(ip: Shell) -> None:
    error = ip.fails("await rn.wait_until('x', 'done')")
    assert isinstance(error, ValueError)
    assert "unknown: done" in str(error)


def test_an_unknown_instance_is_not_found(ip: Shell) -> None:
    error = ip.fails("await rn.wait_until('no-such-instance', 'completed')")
    assert isinstance(error, rn.WorkflowNotFound)
