"""An agent loop survives a SIGKILL between tool calls: resumed by another worker process,
no finished tool call runs again and no answered model request is asked again."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

import romancy_nb as rn
from romancy_nb.testing import eventually
from tests.ai.agent_flows import LEDGER, Gate, ai_trip
from tests.ai.openai_server import OpenAIServer, ToolCall
from tests.conftest import TableReader
from tests.processes import WorkerProcess, reaped

APP = "tests.ai.agent_worker:app"


@pytest.mark.crash
async def test_a_killed_agent_loop_resumes_without_repeating_tool_calls(
    store_url: str, openai_server: OpenAIServer, table_rows: TableReader, tmp_path: Path
) -> None:
    for city in ("Lyon", "Paris", "Rome"):
        openai_server.reply_tool_calls(ToolCall("book", {"city": city}))
    openai_server.reply_text("Booked three hotels")
    gate = tmp_path / "gate"
    gate.mkdir()
    env = {"ROMANCY_DB": store_url}
    workers: list[WorkerProcess] = []
    with reaped(workers):
        first = WorkerProcess(["--app", APP], tmp_path, "worker-0", env=env)
        workers.append(first)
        first.serving()
        # A client (runs nothing itself): the workers run the instance.
        async with rn.App(store_url, max_concurrent=0) as client:
            iid = await client.start(
                ai_trip,
                openai_server.base_url,
                "hotels in Lyon, Paris and Rome",
                Gate(str(gate), "Paris"),
            )
            # Lyon is booked and Paris is being booked: the second tool call is running.
            await eventually(lambda: (gate / "holding").exists(), timeout=60)
            assert [row[2:] for row in table_rows(LEDGER)] == [("book", "Lyon")]
            assert first.kill() == -signal.SIGKILL
            (gate / "go").touch()
            second = WorkerProcess(["--app", APP], tmp_path, "worker-1", env=env)
            workers.append(second)
            assert await client.result(iid, timeout=120) == "Booked three hotels"
        books = [row[3] for row in table_rows(LEDGER)]
        assert books == ["Lyon", "Paris", "Rome"]  # each once: Lyon was not booked again
        # Four model requests in all: the two answered before the kill were not asked again.
        assert len(openai_server.requests) == 4
        second.terminate()
