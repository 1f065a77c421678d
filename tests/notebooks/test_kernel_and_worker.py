"""A notebook kernel and a ``romancy-nb worker`` on one PostgreSQL database: an instance
started in the notebook waits for an event; the kernel is SIGKILLed; the event is sent
from a third process; the worker, which runs the notebook's definitions, finishes it.

The kernel is the first app on the database, so it also led the sweeps: the worker takes
the lead over from the dead kernel and forgets its registration.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

import romancy_nb as rn
from romancy_nb.store import open_store
from romancy_nb.testing import eventually
from tests.crash.fleet import leader, ledger_database, status
from tests.notebooks.kernels import Kernel
from tests.processes import WorkerProcess
from tests.sql import postgres_rows

SETUP = "%load_ext romancy_nb\nimport romancy_nb as rn"
LEDGER = """%%activity
def double(ctx, n: int) -> int:
    # In the step's own transaction (ctx.session is the psycopg connection): exactly once.
    row = (ctx.instance_id, ctx.step_id, 2 * n)
    ctx.session.execute("INSERT INTO ledger VALUES (%s, %s, %s)", row)
    return 2 * n
"""
FLOW = """%%workflow
async def approval(ctx, n: int) -> int:
    event = await ctx.wait_event("go")
    return await double(ctx, n + event.data["extra"])
"""


async def test_the_worker_finishes_what_a_killed_kernel_started(tmp_path: Path) -> None:
    url = ledger_database(tmp_path)
    notebook = tmp_path / "flow.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell(c) for c in (SETUP, LEDGER, FLOW)]), notebook)
    store = open_store(url)
    kernel = Kernel(tmp_path)
    worker: WorkerProcess | None = None
    try:
        kernel.run(SETUP)
        kernel.run(f"%romancy config --db {url}")
        # config schedules the app's open on the kernel's loop; let it end before a start
        # (a start while it runs opened the app a second time: tests/engine/test_open_once.py)
        kernel.run("import asyncio\nwhile not rn.current_app().is_open: await asyncio.sleep(0.02)")
        kernel.run(LEDGER)
        kernel.run(FLOW)
        kernel.run("await rn.current_app().start(approval, 7, instance_id='k-1')")
        kernel_id = kernel.value("rn.current_app().worker_id").strip("'")
        await eventually(
            lambda: status(store, "k-1") == "waiting_for_event",
            timeout=60,
        )
        await eventually(lambda: leader(store) == kernel_id, timeout=60)

        worker = WorkerProcess(["--notebook", str(notebook), "--db", url], tmp_path, "worker")
        worker_id = worker.serving()
        kernel.kill()
        async with rn.App(url, max_concurrent=0) as sender:  # a third process's view
            await sender.send_event("go", {"extra": 100})
        await eventually(
            lambda: status(store, "k-1") == "completed",
            timeout=120,
            message="the worker to finish k-1",
        )
        record = store.get_instance("k-1")
        assert record is not None and record.output == "214"
        assert [(s.step_id, s.status) for s in store.load_history("k-1")] == [
            ("wait_event:1", "completed"),
            ("double:1", "completed"),
        ]
        assert postgres_rows(url, "ledger") == [("k-1", "double:1", 214)]
        await eventually(
            lambda: (
                leader(store) == worker_id
                and kernel_id not in {w.worker_id for w in store.list_workers()}
            ),
            timeout=120,
            message="the worker to take the lead and forget the dead kernel",
        )
        assert worker.terminate() == 0, worker.output()
    except BaseException:
        if worker is not None:
            print(worker.output())
        raise
    finally:
        store.close()
        if worker is not None:
            worker.kill()
        if kernel.manager.is_alive():
            kernel.shutdown()
