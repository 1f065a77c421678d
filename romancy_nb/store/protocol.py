"""The one boundary between the engine and storage.

The engine talks to storage only through :class:`Store`; each backend owns its SQL and
migrations. Records crossing the boundary are frozen dataclasses holding JSON as text, so
the store never needs to know the engine's types and the engine never sees a cursor.

Records are ``NamedTuple``s: immutable and typed like frozen dataclasses, but built and bound
as SQL parameters without per-field overhead on the hot path of every durable step.

The methods are synchronous on purpose: an APSW commit in WAL mode costs tens of
microseconds, far less than handing the call to a thread and back, so the engine calls the
store directly from the event loop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, runtime_checkable

ACTIVE_STATUSES = ("running", "compensating")
"""Statuses of instances that hold a lease while they run and must be resumed after a crash."""

FINAL_STATUSES = ("completed", "failed", "cancelled")


class InstanceRecord(NamedTuple):
    """A workflow instance row. JSON fields are text; times are Unix seconds."""

    instance_id: str
    workflow_name: str
    status: str
    input: str
    output: str | None
    error: str | None
    lock_owner: str | None
    cancel_reason: str | None
    code_version: str | None
    created_at: float
    updated_at: float


class StepRecord(NamedTuple):
    """One recorded step of an instance's history (an activity result, a compensation...)."""

    instance_id: str
    seq: int
    step_id: str
    kind: str
    name: str
    status: str
    input: str | None
    output: str | None
    error: str | None
    attempts: int
    started_at: float
    finished_at: float


class AttemptRecord(NamedTuple):
    """A failed attempt of a step, kept so retries survive a crash."""

    instance_id: str
    step_id: str
    attempt: int
    error: str
    at: float


class WorkerRecord(NamedTuple):
    """A live (or once live) worker process and its lease heartbeat."""

    worker_id: str
    host: str
    pid: int
    proc_start: str | None
    started_at: float
    heartbeat_at: float


@dataclass(frozen=True, slots=True)
class InstanceQuery:
    """Filters for listing instances; ``after`` is a keyset cursor (created_at, instance_id)."""

    workflow: str | None = None
    status: str | None = None
    instance_id: str | None = None
    input_equals: Mapping[str, Any] | None = None
    after: tuple[float, str] | None = None
    limit: int = 100


class Session(Protocol):
    """A store transaction that an activity's own writes share with its history record."""

    @property
    def connection(self) -> Any:
        """The backend's connection object, in the open transaction (for user SQL)."""

    def record_step(self, step: StepRecord, owner: str) -> bool:
        """Write ``step`` in this transaction; False if ``owner`` lost the instance's lease."""

    def commit(self) -> None: ...

    def rollback(self) -> None: ...


@runtime_checkable
class Store(Protocol):
    """What the engine needs from storage. See ``romancy_nb.store.sqlite`` for the default."""

    url: str

    def migrate(self) -> list[str]:
        """Apply pending migrations; return the versions applied."""

    def close(self) -> None: ...

    # workers and leases
    def register_worker(self, worker: WorkerRecord) -> None: ...

    def heartbeat(self, worker_id: str, now: float) -> None: ...

    def list_workers(self) -> list[WorkerRecord]: ...

    def remove_worker(self, worker_id: str) -> None: ...

    # instances
    def create_instance(self, instance: InstanceRecord) -> bool:
        """Insert; False (and nothing written) if the id exists already."""

    def get_instance(self, instance_id: str) -> InstanceRecord | None: ...

    def list_instances(self, query: InstanceQuery) -> list[InstanceRecord]: ...

    def find_orphans(self, live_workers: Sequence[str]) -> list[InstanceRecord]:
        """Active instances whose lock owner is none of ``live_workers``."""

    def claim_instance(self, instance_id: str, owner: str, previous: str | None) -> bool:
        """Take the lease if it is still held by ``previous``; False if someone else won."""

    def set_status(
        self, instance_id: str, owner: str, status: str, error: str | None = None
    ) -> bool: ...

    def finish_instance(
        self,
        instance_id: str,
        owner: str,
        status: str,
        output: str | None,
        error: str | None,
    ) -> bool:
        """Set a final status and release the lease; False if ``owner`` lost it."""

    def release_instance(self, instance_id: str, owner: str) -> None: ...

    def request_cancel(self, instance_id: str, reason: str) -> None: ...

    def cancel_requests(self, owner: str) -> list[tuple[str, str]]:
        """(instance_id, reason) of instances held by ``owner`` that were asked to cancel."""

    # history
    def load_history(self, instance_id: str) -> list[StepRecord]:
        """All steps of an instance in one read, ordered by ``seq``."""

    def load_attempts(self, instance_id: str) -> list[AttemptRecord]: ...

    def record_step(self, step: StepRecord, owner: str) -> bool:
        """Write one step in its own transaction; False if ``owner`` lost the lease."""

    def record_attempt(self, attempt: AttemptRecord) -> None: ...

    def open_session(self) -> Session:
        """Begin a write transaction for a transactional activity.

        The engine calls this lazily, at the activity's first use of ``ctx.session``, so an
        activity that never touches the database never holds the writer lock.
        """
