"""The transactional outbox on PostgreSQL: events written with their step, leased to a relayer.

As on SQLite (see ``store/sqlite/outbox.py`` for why a lease per event): a relayer leases
a batch, delivers it without holding anything, then settles it. What SQLite's single
writer gives for free is taken here with a transaction-scoped advisory lock around each
claim: two relayers claiming at once (leadership moving) would otherwise each see the
other's rows as free in their snapshots, and one could take an instance's later events
while the other holds its first — delivering them out of order.
"""

from __future__ import annotations

from collections.abc import Sequence

from romancy_nb.store.outbox import (
    COLUMNS,
    list_query,
    release_statement,
    settle_args,
    settle_statement,
)
from romancy_nb.store.postgres.connections import Connection, Connections
from romancy_nb.store.protocol import OutboxEvent, OutboxOutcome, OutboxRecord

_CLAIM_LOCK = 0x726F6F62  # 'roob': the advisory lock key of outbox claims

_INSERT = (
    "INSERT INTO outbox_events (event_id, instance_id, step_id, event_type, data, attributes, "
    "created_at, next_attempt_at) VALUES (%s,%s,%s,%s,%s,%s,%s,%s) "
    "ON CONFLICT (event_id) DO NOTHING"
)
_CLAIM = (
    "WITH heads AS (SELECT DISTINCT ON (instance_id) instance_id, next_attempt_at, "
    "claimed_until FROM outbox_events WHERE status = 'pending' ORDER BY instance_id, seq), "
    "picked AS (SELECT e.seq FROM outbox_events AS e JOIN heads AS h "
    "ON h.instance_id = e.instance_id WHERE e.status = 'pending' "
    "AND h.next_attempt_at <= %s AND (h.claimed_until IS NULL OR h.claimed_until < %s) "
    "ORDER BY e.seq LIMIT %s) "
    "UPDATE outbox_events AS o SET claimed_by = %s, claimed_until = %s FROM picked "
    f"WHERE o.seq = picked.seq RETURNING {', '.join('o.' + c for c in COLUMNS.split(', '))}"
)
_SETTLE = settle_statement("%({})s")
_RELEASE = release_statement("%s")


def insert(db: Connection, events: Sequence[OutboxEvent]) -> None:
    """Write ``events`` on ``db``, inside the caller's transaction (the step's)."""
    with db.cursor() as cursor:
        cursor.executemany(_INSERT, [(*event, event.created_at) for event in events])


class OutboxQueries:
    """The outbox methods of :class:`~romancy_nb.store.postgres.store.PostgresStore`."""

    def __init__(self, connections: Connections) -> None:
        self._c = connections

    def claim(self, worker_id: str, now: float, until: float, limit: int) -> list[OutboxRecord]:
        if limit < 1:
            return []
        with self._c.transaction() as db:
            db.execute("SELECT pg_advisory_xact_lock(%s)", (_CLAIM_LOCK,))
            rows = db.execute(_CLAIM, (now, now, limit, worker_id, until)).fetchall()
        return sorted((OutboxRecord(*row) for row in rows), key=lambda r: r.seq)

    def settle(self, worker_id: str, outcomes: Sequence[OutboxOutcome]) -> None:
        if not outcomes:
            return
        with self._c.transaction() as db, db.cursor() as cursor:
            cursor.executemany(
                _SETTLE,
                settle_args(worker_id, outcomes),
            )

    def release(self, worker_id: str) -> int:
        return self._c.write(_RELEASE, (worker_id,))

    def find(self, status: str | None, instance_id: str | None, limit: int) -> list[OutboxRecord]:
        sql, args = list_query(status, instance_id, limit, "%s")
        return [OutboxRecord(*row) for row in self._c.rows(sql, args)]


__all__ = ["OutboxQueries", "insert"]
