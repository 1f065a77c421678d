"""Kill a kernel in the middle of a workflow; a new kernel that re-runs the defining cells
finishes the instance, and no exactly-once step ran twice (the ledger table proves it)."""

from __future__ import annotations

from pathlib import Path

from tests.notebooks.kernels import Kernel, eventually, query

SETUP = "%load_ext romancy_nb\nimport romancy_nb as rn"
LEDGER = """%%activity
def ledger(ctx, entry: str) -> str:
    # Written in the step's own transaction: recorded once, or not at all.
    ctx.session.execute("CREATE TABLE IF NOT EXISTS ledger (entry TEXT, step TEXT)")
    ctx.session.execute("INSERT INTO ledger VALUES (?, ?)", (entry, ctx.step_id))
    return entry
"""
GATE = """%%activity --no-transactional
async def gate(ctx, path: str) -> str:
    # Blocks until the test creates the file: the kernel is killed while this step runs.
    import asyncio, pathlib
    while not pathlib.Path(path).exists():
        await asyncio.sleep(0.02)
    return "open"
"""
FLOW = """%%workflow
async def three_entries(ctx, path: str) -> list[str]:
    done = [await ledger(ctx, "a"), await ledger(ctx, "b")]
    await gate(ctx, path)
    done.append(await ledger(ctx, "c"))
    return done
"""


def test_kernel_killed_mid_workflow_resumes_in_a_new_kernel(tmp_path: Path) -> None:
    db = tmp_path / "romancy.db"
    go = tmp_path / "go"
    first = Kernel(tmp_path)
    try:
        for cell in (SETUP, LEDGER, GATE, FLOW):
            first.run(cell)
        first.run(f"await rn.current_app().start(three_entries, {str(go)!r}, instance_id='k-1')")
        eventually(lambda: len(query(db, "SELECT entry FROM ledger")) == 2, what="steps a and b")
    finally:
        first.kill()
    go.touch()
    assert query(db, "SELECT status FROM workflow_instances") == [("running",)]

    second = Kernel(tmp_path)
    try:
        for cell in (SETUP, LEDGER, GATE, FLOW):  # re-run the defining cells
            second.run(cell)
        eventually(
            lambda: query(db, "SELECT status FROM workflow_instances") == [("completed",)],
            what="the instance to complete in the new kernel",
        )
        assert second.value("await rn.current_app().result('k-1')") == "['a', 'b', 'c']"
    finally:
        second.shutdown()
    ledger = query(db, "SELECT entry, step FROM ledger ORDER BY entry")
    assert ledger == [("a", "ledger:1"), ("b", "ledger:2"), ("c", "ledger:3")]
    steps = query(db, "SELECT step_id, status FROM workflow_history ORDER BY seq")
    assert steps == [
        ("ledger:1", "completed"),
        ("ledger:2", "completed"),
        ("gate:1", "completed"),
        ("ledger:3", "completed"),
    ]
