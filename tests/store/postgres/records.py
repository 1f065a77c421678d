"""Records the PostgreSQL store tests write through the protocol."""

from __future__ import annotations

import time
import uuid

from romancy_nb.store.protocol import InstanceRecord, StepRecord


def instance(owner: str | None, workflow: str = "flow", status: str = "running") -> InstanceRecord:
    """A new instance record (leased to ``owner``)."""
    now = time.time()
    return InstanceRecord(
        str(uuid.uuid4()), workflow, status, "{}", None, None, owner, None, None, now, now
    )


def step(instance_id: str, seq: int, kind: str = "activity") -> StepRecord:
    """A completed step ``seq`` of an instance."""
    now = time.time()
    return StepRecord(
        instance_id, seq, f"s:{seq}", kind, "s", "completed", None, "null", None, 1, now, now
    )
