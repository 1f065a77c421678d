"""SQL for time travel on PostgreSQL: cutting an instance's history (rewind, rollback,
retry, a divergence) and forking an instance from a copy of another's.

As on SQLite (``romancy_nb/store/sqlite/travel.py``) the engine decides what to cut
(:class:`~romancy_nb.store.protocol.HistoryCut`) and this applies it in one transaction,
holding the instance row's lock from the lease check to the commit: cut steps move to
``workflow_history_archive`` under a new run number, never deleted.
"""

from __future__ import annotations

from collections.abc import Sequence

from romancy_nb.store.postgres.connections import Connection, Connections
from romancy_nb.store.postgres.sql import (
    INSERT_INSTANCE,
    INSERT_STEP,
    NOW,
    STEP_COLUMNS,
    lock_lease,
)
from romancy_nb.store.protocol import HistoryCut, InstanceRecord, StepRecord


class HistoryEdits:
    """The time-travel writes of :class:`~romancy_nb.store.postgres.store.PostgresStore`."""

    def __init__(self, connections: Connections) -> None:
        self._c = connections

    def cut_history(self, instance_id: str, owner: str, cut: HistoryCut, now: float) -> int:
        with self._c.transaction() as db:
            input_json, _ = lock_lease(db, instance_id, owner)
            run_no = self._archive(db, instance_id, input_json, cut, now) if cut.archive else 0
            for table in ("step_attempts", "waits"):
                db.execute(f"DELETE FROM {table} WHERE instance_id = %s", (instance_id,))
            if cut.unsubscribe:
                db.execute(
                    "DELETE FROM channel_subscriptions WHERE instance_id = %s "
                    "AND channel = ANY(%s)",
                    (instance_id, list(cut.unsubscribe)),
                )
            self._subscribe(db, instance_id, cut.subscriptions)
            if cut.leave:
                db.execute(
                    "DELETE FROM group_members WHERE instance_id = %s AND group_name = ANY(%s)",
                    (instance_id, list(cut.leave)),
                )
            self._join(db, instance_id, cut.groups, now)
            db.execute(
                "UPDATE workflow_instances SET status = %s, output = NULL, error = NULL, "
                "cancel_reason = NULL, updated_at = %s WHERE instance_id = %s",
                (cut.status, now, instance_id),
            )
            if cut.marker is not None:
                db.execute(INSERT_STEP, cut.marker)
        return run_no

    @staticmethod
    def _archive(
        db: Connection, instance_id: str, input_json: str, cut: HistoryCut, now: float
    ) -> int:
        last = db.execute(
            "SELECT run_no FROM workflow_runs_archive WHERE instance_id = %s "
            "ORDER BY run_no DESC LIMIT 1",
            (instance_id,),
        ).fetchone()
        run_no: int = last[0] + 1 if last else 1
        seqs = list(cut.archive)
        moved = db.execute(
            f"WITH cut AS (DELETE FROM workflow_history WHERE instance_id = %s "
            f"AND seq = ANY(%s) RETURNING {STEP_COLUMNS}) "
            f"INSERT INTO workflow_history_archive (run_no, {STEP_COLUMNS}) "
            f"SELECT %s, {STEP_COLUMNS} FROM cut RETURNING started_at",
            (instance_id, seqs, run_no),
        ).fetchall()
        first = min((row[0] for row in moved), default=now)
        db.execute(
            "INSERT INTO workflow_runs_archive (instance_id, run_no, status, input, next_input, "
            "steps, started_at, ended_at, cut_after) VALUES (%s,%s,%s,%s,NULL,%s,%s,%s,%s)",
            (instance_id, run_no, cut.archived_as, input_json, len(moved), first, now,
             cut.cut_after),
        )  # fmt: skip
        return run_no

    @staticmethod
    def _subscribe(
        db: Connection, instance_id: str, subscriptions: Sequence[tuple[str, str]]
    ) -> None:
        """Add the missing subscriptions (a subscription that stays keeps its cursor; a
        restored one, on a reopened instance, sees the messages published from now on)."""
        if not subscriptions:
            return
        current: dict[str, str] = dict(
            db.execute(
                "SELECT channel, mode FROM channel_subscriptions WHERE instance_id = %s",
                (instance_id,),
            ).fetchall()
        )
        missing = [(c, m) for c, m in subscriptions if current.get(c) != m]
        if missing:
            db.execute(
                "INSERT INTO channel_subscriptions (instance_id, channel, mode, cursor, "
                f"created_at) SELECT %s, wanted.channel, wanted.mode, last_id, {NOW} "
                "FROM channel_message_ids, unnest(%s::text[], %s::text[]) "
                "AS wanted (channel, mode) ON CONFLICT (instance_id, channel) "
                "DO UPDATE SET mode = excluded.mode, cursor = excluded.cursor",
                (instance_id, [c for c, _ in missing], [m for _, m in missing]),
            )

    @staticmethod
    def _join(db: Connection, instance_id: str, groups: Sequence[str], now: float) -> None:
        if groups:
            db.execute(
                "INSERT INTO group_members (group_name, instance_id, joined_at) "
                "SELECT unnest(%s::text[]), %s, %s ON CONFLICT (group_name, instance_id) "
                "DO NOTHING",
                (list(groups), instance_id, now),
            )

    def fork_instance(
        self,
        instance: InstanceRecord,
        steps: Sequence[StepRecord],
        subscriptions: Sequence[tuple[str, str]],
        groups: Sequence[str],
    ) -> bool:
        with self._c.transaction() as db:
            if db.execute(INSERT_INSTANCE, instance).rowcount != 1:
                return False
            if steps:
                with db.cursor() as cursor:
                    cursor.executemany(INSERT_STEP, steps)
            self._subscribe(db, instance.instance_id, subscriptions)
            self._join(db, instance.instance_id, groups, instance.created_at)
        return True


__all__ = ["HistoryEdits"]
