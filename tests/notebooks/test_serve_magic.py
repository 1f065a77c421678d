"""``%romancy serve`` in a real Jupyter kernel (nbclient): CloudEvents posted from this
process with httpx reach the notebook's waiting instance and start its event-handler
workflow, while the kernel keeps running cells; ``--stop`` closes the port."""

from __future__ import annotations

import re
import socket
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from jupyter_core.utils import run_sync
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbformat.v4 import new_code_cell, new_notebook

from tests.notebooks.kernels import eventually

SETUP = "%load_ext romancy_nb\nimport romancy_nb as rn"
APPROVAL = """%%workflow
async def approval(ctx, order: str) -> dict:
    event = await ctx.wait_event("order.approved")
    return {"order": order, **event.data}
"""
SIGNUP = """%%workflow --event-handler
async def signup(ctx, email: str) -> str:
    return email.upper()
"""
STRUCTURED = {"Content-Type": "application/cloudevents+json"}


def cloudevent(event_type: str, data: Any, event_id: str) -> dict[str, Any]:
    return {"specversion": "1.0", "type": event_type, "source": "/test", "id": event_id,
            "data": data}  # fmt: skip


class Cells:
    """One kernel, cells run one at a time through nbclient; returns each cell's text."""

    def __init__(self, client: NotebookClient) -> None:
        self.client = client

    def __call__(self, source: str) -> str:
        cell = new_code_cell(source)
        self.client.nb.cells.append(cell)
        self.client.execute_cell(cell, len(self.client.nb.cells) - 1)
        texts = []
        for output in cell.outputs:
            if output.output_type == "stream":
                texts.append(output.text)
            elif "data" in output:
                texts.append(output.data.get("text/plain", ""))
        return "\n".join(texts)


def test_events_posted_to_the_kernel_resume_and_start_workflows(tmp_path: Path) -> None:
    client = NotebookClient(
        new_notebook(),
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    with client.setup_kernel():
        run = Cells(client)
        run(SETUP)
        run(APPROVAL)
        run(SIGNUP)
        with socket.create_server(("127.0.0.1", 0)) as taken:
            port = taken.getsockname()[1]
            with pytest.raises(CellExecutionError, match=f"cannot listen on 127.0.0.1:{port}"):
                run(f"%romancy serve --port {port}")
        said = run("%romancy serve --port 0")
        found = re.search(r"serving CloudEvents on (http://127\.0\.0\.1:\d+)", said)
        assert found, said
        url = found.group(1)
        assert "event handlers: signup" in said
        run("await rn.current_app().start(approval, 'o-1', instance_id='a-1')")
        run("await rn.wait_until('a-1', 'waiting_for_event')")

        with httpx.Client(timeout=30) as http:
            assert http.get(f"{url}/health/ready").status_code == 200
            answer = http.post(
                url, json=cloudevent("order.approved", {"by": "ops"}, "ok-1"), headers=STRUCTURED
            )
            assert answer.status_code == 202, answer.text
            # The kernel runs cells while it serves: the waiting instance resumed on its loop.
            result = run("await rn.current_app().result('a-1', timeout=30)")
            assert result == "{'order': 'o-1', 'by': 'ops'}"

            signup_id = f"s-{uuid.uuid4().hex[:8]}"
            answer = http.post(
                url, json=cloudevent("signup", {"email": "a@x.org"}, signup_id), headers=STRUCTURED
            )
            assert answer.status_code == 202, answer.text
            assert answer.json()["instance_id"] == f"signup:{signup_id}"
            result = run(f"await rn.current_app().result('signup:{signup_id}', timeout=30)")
            assert result == "'A@X.ORG'"

            # Interrupting the kernel (SIGINT) interrupts cells, not the ingress.
            run_sync(client.km.interrupt_kernel)()  # the async manager's: run it
            run("import asyncio\nawait asyncio.sleep(0.3)")
            assert http.get(f"{url}/health/live").status_code == 200

            again = run("%romancy serve --port 0")
            assert f"already serving CloudEvents on {url}" in again

            run("%romancy serve --stop")

            def refused() -> bool:
                try:
                    http.get(f"{url}/health/live")
                except httpx.ConnectError:
                    return True
                return False

            eventually(refused, what="the kernel's ingress to close its port")
            assert run("%romancy serve --stop").strip() == "not serving"
            # The kernel's app is still open: the notebook goes on without the ingress.
            assert run("rn.current_app().is_open") == "True"
