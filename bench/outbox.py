"""Outbox benchmark: romancy_nb's transactional outbox beside Edda's, on the same workload
in the same run. Events are sent in an activity and posted by the framework's relayer,
over loopback, to a CloudEvents receiver in another process.

N instances each run one activity that sends one event (the step and its event commit in
one transaction); the app's relayer posts them to a Starlette receiver run by uvicorn in
its own process (started afresh for each peer), which answers 202 and notes when each
event arrived. A burst first (N instances as fast as they run): events/s written (all
instances completed, over their run time) and events/s delivered (the first start to the
last arrival). Then a paced phase (PACED instances, one at each tick of a 1/RATE s
schedule): the latency from the event's writing in the step to its arrival (p50/p90).

Peers, one at a time, each on a fresh SQLite file on disk:

- romancy_nb (this process's venv): ``ctx.send_event`` in an ``@rn.activity``,
  ``rn.App(db, broker_url=..., outbox_batch_size=BATCH)``; the relayer is woken by the
  app's own writes (``outbox_interval``, 1 s, is its fallback). Latency from the event's
  ``created_at`` (the ``send_event`` call, before the step's commit). Run with
  ``synchronous`` NORMAL (the default; WAL) and FULL.
- Edda 0.16.2 (bench/.venvs/edda, made by bench/run.py's ``ensure_venv``; the script is
  bench/workloads/edda_outbox.py): ``send_event_transactional`` in an ``@activity``,
  ``EddaApp(..., outbox_enabled=True, broker_url=...)``, its relayer's ``batch_size`` set to
  BATCH and its ``poll_interval`` to ``--edda-interval`` (EddaApp hard-codes 10 and 1 s on
  SQLite; Edda's relayer only polls there). Latency from when ``send_event_transactional``
  returned (Edda's ``created_at`` is whole seconds on SQLite).

    .venv/bin/python bench/outbox.py [--events 2000] [--batch 100] [--edda-interval 0.001]
    .venv/bin/python bench/outbox.py --postgres   # romancy_nb only, on PostgreSQL

``--postgres`` runs romancy_nb alone on a private PostgreSQL server (tests/postgres_server.py,
normal durability as bench/postgres.py sets it); ``--db URL`` on a database of yours.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

import romancy_nb as rn

BENCH = Path(__file__).resolve().parent

RECEIVER = """
import json, time
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

arrived = {}

async def receive(request):
    event = json.loads(await request.body())
    arrived.setdefault(event["id"], time.time())
    return Response(status_code=202)

async def stats(request):
    return JSONResponse(arrived)

app = Starlette(routes=[Route("/", receive, methods=["POST"]), Route("/stats", stats)])
"""


@rn.activity(transactional=False)
def announce(ctx: rn.ActivityContext, n: int) -> str:
    return ctx.send_event("bench.placed", {"n": n})


@rn.workflow
async def announcing(ctx: rn.WorkflowContext, n: int) -> str:
    return await announce(ctx, n)


PACED = 200
RATE = 50
"""The paced phase: how many events, and how many a second."""

FIGURES = (  # key, label, unit, higher is better
    ("written_per_s", "burst: events written", "events/s", True),
    ("delivered_per_s", "burst: events delivered (first start to last arrival)", "events/s", True),
    ("burst_p50_ms", "burst: written to received, p50", "ms", False),
    ("paced_per_s", f"paced ({PACED} at {RATE}/s): rate achieved", "events/s", True),
    ("paced_p50_ms", "paced: written to received, p50", "ms", False),
    ("paced_p90_ms", "paced: written to received, p90", "ms", False),
)


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def receiving() -> Iterator[str]:
    """A fresh receiver process (uvicorn + Starlette, this venv); its base URL."""
    with tempfile.TemporaryDirectory(prefix="romancy-outbox-receiver-") as folder:
        (Path(folder) / "receiver.py").write_text(RECEIVER)
        port = free_port()
        receiver = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "receiver:app", "--port", str(port),
             "--log-level", "warning"],
            cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            while True:
                try:
                    httpx.get(f"{base}/stats")
                    break
                except httpx.TransportError:
                    time.sleep(0.05)
            yield base
        finally:
            receiver.terminate()
            receiver.wait(30)


async def romancy(base: str, url: str, events: int, batch: int, sync: str) -> dict[str, Any]:
    """romancy_nb's figures on the database at ``url``, posting to the receiver at ``base``."""
    async with httpx.AsyncClient(timeout=60) as http:
        app = rn.App(url, broker_url=f"{base}/", outbox_batch_size=batch, synchronous=sync)
        async with app:
            # a burst: as fast as instances run, the relayer behind
            began = time.time()
            ids = [await app.start(announcing, n) for n in range(events)]
            burst = [await app.result(iid) for iid in ids]
            written = time.time() - began
            arrived = await _arrivals(http, base, events)
            delivered = max(arrived.values()) - began
            # paced: one instance at each tick of a 1/RATE s schedule, after the one before
            paced = []
            t0 = time.monotonic()
            for n in range(PACED):
                await asyncio.sleep(max(0.0, t0 + n / RATE - time.monotonic()))
                paced.append(await app.result(await app.start(announcing, events + n)))
            paced_s = time.monotonic() - t0
            arrived = await _arrivals(http, base, events + PACED)
            for _ in range(600):  # the last arrivals' settling commits may still be under way
                outbox = app.list_outbox(limit=events + PACED)
                if {e.status for e in outbox} == {"delivered"}:
                    break
                await asyncio.sleep(0.05)
            created = {e.event_id: e.created_at for e in outbox}
    assert set(arrived) == {*burst, *paced}, "the receiver got other events than were sent"
    statuses = collections.Counter(e.status for e in outbox)
    assert statuses == {"delivered": events + PACED}, statuses

    def quantiles(ids: list[str]) -> list[float]:
        return statistics.quantiles(sorted((arrived[e] - created[e]) * 1000 for e in ids), n=10)

    burst_q, paced_q = quantiles(burst), quantiles(paced)
    return {
        "written_per_s": events / written,
        "delivered_per_s": events / delivered,
        "burst_p50_ms": burst_q[4],
        "paced_per_s": PACED / paced_s,
        "paced_p50_ms": paced_q[4],
        "paced_p90_ms": paced_q[8],
    }


async def _arrivals(http: httpx.AsyncClient, base: str, count: int) -> dict[str, float]:
    """When each event reached the receiver, once ``count`` did."""
    while True:
        arrived: dict[str, float] = (await http.get(f"{base}/stats")).json()
        if len(arrived) >= count:
            return arrived
        await asyncio.sleep(0.05)


def edda(base: str, events: int, batch: int, interval: float) -> dict[str, Any]:
    """Edda's figures: bench/workloads/edda_outbox.py in Edda's venv, on a fresh SQLite file."""
    sys.path[:0] = [str(BENCH), str(BENCH / "workloads")]
    from common import RESULT_MARKER  # type: ignore[import-not-found]
    from run import PEERS, ensure_venv  # type: ignore[import-not-found]

    python = ensure_venv(next(p for p in PEERS if p.key == "edda"))
    with tempfile.TemporaryDirectory(prefix="bench-edda-outbox-") as tmp:
        done = subprocess.run(
            [str(python), str(BENCH / "workloads" / "edda_outbox.py"), "--db-dir", tmp,
             "--broker", base, "--events", str(events), "--batch", str(batch),
             "--interval", str(interval), "--paced", str(PACED), "--rate", str(RATE)],
            cwd=tmp, capture_output=True, text=True, timeout=1800,
        )  # fmt: skip
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith(RESULT_MARKER)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"edda_outbox.py exited {done.returncode}:\n{done.stderr[-3000:]}")
    payload: dict[str, Any] = json.loads(lines[-1][len(RESULT_MARKER) :])
    resumes = done.stderr.count("Error resuming")  # Edda's resume poller racing start()
    return {**payload["figures"], "info": {
        "journal_mode": payload["journal_mode"], "synchronous": payload["synchronous"],
        "poll_interval": payload["poll_interval"], "batch": payload["batch"],
        "failed_background_resumes": resumes,
    }}  # fmt: skip


def table(columns: dict[str, dict[str, Any]], versus: str | None) -> str:
    """A Markdown table: one column a peer, then each romancy_nb column's ratio to ``versus``
    (how many times better romancy_nb is: > 1 = better)."""
    names = list(columns)
    mine = [n for n in names if n != versus]
    head = ["figure", *names, *([f"{n} vs {versus}" for n in mine] if versus else [])]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, label, unit, higher in FIGURES:
        cells = [f"{label} ({unit})", *(_num(columns[n][key]) for n in names)]
        if versus:
            for n in mine:
                a, b = columns[n][key], columns[versus][key]
                cells.append(f"×{_num(a / b if higher else b / a)}")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _num(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}" if abs(x) >= 1 else f"{x:.2g}"


def main(options: argparse.Namespace) -> None:
    columns: dict[str, dict[str, Any]] = {}
    print(f"load average before: {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="romancy-outbox-bench-") as folder:
        for sync in options.synchronous:
            # --db / --postgres: that database, one mode; else a fresh file for each mode
            url = options.url or str(Path(folder) / f"bench-{sync}.db")
            name = "romancy_nb" if options.url else f"romancy_nb {sync}"
            print(f"running {name} ...", flush=True)
            with receiving() as base:
                figures = asyncio.run(romancy(base, url, options.events, options.batch, sync))
            columns[name] = figures
            print(json.dumps({name: figures}), flush=True)
    if options.url is None and not options.no_edda:
        print(f"running edda (poll_interval {options.edda_interval} s) ...", flush=True)
        with receiving() as base:
            columns["Edda"] = edda(base, options.events, options.batch, options.edda_interval)
        print(json.dumps({"Edda": columns["Edda"]}), flush=True)
    print(f"load average after: {os.getloadavg()}")
    backend = "postgresql" if (options.url or "").startswith("postgres") else "sqlite"
    print(f"\n{backend}: {options.events} events in the burst, batches of {options.batch}; "
          f"{PACED} paced at {RATE}/s")  # fmt: skip
    if "Edda" in columns:
        print(f"Edda: {columns['Edda'].pop('info')}")
    print(table(columns, "Edda" if "Edda" in columns else None))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--db", help="romancy_nb alone, on this database")
    parser.add_argument("--postgres", action="store_true", help="romancy_nb alone, PostgreSQL")
    parser.add_argument(
        "--synchronous", nargs="+", default=["NORMAL", "FULL"], help="romancy_nb's modes"
    )
    parser.add_argument("--edda-interval", type=float, default=0.001, help="Edda's poll_interval")
    parser.add_argument("--no-edda", action="store_true")
    options = parser.parse_args()
    options.url = options.db
    if options.db or options.postgres:  # romancy_nb alone, one mode (synchronous is SQLite's)
        options.synchronous = options.synchronous[:1]
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    if not options.postgres:
        main(options)
    else:
        sys.path[:0] = [str(BENCH), str(BENCH.parent)]
        from postgres import DURABLE, configure  # type: ignore[import-not-found]

        from tests.postgres_server import launch

        server = launch()
        try:
            configure(server, **DURABLE)
            options.url = server.url
            main(options)
        finally:
            server.stop("immediate")
