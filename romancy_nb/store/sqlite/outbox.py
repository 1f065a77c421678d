"""The transactional outbox on SQLite: events written with their step, leased to a relayer.

Why a lease per event and not a lock: delivery is an HTTP call that may take seconds, far
too long to hold SQLite's writer lock. A relayer leases a batch (``claimed_by`` /
``claimed_until``) in one ``UPDATE ... RETURNING``, delivers it without any lock, then
settles it; a relayer that dies mid-batch leaves its events to the next one once the lease
runs out (so an event is delivered at least once, maybe twice — never lost).

Order per instance: a batch only takes instances whose *first* pending event is due and not
leased to anyone else, and of each such instance a prefix of its pending events (the
statement takes them by ``seq``). The relayer stops an instance at its first event that
must wait, so no event overtakes an earlier one of the same instance.
"""

from __future__ import annotations

from collections.abc import Sequence

import apsw

from romancy_nb.store.outbox import (
    COLUMNS,
    list_query,
    release_statement,
    settle_args,
    settle_statement,
)
from romancy_nb.store.protocol import OutboxEvent, OutboxOutcome, OutboxRecord
from romancy_nb.store.sqlite.connections import Connections

_INSERT = (
    "INSERT OR IGNORE INTO outbox_events (event_id, instance_id, step_id, event_type, data, "
    "attributes, created_at, next_attempt_at) VALUES (?,?,?,?,?,?,?,?)"
)
_CLAIM = (
    "UPDATE outbox_events SET claimed_by = ?, claimed_until = ? WHERE seq IN ("
    "SELECT e.seq FROM outbox_events AS e "
    "JOIN (SELECT instance_id, min(seq) AS head FROM outbox_events "
    "WHERE status = 'pending' GROUP BY instance_id) AS h ON h.instance_id = e.instance_id "
    "JOIN outbox_events AS head_row ON head_row.seq = h.head "
    "WHERE e.status = 'pending' AND head_row.next_attempt_at <= ? "
    "AND (head_row.claimed_until IS NULL OR head_row.claimed_until < ?) "
    f"ORDER BY e.seq LIMIT ?) RETURNING {COLUMNS}"
)
_SETTLE = settle_statement(":{}")
_RELEASE = release_statement("?")


def insert(db: apsw.Connection, events: Sequence[OutboxEvent]) -> None:
    """Write ``events`` on ``db``, inside the caller's transaction (the step's)."""
    db.executemany(_INSERT, [(*event, event.created_at) for event in events])


class OutboxQueries:
    """The outbox methods of :class:`~romancy_nb.store.sqlite.store.SqliteStore`."""

    def __init__(self, connections: Connections) -> None:
        self._c = connections

    def claim(self, worker_id: str, now: float, until: float, limit: int) -> list[OutboxRecord]:
        if limit < 1:
            return []
        rows = self._c.rows(_CLAIM, (worker_id, until, now, now, limit))
        return sorted((OutboxRecord(*row) for row in rows), key=lambda r: r.seq)

    def settle(self, worker_id: str, outcomes: Sequence[OutboxOutcome]) -> None:
        if not outcomes:
            return
        with self._c.immediate() as db:
            db.executemany(
                _SETTLE,
                settle_args(worker_id, outcomes),
            )

    def release(self, worker_id: str) -> int:
        return self._c.write(_RELEASE, (worker_id,))

    def find(self, status: str | None, instance_id: str | None, limit: int) -> list[OutboxRecord]:
        sql, args = list_query(status, instance_id, limit, "?")
        return [OutboxRecord(*row) for row in self._c.rows(sql, args)]


__all__ = ["OutboxQueries", "insert"]
