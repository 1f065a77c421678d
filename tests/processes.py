"""``romancy-nb worker`` processes for the multi-process tests: started, watched, killed.

Each worker writes its stdout and stderr to files in the test's folder (named in every
failure message), runs from the repository (so ``--app tests.x.y:app`` imports), and is
always reaped after a kill: an unreaped child is a zombie, whose pid still answers, and
the engine would take the dead worker for a live one.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from romancy_nb.testing import wait_until

REPO = Path(__file__).resolve().parents[1]
SERVING = re.compile(r"^worker (\S+) serving ", re.MULTILINE)


class WorkerProcess:
    """One ``python -m romancy_nb.cli worker ARGS`` process, its output in ``logs``."""

    def __init__(
        self,
        args: Sequence[str],
        logs: Path,
        name: str,
        env: dict[str, str] | None = None,
        command: str = "worker",
    ) -> None:
        """``command``: the ``romancy-nb`` command to run (``serve`` for the HTTP tests)."""
        self.name = name
        self.out = logs / f"{name}.out"
        self.err = logs / f"{name}.err"
        environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "romancy_nb.cli", command, *args],
                stdout=out,
                stderr=err,
                cwd=REPO,
                env=environment,
            )
        self._worker_id: str | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        """Everything the worker printed so far, for failure messages."""
        return (
            f"--- {self.name} stdout ({self.out}):\n{self.out.read_text(errors='replace')}"
            f"--- {self.name} stderr ({self.err}):\n{self.err.read_text(errors='replace')}"
        )

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def is_serving(self) -> bool:
        """Whether the worker has said it serves (it opened its app), without waiting."""
        return self._worker_id is not None or SERVING.search(self.stdout()) is not None

    def serving(self, timeout: float = 120) -> str:
        """Wait until the worker says it serves (it has opened its app); its worker id."""
        if self._worker_id is None:
            wait_until(
                lambda: SERVING.search(self.stdout()) or not self.alive(),
                timeout=timeout,
                message=f"{self.name} to start serving",
            )
            found = SERVING.search(self.stdout())
            assert found is not None, f"{self.name} ended before serving:\n{self.output()}"
            self._worker_id = found.group(1)
        return self._worker_id

    def kill(self) -> int:
        """SIGKILL (no cleanup of any kind runs) and reap; the exit code."""
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
        return self.process.wait()

    def terminate(self, timeout: float = 120) -> int:
        """SIGTERM (a graceful stop) and wait for the exit; the exit code."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def wait(self, timeout: float = 120) -> int:
        return self.process.wait(timeout)


def crash_random() -> tuple[int, random.Random]:
    """The seed and random source of a crash test: seeded from ``$ROMANCY_CRASH_SEED`` or
    at random, the seed printed so that a failing run can be repeated."""
    seed = int(os.environ.get("ROMANCY_CRASH_SEED", random.randrange(2**32)))
    print(f"crash seed: {seed} (rerun with ROMANCY_CRASH_SEED={seed})")
    return seed, random.Random(seed)


@contextlib.contextmanager
def reaped(workers: Sequence[WorkerProcess]) -> Iterator[None]:
    """Print what the workers wrote if the block fails; kill and reap them after it."""
    try:
        yield
    except BaseException:
        for worker in workers:
            print(worker.output())
        raise
    finally:
        stop_all(workers)


def stop_all(workers: Sequence[WorkerProcess]) -> None:
    """Kill and reap the workers a test started that are still running (its ``finally``)."""
    for worker in workers:
        worker.kill()
