"""``on_divergence="rewind"`` under a store fault: the cut a divergence makes is atomic.

When the code diverges from history, the run archives the diverging step and every later
one in one ``cut_history`` call before its next write. That call fails here
(``tests/faults.py``), before it runs or after it committed: the run pauses (an
infrastructure fault is never a workflow failure), this worker's sweep resumes it, and the
instance ends with one archived ``diverged`` run — never two, never a step both kept and
archived — and every step the cut took executes again exactly once.
"""

from __future__ import annotations

from collections import Counter

import pytest

import romancy_nb as rn
from romancy_nb.errors import StoreError
from romancy_nb.testing import eventually
from tests.conftest import FAST_RETRY
from tests.faults import Arguments, open_faulty

ran: Counter[tuple[str, str]] = Counter()
"""How often ``ttd_step`` ran, by (instance, note)."""


@pytest.fixture(autouse=True)
def _fresh_counts() -> None:
    """Instance ids repeat across backends: each test counts from zero."""
    ran.clear()


first_note = {"value": "v1"}
"""What ``ttd_flow`` passes to its first step: the test "edits the cell" by changing it."""


@rn.activity(transactional=False)
async def ttd_step(ctx: rn.ActivityContext, note: str) -> str:
    ran[(ctx.instance_id, note)] += 1
    return note


@rn.workflow
async def ttd_flow(ctx: rn.WorkflowContext) -> list[str]:
    out = [await ttd_step(ctx, first_note["value"]), await ttd_step(ctx, "b")]
    out.append((await ctx.wait_event("ttd.go")).data)
    return out


def _diverged_cut(arguments: Arguments) -> bool:
    return arguments["cut"].archived_as == "diverged"


@pytest.mark.parametrize("after", [False, True], ids=["before-commit", "after-commit"])
async def test_a_divergence_cut_that_fails_pauses_the_run_and_cuts_once(
    store_url: str, after: bool
) -> None:
    iid = f"ttd-{'after' if after else 'before'}"
    store = open_faulty(store_url)
    first_note["value"] = "v1"
    async with rn.App(
        store, default_retry=FAST_RETRY, sweep_interval=0.05, on_divergence="rewind"
    ) as app:
        await app.start(ttd_flow, instance_id=iid)
        await eventually(lambda: app.get_instance(iid).status == "waiting_for_event")
        original = app.get_history(iid)

        first_note["value"] = "v2"  # the edited code diverges at ttd_step:1 when replayed
        fault = store.fail("cut_history", StoreError, after=after, when=_diverged_cut)
        await app.send_event("ttd.go", "first")

        # The run that met the fault paused; the sweep's rerun cut (or found the cut done)
        # and executed the cut steps with the new code, then waits for a new event.
        await eventually(
            lambda: fault.hits == 1 and app.get_instance(iid).status == "waiting_for_event"
        )
        cuts = [c for c in store.calls("cut_history") if _diverged_cut(c.arguments)]
        assert len(cuts) == (1 if after else 2), cuts  # before-commit: the rerun cuts again
        runs = app.archived_runs(iid)
        assert [(r.status, r.cut_after) for r in runs] == [("diverged", None)]
        archived = app.get_archived_history(iid, runs[0].run_no)
        assert [s.step_id for s in archived] == [s.step_id for s in original] + ["wait_event:1"]
        assert [s.output for s in archived[:2]] == ["v1", "b"]
        history = app.get_history(iid)
        assert [(s.step_id, s.output) for s in history] == [
            ("ttd_step:1", "v2"),
            ("ttd_step:2", "b"),
        ]
        assert app.get_instance(iid).error is None  # paused, never failed

        await app.send_event("ttd.go", "second")
        assert await app.result(iid) == ["v2", "b", "second"]
    assert ran[(iid, "v1")] == 1 and ran[(iid, "v2")] == 1
    assert ran[(iid, "b")] == 2  # before the edit, and once after the cut
