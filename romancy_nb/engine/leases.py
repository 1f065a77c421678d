"""Who holds an instance, and whether that holder is still alive.

A worker registers itself (host, pid, process start time) and renews a heartbeat. Another
worker on the same host (and in the same pid namespace: not another container) knows at
once whether the holder died, by checking its process; elsewhere it waits for the
heartbeat lease to expire. A long activity keeps its lease because the heartbeat is per
worker, not per step, and it is renewed while the process lives.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from pathlib import Path

from romancy_nb.store import WorkerRecord


def _host() -> str:
    """This machine *and* process namespace: two containers may share a hostname (host
    networking) while their pids mean different processes, so the pid check applies only
    between workers that see the same pid namespace."""
    name = socket.gethostname()
    try:
        namespace = os.readlink("/proc/self/ns/pid")  # "pid:[4026531836]"
    except OSError:
        return name
    return f"{name}/{namespace.removeprefix('pid:').strip('[]')}"


HOST = _host()


def process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (Linux), telling a live pid from a reused one."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; fields after it are space-separated.
    return stat.rsplit(")", 1)[1].split()[19]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def new_worker() -> WorkerRecord:
    """This process as a worker, with a fresh id (a restarted process is a new worker)."""
    pid = os.getpid()
    now = time.time()
    return WorkerRecord(
        worker_id=f"{HOST}:{pid}:{uuid.uuid4().hex[:8]}",
        host=HOST,
        pid=pid,
        proc_start=process_start(pid),
        started_at=now,
        heartbeat_at=now,
    )


def is_alive(worker: WorkerRecord, now: float, lease_seconds: float) -> bool:
    """Same host: the process is there (and is the same process); else: lease not expired."""
    if worker.host == HOST:
        if not pid_alive(worker.pid):
            return False
        started = process_start(worker.pid)
        return started is None or worker.proc_start is None or started == worker.proc_start
    return worker.heartbeat_at >= now - lease_seconds
