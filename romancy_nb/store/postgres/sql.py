"""SQL shared by the PostgreSQL store's modules: columns, the step insert, lease checks and
the channel locks.

Why locks at all: SQLite runs one writer at a time, so each of its multi-statement methods
saw a database nobody else changed meanwhile. PostgreSQL runs transactions side by side
(READ COMMITTED), so each method here first locks what its decision depends on:

- the instance row (``FOR UPDATE``): every write under a lease checks the lease and keeps
  the row locked to its commit, so no other worker can take the instance in between;
- a channel (a transaction-scoped advisory lock on its name): a publisher holds it
  exclusively, a suspending subscriber shares it, so either the subscriber sees the
  message or the publisher's delivery sees the subscriber's wait — never neither;
- message ids come from a one-row counter (``channel_message_ids``, locked by each insert
  until its commit), so ids are committed in increasing order: the engine's "newest
  message id seen" never skips a message committed late.

Lock order, always: instance rows, then channels (sorted), then the message counter.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from romancy_nb.errors import LockLostError
from romancy_nb.store.postgres.connections import Connection
from romancy_nb.store.protocol import ACTIVE_STATUSES, FINAL_STATUSES, WAITING_STATUSES

NOW = "extract(epoch from clock_timestamp())::float8"
"""Unix seconds now, as SQLite's ``unixepoch('subsec')``."""

CHANNEL = "romancy_nb"
"""The NOTIFY channel every change that may wake a worker is announced on."""


def _listed(statuses: Iterable[str]) -> str:
    return "(" + ",".join(f"'{status}'" for status in statuses) + ")"


ACTIVE = _listed(ACTIVE_STATUSES)
WAITING = _listed(WAITING_STATUSES)
FINAL = _listed(FINAL_STATUSES)

INSTANCE_COLUMNS = (
    "instance_id, workflow_name, status, input, output, error, lock_owner, cancel_reason, "
    "code_version, created_at, updated_at, forked_from, forked_at"
)
INSERT_INSTANCE = (
    f"INSERT INTO workflow_instances ({INSTANCE_COLUMNS}) "
    "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (instance_id) DO NOTHING"
)
STEP_COLUMNS = (
    "instance_id, seq, step_id, kind, name, status, input, output, error, attempts, "
    "started_at, finished_at"
)
SELECT_INSTANCE = f"SELECT {INSTANCE_COLUMNS} FROM workflow_instances"
SELECT_HISTORY = f"SELECT {STEP_COLUMNS} FROM workflow_history WHERE instance_id = %s ORDER BY seq"
"""An instance's history in recording order (one range of the primary key)."""
SELECT_ATTEMPTS = (
    "SELECT instance_id, step_id, attempt, error, at FROM step_attempts "
    "WHERE instance_id = %s ORDER BY step_id, attempt"
)
INSERT_STEP = (
    f"INSERT INTO workflow_history ({STEP_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
)
RECORD_STEP = (
    f"INSERT INTO workflow_history ({STEP_COLUMNS}) "
    "SELECT %s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s WHERE EXISTS "
    "(SELECT 1 FROM workflow_instances WHERE instance_id = %s AND lock_owner = %s FOR SHARE)"
)
"""A durable step: one statement checks the lease and writes the step, so a worker that
lost its lease can never add history. ``FOR SHARE`` keeps the instance row from being
claimed by another worker until the step commits (a claim waits, then sees the step);
a claim that committed first makes the check fail."""

MESSAGE_COLUMNS = (
    "id, message_id, channel, target_instance_id, data, metadata, sender_instance_id, created_at"
)
NEWEST_MESSAGE = "SELECT last_id FROM channel_message_ids"
"""The newest message id ever committed (ids never go back, even when messages are
deleted): the engine's change marker, and a new broadcast subscriber's cursor."""

CHANNEL_LOCKS = 0x726E
"""'rn': the advisory lock namespace of channels (two-int keys: never a one-key lock)."""


def lock_lease(db: Connection, instance_id: str, owner: str) -> tuple[Any, ...]:
    """Lock the instance row if ``owner`` holds its lease; its ``input`` and
    ``created_at``. Raises :class:`LockLostError` (nothing locked) otherwise."""
    row = db.execute(
        "SELECT input, created_at FROM workflow_instances "
        "WHERE instance_id = %s AND lock_owner = %s FOR UPDATE",
        (instance_id, owner),
    ).fetchone()
    if row is None:
        raise lease_lost(instance_id)
    return row


def lease_lost(instance_id: str) -> LockLostError:
    """What a write under a lease raises when its worker no longer holds the instance."""
    return LockLostError(
        f"this worker no longer holds instance {instance_id!r}", instance_id=instance_id
    )


def lock_channels(db: Connection, channels: Iterable[str], *, shared: bool) -> None:
    """Take the channels' advisory locks until commit (see the module docstring)."""
    function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    for channel in sorted(set(channels)):
        db.execute(f"SELECT {function}({CHANNEL_LOCKS}, hashtext(%s))", (channel,))


__all__ = [
    "ACTIVE",
    "CHANNEL",
    "CHANNEL_LOCKS",
    "FINAL",
    "INSERT_INSTANCE",
    "INSERT_STEP",
    "INSTANCE_COLUMNS",
    "MESSAGE_COLUMNS",
    "NEWEST_MESSAGE",
    "NOW",
    "RECORD_STEP",
    "SELECT_ATTEMPTS",
    "SELECT_HISTORY",
    "SELECT_INSTANCE",
    "STEP_COLUMNS",
    "WAITING",
    "lease_lost",
    "lock_channels",
    "lock_lease",
]
