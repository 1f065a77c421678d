"""Infrastructure faults are never workflow failures (issue 8).

A lock timeout or an unavailable store at any write the engine makes for its own
bookkeeping (start, step record, attempt record, suspend, wake, channel writes, finish,
the compensation records) pauses the run: a transient error is retried in place, any other
store error stops the run without an outcome and the instance is resumed by this worker's
sweep. Either way the instance completes, every activity body ran once, and no compensation
ran; a workflow that fails by its own code compensates exactly once.

The faults come from a proxy around the real store (``tests/faults.py``): one exact engine
write cannot be made to meet a lock from outside. The lock met for real is in
``test_lock_contention.py``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest

import romancy_nb as rn
from romancy_nb.errors import DatabaseLockedError, StoreError, StoreUnavailableError
from romancy_nb.testing import eventually
from tests.conftest import FAST_RETRY, TableReader
from tests.faults import (
    Arguments,
    FaultyStore,
    assert_completed_without_compensation,
    open_faulty,
)
from tests.sql import append_row

bodies: Counter[tuple[str, str]] = Counter()
"""How often each (instance, step) body of a non-transactional activity ran."""

undone: Counter[tuple[str, str]] = Counter()
"""How often each (instance, item) was compensated."""


def _ran(ctx: rn.ActivityContext) -> None:
    bodies[(ctx.instance_id, ctx.step_id)] += 1


@rn.activity
def inf_ledger(ctx: rn.ActivityContext, note: str) -> str:
    append_row(
        ctx.session,
        "inf_ledger",
        "instance_id TEXT, step_id TEXT, note TEXT",
        (ctx.instance_id, ctx.step_id, note),
    )
    return note


@rn.activity(transactional=False)
async def inf_count(ctx: rn.ActivityContext, note: str) -> str:
    _ran(ctx)
    return note


@rn.activity(transactional=False)
async def inf_flaky(ctx: rn.ActivityContext, note: str) -> str:
    _ran(ctx)
    if ctx.attempt == 1:
        raise RuntimeError("the user's code fails its first attempt")
    return note


@rn.workflow
async def inf_flow(ctx: rn.WorkflowContext, tag: str) -> list[str]:
    out = [await inf_ledger(ctx, "ledger"), await inf_count(ctx, "count")]
    out.append(await inf_flaky(ctx, "flaky"))
    ctx.now()
    await ctx.sleep(0.05)
    await ctx.subscribe(tag, "competing")
    await ctx.publish(tag, "ping")
    out.append((await ctx.receive(tag)).data)
    out.append((await ctx.wait_event(f"{tag}.go")).data)
    out.append(await inf_count(ctx, "after"))
    return out


FLOW_RESULT = ["ledger", "count", "flaky", "ping", "go", "after"]


def _flow_bodies(iid: str) -> dict[tuple[str, str], int]:
    return {
        (iid, "inf_count:1"): 1,
        (iid, "inf_flaky:1"): 2,  # its first attempt fails by user code, once
        (iid, "inf_count:2"): 1,
    }


@rn.activity(transactional=False)
async def inf_reserve(ctx: rn.ActivityContext, item: str) -> str:
    _ran(ctx)
    return item


@inf_reserve.compensation
async def inf_release(ctx: rn.ActivityContext, item: str) -> None:
    undone[(ctx.instance_id, item)] += 1


@rn.activity(transactional=False, retry=rn.RetryPolicy.none())
async def inf_decline(ctx: rn.ActivityContext, item: str) -> str:
    _ran(ctx)
    raise rn.TerminalError(f"card declined for {item}")


@rn.workflow
async def inf_saga(ctx: rn.WorkflowContext, tag: str) -> str:
    await inf_reserve(ctx, "a")
    await inf_reserve(ctx, "b")
    await inf_decline(ctx, "c")
    return "unreachable"


@dataclass(frozen=True)
class Write:
    """An engine write: the store method, and which of its calls to fault."""

    method: str
    when: Callable[[Arguments], bool] | None = None
    group_commit: bool = False


def _status(status: str) -> Callable[[Arguments], bool]:
    return lambda a: a["status"] == status


def _step_kind(kind: str) -> Callable[[Arguments], bool]:
    return lambda a: a["step"].kind == kind


def _wakes(prefix: str) -> Callable[[Arguments], bool]:
    return lambda a: a["step_id"].startswith(prefix)


FLOW_WRITES = {
    "start": Write("create_instance"),
    "step": Write("record_step"),
    "step-group-commit": Write("record_steps", group_commit=True),
    "session-commit": Write("session.commit"),
    "deterministic-step": Write("record_step", _step_kind("now")),
    "attempt": Write("record_attempt"),
    "suspend-sleep": Write("suspend", _status("waiting_for_timer")),
    "suspend-event": Write("suspend", _status("waiting_for_event")),
    "wake-timer": Write("wake", _wakes("sleep:")),
    "wake-event": Write("wake", _wakes("wait_event:")),
    "subscribe": Write("subscribe", lambda a: a["step"] is not None),
    "publish": Write("publish", lambda a: a["step"] is not None),
    "take-message": Write("take_message"),
    "finish": Write("finish_instance"),
}

SAGA_WRITES = {
    "failed-step": Write("record_step", lambda a: a["step"].status == "failed"),
    "compensating": Write("set_status", _status("compensating")),
    "compensation-step": Write("record_step", _step_kind("compensation")),
    "compensation-group-commit": Write(
        "record_steps",
        lambda a: any(step.kind == "compensation" for step in a["steps"]),
        group_commit=True,
    ),
    "finish-failed": Write("finish_instance", _status("failed")),
}

TRANSIENT = [
    pytest.param(1, DatabaseLockedError, id="1-locked"),
    pytest.param(3, StoreUnavailableError, id="3-unavailable"),
]

# A non-transient error stops the run before its outcome; the sweep resumes it. Writes
# after which a non-transactional body would rightly run again (at least once) are left
# out: "exactly once" is not promised for them.
RESUMED_AFTER = ["deterministic-step", "suspend-sleep", "wake-timer", "wake-event", "finish"]
RESUMED_AFTER += ["subscribe", "publish", "take-message"]


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[FaultyStore]:
    bodies.clear()
    undone.clear()
    store = open_faulty(store_url, busy_timeout=1.0)
    try:
        yield store
    finally:
        store.inner.close()


def _app(store: FaultyStore, write: Write) -> rn.App:
    app = rn.App(
        store, default_retry=FAST_RETRY, sweep_interval=0.05, group_commit=write.group_commit
    )
    assert app.store is store, "App(store) must use the Store object it is given"
    return app


async def _run_flow(app: rn.App, tag: str) -> str:
    """Start ``inf_flow``, send its event when it waits for it, and await the result."""
    iid = await app.start(inf_flow, tag)

    async def waiting_or_over() -> bool:
        status = app.get_instance(iid).status
        return status == "waiting_for_event" or status in ("completed", "failed", "cancelled")

    await eventually(waiting_or_over, message=f"{iid} waiting for its event")
    await app.send_event(f"{tag}.go", "go")
    assert await app.result(iid, timeout=30) == FLOW_RESULT
    return iid


def _check_flow(app: rn.App, table_rows: TableReader, iid: str) -> None:
    assert_completed_without_compensation(app, iid)
    assert {key: n for key, n in bodies.items() if key[0] == iid} == _flow_bodies(iid)
    assert table_rows("inf_ledger") == [(iid, "inf_ledger:1", "ledger")]
    unwinding = [c for c in app.store.calls("set_status") if c.arguments["status"] != "running"]
    assert unwinding == [], "the saga started unwinding for an infrastructure fault"


@pytest.mark.parametrize(("times", "error"), TRANSIENT)
@pytest.mark.parametrize("write", list(FLOW_WRITES))
async def test_a_transient_fault_at_an_engine_write_is_retried_in_place(
    store: FaultyStore,
    table_rows: TableReader,
    write: str,
    times: int,
    error: type[StoreError],
) -> None:
    spec = FLOW_WRITES[write]
    async with _app(store, spec) as app:
        fault = store.fail(spec.method, error, times=times, when=spec.when)
        iid = await _run_flow(app, f"inf-{write}")
        assert fault.hits == times, f"the armed {spec.method} fault was not met"
        _check_flow(app, table_rows, iid)


@pytest.mark.parametrize("write", RESUMED_AFTER)
async def test_a_store_error_at_an_engine_write_stops_the_run_and_it_is_resumed(
    store: FaultyStore, table_rows: TableReader, write: str
) -> None:
    spec = FLOW_WRITES[write]
    async with _app(store, spec) as app:
        fault = store.fail(spec.method, StoreError, when=spec.when)
        iid = await _run_flow(app, f"inf-{write}")
        assert fault.hits == 1, f"the armed {spec.method} fault was not met"
        _check_flow(app, table_rows, iid)


async def test_a_store_error_at_start_reaches_the_caller_and_stores_nothing(
    store: FaultyStore, table_rows: TableReader
) -> None:
    # No instance exists yet, so there is nothing to resume: the caller hears of it, and
    # retrying the start (the instance id is an idempotency key) works.
    async with _app(store, Write("create_instance")) as app:
        store.fail("create_instance", StoreError)
        with pytest.raises(StoreError):
            await app.start(inf_flow, "inf-start-error", instance_id="inf-start")
        with pytest.raises(rn.WorkflowNotFound):
            app.get_instance("inf-start")
        assert bodies == Counter()
        iid = await app.start(inf_flow, "inf-start-error", instance_id="inf-start")
        await eventually(lambda: app.get_instance(iid).status == "waiting_for_event")
        await app.send_event("inf-start-error.go", "go")
        assert await app.result(iid, timeout=30) == FLOW_RESULT
        _check_flow(app, table_rows, iid)


async def _run_saga(app: rn.App) -> str:
    iid = await app.start(inf_saga, "saga")
    with pytest.raises(rn.TerminalError, match="card declined for c"):
        await app.result(iid, timeout=30)
    return iid


def _check_saga(app: rn.App, iid: str) -> None:
    record = app.store.get_instance(iid)
    assert record is not None
    assert (record.status, record.lock_owner) == ("failed", None)
    assert undone == Counter({(iid, "b"): 1, (iid, "a"): 1}), "each compensation runs once"
    assert bodies == Counter(
        {(iid, "inf_reserve:1"): 1, (iid, "inf_reserve:2"): 1, (iid, "inf_decline:1"): 1}
    )
    steps = [(s.step_id, s.status) for s in app.get_history(iid)]
    assert steps == [
        ("inf_reserve:1", "completed"),
        ("inf_reserve:2", "completed"),
        ("inf_decline:1", "failed"),
        ("compensate:inf_reserve:2", "completed"),
        ("compensate:inf_reserve:1", "completed"),
    ]


@pytest.mark.parametrize(("times", "error"), TRANSIENT)
@pytest.mark.parametrize("write", list(SAGA_WRITES))
async def test_a_transient_fault_while_compensating_runs_each_compensation_once(
    store: FaultyStore, write: str, times: int, error: type[StoreError]
) -> None:
    spec = SAGA_WRITES[write]
    async with _app(store, spec) as app:
        fault = store.fail(spec.method, error, times=times, when=spec.when)
        iid = await _run_saga(app)
        assert fault.hits == times, f"the armed {spec.method} fault was not met"
        _check_saga(app, iid)


@pytest.mark.parametrize("write", ["compensating", "finish-failed"])
async def test_a_store_error_while_compensating_resumes_the_unwinding(
    store: FaultyStore, write: str
) -> None:
    spec = SAGA_WRITES[write]
    async with _app(store, spec) as app:
        fault = store.fail(spec.method, StoreError, when=spec.when)
        iid = await _run_saga(app)
        assert fault.hits == 1, f"the armed {spec.method} fault was not met"
        _check_saga(app, iid)


# The write committed, and then the store raised (a connection lost before the reply, an
# I/O error after the commit): retrying it must not record twice, lose a message or
# strand the instance. A wake-up that committed is in test_orphan_leases.py.


@pytest.mark.parametrize("write", list(FLOW_WRITES))
async def test_a_write_that_committed_before_its_error_is_not_lost_or_doubled(
    store: FaultyStore, table_rows: TableReader, write: str
) -> None:
    spec = FLOW_WRITES[write]
    async with _app(store, spec) as app:
        fault = store.fail(spec.method, DatabaseLockedError, after=True, when=spec.when)
        iid = await _run_flow(app, f"inf-{write}")
        assert fault.hits == 1, f"the armed {spec.method} fault was not met"
        _check_flow(app, table_rows, iid)


@pytest.mark.parametrize("write", list(SAGA_WRITES))
async def test_a_compensation_write_that_committed_before_its_error_runs_once(
    store: FaultyStore, write: str
) -> None:
    spec = SAGA_WRITES[write]
    async with _app(store, spec) as app:
        fault = store.fail(spec.method, DatabaseLockedError, after=True, when=spec.when)
        iid = await _run_saga(app)
        assert fault.hits == 1, f"the armed {spec.method} fault was not met"
        _check_saga(app, iid)
