"""Real Jupyter kernels for tests: start one in a folder, run code, kill it."""

from __future__ import annotations

import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

REPO = Path(__file__).resolve().parents[2]
KERNELS = REPO / "jupyter-config" / "kernels"


class Kernel:
    """A kernel process started in ``cwd``; ``run`` executes a cell and returns its outputs."""

    def __init__(self, cwd: Path, kernel_name: str = "python3") -> None:
        specs = KernelSpecManager()
        specs.kernel_dirs = [str(KERNELS), *specs.kernel_dirs]
        self.manager = KernelManager(kernel_name=kernel_name, kernel_spec_manager=specs)
        self.manager.start_kernel(cwd=str(cwd))
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)

    def run(self, code: str, timeout: float = 60) -> list[dict[str, Any]]:
        outputs: list[dict[str, Any]] = []
        reply = self.client.execute_interactive(
            code, timeout=timeout, output_hook=lambda msg: outputs.append(msg)
        )
        if reply["content"]["status"] != "ok":
            content = reply["content"]
            trace = "\n".join(content.get("traceback", []))
            raise AssertionError(f"{content.get('ename')}: {content.get('evalue')}\n{trace}")
        return outputs

    def value(self, code: str) -> str:
        """The text/plain result of an expression."""
        for msg in self.run(code):
            if msg["msg_type"] == "execute_result":
                return str(msg["content"]["data"]["text/plain"])
        raise AssertionError(f"no result from {code!r}")

    def kill(self) -> None:
        """SIGKILL the kernel process: no cleanup of any kind runs."""
        self.client.stop_channels()
        self.manager.signal_kernel(signal.SIGKILL)
        eventually(lambda: not self.manager.is_alive(), what="the kernel to die")
        self.manager.cleanup_resources()

    def shutdown(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


def eventually(check: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    """Poll ``check`` until it returns a truthy value (never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.25)


def query(db: Path, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read the store from outside the kernel (plain sqlite3, read-only)."""
    if not db.exists():
        return []
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return connection.execute(sql, args).fetchall()
    except sqlite3.OperationalError:  # table not created yet
        return []
    finally:
        connection.close()
