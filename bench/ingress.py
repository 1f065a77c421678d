"""Ingress benchmark: CloudEvents posted over loopback to ``romancy-nb serve`` (a real
process), each one waking one waiting workflow instance.

N instances wait for their own event type (``go.<i>``); a client posts the N events with
httpx from C concurrent tasks. Reported: events/s accepted (202s over the posting time),
events/s delivered (POST of the first to the last instance completed), and the latency
from a POST to its instance completing (p50/p90, from the store's completion time).

    .venv/bin/python bench/ingress.py [--events 500] [--concurrency 8] [--db URL]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

import romancy_nb as rn

FLOWS = """
import os
import romancy_nb as rn

@rn.workflow
async def waiter(ctx, n: int) -> int:
    await ctx.wait_event(f"go.{n}")
    return n

app = rn.App(os.environ["ROMANCY_DB"])
"""


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return int(s.getsockname()[1])


async def main(events: int, concurrency: int, db: str | None) -> None:
    folder = Path(tempfile.mkdtemp(prefix="romancy-ingress-bench-"))
    (folder / "bench_flows.py").write_text(FLOWS)
    url = db or str(folder / "bench.db")
    env = {**os.environ, "ROMANCY_DB": url}
    sys.path.insert(0, str(folder))
    os.environ["ROMANCY_DB"] = url
    import bench_flows  # type: ignore[import-not-found]

    async with rn.App(url, max_concurrent=0) as client:
        for i in range(events):
            await client.start(bench_flows.waiter, i, instance_id=f"w-{i}")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "romancy_nb.cli", "serve", "--app", "bench_flows:app",
         "--port", str(port)],
        cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(timeout=60) as http:
            while True:
                try:
                    if (await http.get(f"{base}/health/ready")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)
            store = rn.App(url, max_concurrent=0)
            while sum(
                1 for i in store.list_instances(status="waiting_for_event", limit=1000).instances
            ) < min(events, 1000):
                await asyncio.sleep(0.1)
            posted: dict[int, float] = {}
            queue = list(range(events))

            async def poster() -> None:
                while queue:
                    i = queue.pop()
                    event = {"specversion": "1.0", "type": f"go.{i}", "source": "/bench",
                             "id": f"e-{i}", "data": None}  # fmt: skip
                    posted[i] = time.time()
                    answer = await http.post(
                        base, json=event, headers={"Content-Type": "application/cloudevents+json"}
                    )
                    assert answer.status_code == 202, answer.text

            began = time.time()
            await asyncio.gather(*(poster() for _ in range(concurrency)))
            accepted = time.time() - began
            done: dict[int, float] = {}
            while len(done) < events:
                for i in range(events):
                    if i not in done:
                        info = store.get_instance(f"w-{i}")
                        if info.status == "completed":
                            done[i] = info.updated_at.timestamp()
                await asyncio.sleep(0.05)
            store.store.close()
    finally:
        server.terminate()
        server.wait(30)
    latencies = sorted((done[i] - posted[i]) * 1000 for i in range(events))
    delivered = max(done.values()) - began
    q = statistics.quantiles(latencies, n=10)
    print(
        f"backend {'postgresql' if url.startswith('postgres') else 'sqlite'}; "
        f"{events} events, {concurrency} concurrent posters"
    )
    print(f"accepted: {events / accepted:.0f} events/s ({accepted:.2f} s)")
    print(f"delivered (all instances completed): {events / delivered:.0f} events/s")
    print(f"POST -> completed: p50 {q[4]:.1f} ms, p90 {q[8]:.1f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--db")
    options = parser.parse_args()
    asyncio.run(main(options.events, options.concurrency, options.db))
