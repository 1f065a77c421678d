"""Edda's transactional outbox (edda-framework==0.16.2, SQLite on disk), the same workload
as romancy_nb's in bench/outbox.py, which runs this script in Edda's venv and gives it the
receiver (a Starlette app run by uvicorn in its own process, started afresh for Edda).

Edda's idiom: an ``@activity`` (always run in a transaction) calls
``send_event_transactional(ctx, event_type=..., event_source=..., event_data=...)``, which
adds a row to ``outbox_events`` in the activity's transaction; ``EddaApp(...,
outbox_enabled=True, broker_url=...)`` starts an ``OutboxRelayer`` that polls for pending
rows and posts each as a structured CloudEvent, one after the other, marking each
published in its own commit.

EddaApp builds its relayer with fixed options on SQLite: ``poll_interval=1.0`` and
``batch_size=10`` (no constructor argument sets them; the interval is only changed by
PostgreSQL LISTEN/NOTIFY). So after ``initialize()`` the bench stops that relayer, sets
its ``batch_size`` (romancy_nb's 100) and ``poll_interval`` (``--interval``) and starts it
again: the same object with Edda's own poll loop, which after a batch sleeps
``poll_interval`` (+ up to 30 % jitter) and after empty polls backs off to 16x that.

``Workflow.start()`` runs an instance inline to its end, so the burst starts the N
instances one after the other (Edda's fastest safe way: the main bench's concurrent
starts hit a UNIQUE constraint, and so do overlapping paced ones here); the paced phase
starts one at each tick of a fixed 1/RATE s schedule, after the one before has ended (an
instance slower than the period delays the next: ``paced_per_s`` is the rate achieved).

The latency's start is the time the activity's ``send_event_transactional`` returned (the
row is in the activity's pending transaction; the commit follows when the activity
returns): Edda's ``outbox_events.created_at`` is SQLite's ``CURRENT_TIMESTAMP``, whole
seconds, too coarse for milliseconds. romancy_nb's ``created_at`` is likewise the time of
its ``ctx.send_event`` call, before the step's commit.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import urllib.request
from importlib.metadata import version
from typing import Any

import uvloop
from common import emit, parse_args
from edda import EddaApp, WorkflowContext, activity, workflow
from edda.outbox import send_event_transactional
from sqlalchemy import text

STATUSES = text("SELECT status, count(*) FROM outbox_events GROUP BY status")
SENT: dict[str, float] = {}
"""event id -> when send_event_transactional returned (time.time(), as the receiver's)."""


@activity
async def announce(ctx: WorkflowContext, n: int) -> str:
    event_id = await send_event_transactional(
        ctx, event_type="bench.placed", event_source="bench", event_data={"n": n}
    )
    SENT[event_id] = time.time()
    return event_id


@workflow
async def announcing(ctx: WorkflowContext, n: int) -> str:
    return await announce(ctx, n)


async def run(app: EddaApp, n: int) -> str:
    """Start one instance (Edda runs it inline to its end); the event id it returns."""
    iid = await announcing.start(n=n)
    instance = await app.storage.get_instance(iid)
    assert instance is not None and instance["status"] == "completed", instance
    return str(instance["output_data"]["result"])


async def arrivals(base: str, count: int) -> dict[str, float]:
    """When each event reached the receiver, once ``count`` did."""

    def get() -> dict[str, float]:
        with urllib.request.urlopen(f"{base}/stats", timeout=60) as answer:
            return dict(json.loads(answer.read()))

    while True:
        arrived = await asyncio.to_thread(get)
        if len(arrived) >= count:
            return arrived
        await asyncio.sleep(0.05)


async def main(args: Any) -> tuple[dict[str, float], dict[str, Any]]:
    db = (args.db_dir / "edda.sqlite").resolve()
    app = EddaApp(
        service_name="bench", db_url=f"sqlite:///{db}", outbox_enabled=True,
        broker_url=f"{args.broker}/",
    )  # fmt: skip
    await app.initialize()
    relayer = app.outbox_relayer
    assert relayer is not None
    await relayer.stop()
    relayer.batch_size, relayer.poll_interval = args.batch, args.interval
    await relayer.start()
    try:
        events, paced_n, rate = args.events, args.paced, args.rate
        # a burst: instances one after the other, as fast as they run, the relayer behind
        began = time.time()
        burst = [await run(app, n) for n in range(events)]
        written = time.time() - began
        arrived = await arrivals(args.broker, events)
        delivered = max(arrived.values()) - began
        # paced: one instance every 1/rate s on a fixed schedule
        paced = []
        t0 = time.monotonic()
        for n in range(paced_n):
            await asyncio.sleep(max(0.0, t0 + n / rate - time.monotonic()))
            paced.append(await run(app, events + n))
        paced_s = time.monotonic() - t0
        arrived = await arrivals(args.broker, events + paced_n)
        async with app.storage.engine.connect() as c:
            for _ in range(600):  # the last arrival's "published" commit may be under way
                rows = await c.execute(STATUSES)
                statuses = {status: count for status, count in rows}
                await c.rollback()  # a fresh snapshot next time
                if set(statuses) == {"published"}:
                    break
                await asyncio.sleep(0.05)
            jm = (await c.execute(text("PRAGMA journal_mode"))).scalar()
            sync = (await c.execute(text("PRAGMA synchronous"))).scalar()
    finally:
        await app.shutdown()
    assert set(arrived) == {*burst, *paced}, "the receiver got other events than were sent"
    assert statuses == {"published": events + paced_n}, statuses

    def quantiles(ids: list[str]) -> list[float]:
        return statistics.quantiles(sorted((arrived[e] - SENT[e]) * 1000 for e in ids), n=10)

    burst_q, paced_q = quantiles(burst), quantiles(paced)
    figures = {
        "written_per_s": events / written,
        "delivered_per_s": events / delivered,
        "burst_p50_ms": burst_q[4],
        "paced_per_s": paced_n / paced_s,
        "paced_p50_ms": paced_q[4],
        "paced_p90_ms": paced_q[8],
    }
    info = {
        "journal_mode": jm,
        "synchronous": {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[sync],
        "batch": args.batch,
        "poll_interval": args.interval,
        "latency_from": "send_event_transactional returned (created_at is whole seconds)",
    }
    return figures, info


if __name__ == "__main__":
    options = parse_args(
        {
            "--broker": {"required": True, "help": "the receiver's base URL"},
            "--events": {"type": int, "default": 2000},
            "--batch": {"type": int, "default": 100},
            "--interval": {"type": float, "default": 0.01, "help": "the relayer's poll_interval"},
            "--paced": {"type": int, "default": 200},
            "--rate": {"type": float, "default": 50.0},
        }
    )
    uvloop.install()  # what EddaApp.initialize installs, for the loops made after it
    figures, info = asyncio.run(main(options))
    emit("edda", version("edda-framework"), figures, **info)
