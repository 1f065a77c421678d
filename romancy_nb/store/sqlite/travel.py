"""SQL for time travel: cutting an instance's history (rewind, rollback, retry, a
divergence) and forking an instance from a copy of another's.

The engine decides which steps go and what the instance listens on afterwards
(:class:`~romancy_nb.store.protocol.HistoryCut`); this module applies it in one
``BEGIN IMMEDIATE`` transaction, so a crash leaves the old state or the new one. Cut steps
move to ``workflow_history_archive`` under a new run number: never deleted, still
inspectable with ``archived_runs`` / ``load_archived_history``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import apsw

from romancy_nb.errors import LockLostError
from romancy_nb.store.protocol import HistoryCut, InstanceRecord, StepRecord
from romancy_nb.store.sqlite.connections import Connections

_STEP_COLUMNS = (
    "instance_id, seq, step_id, kind, name, status, input, output, error, attempts, "
    "started_at, finished_at"
)
_INSERT_STEP = f"INSERT INTO workflow_history ({_STEP_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
_NEWEST_MESSAGE = (
    "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'channel_messages'), 0)"
)


class HistoryEdits:
    """The time-travel writes of :class:`~romancy_nb.store.sqlite.store.SqliteStore`."""

    def __init__(self, connections: Connections) -> None:
        self._c = connections

    def cut_history(self, instance_id: str, owner: str, cut: HistoryCut, now: float) -> int:
        with self._c.immediate() as db:
            leased: list[tuple[Any, ...]] = db.execute(
                "SELECT input FROM workflow_instances WHERE instance_id = ? AND lock_owner = ?",
                (instance_id, owner),
            ).fetchall()
            if not leased:
                raise LockLostError(
                    f"this worker no longer holds instance {instance_id!r}",
                    instance_id=instance_id,
                )
            run_no = self._archive(db, instance_id, leased[0][0], cut, now) if cut.archive else 0
            for table in ("step_attempts", "waits"):
                db.execute(f"DELETE FROM {table} WHERE instance_id = ?", (instance_id,))
            db.executemany(
                "DELETE FROM channel_subscriptions WHERE instance_id = ? AND channel = ?",
                [(instance_id, channel) for channel in cut.unsubscribe],
            )
            self._subscribe(db, instance_id, cut.subscriptions)
            db.executemany(
                "DELETE FROM group_members WHERE instance_id = ? AND group_name = ?",
                [(instance_id, group) for group in cut.leave],
            )
            self._join(db, instance_id, cut.groups, now)
            db.execute(
                "UPDATE workflow_instances SET status = ?, output = NULL, error = NULL, "
                "cancel_reason = NULL, updated_at = ? WHERE instance_id = ?",
                (cut.status, now, instance_id),
            )
            if cut.marker is not None:
                db.execute(_INSERT_STEP, cut.marker)
        return run_no

    @staticmethod
    def _archive(
        db: apsw.Connection, instance_id: str, input_json: str, cut: HistoryCut, now: float
    ) -> int:
        last: list[tuple[Any, ...]] = db.execute(
            "SELECT run_no FROM workflow_runs_archive WHERE instance_id = ? "
            "ORDER BY run_no DESC LIMIT 1",
            (instance_id,),
        ).fetchall()
        run_no = last[0][0] + 1 if last else 1
        seqs = [(instance_id, seq) for seq in cut.archive]
        db.executemany(
            f"INSERT INTO workflow_history_archive (run_no, {_STEP_COLUMNS}) "
            f"SELECT {run_no}, {_STEP_COLUMNS} FROM workflow_history "
            "WHERE instance_id = ? AND seq = ?",
            seqs,
        )
        started: list[tuple[Any, ...]] = db.execute(
            "SELECT count(*), min(started_at) FROM workflow_history_archive "
            "WHERE instance_id = ? AND run_no = ?",
            (instance_id, run_no),
        ).fetchall()
        count, first = started[0]
        db.executemany(
            "DELETE FROM workflow_history WHERE instance_id = ? AND seq = ?",
            seqs,
        )
        db.execute(
            "INSERT INTO workflow_runs_archive (instance_id, run_no, status, input, next_input, "
            "steps, started_at, ended_at, cut_after) VALUES (?,?,?,?,NULL,?,?,?,?)",
            (instance_id, run_no, cut.archived_as, input_json, count, first or now, now,
             cut.cut_after),
        )  # fmt: skip
        return run_no

    @staticmethod
    def _subscribe(
        db: apsw.Connection, instance_id: str, subscriptions: Sequence[tuple[str, str]]
    ) -> None:
        """Add the missing subscriptions (a subscription that stays keeps its cursor; a
        restored one, on a reopened instance, sees the messages published from now on)."""
        if not subscriptions:
            return
        rows: list[tuple[Any, ...]] = db.execute(
            "SELECT channel, mode FROM channel_subscriptions WHERE instance_id = ?",
            (instance_id,),
        ).fetchall()
        current = {channel: mode for channel, mode in rows}
        missing = [(c, m) for c, m in subscriptions if current.get(c) != m]
        if missing:
            cursor = db.execute(_NEWEST_MESSAGE).fetchall()[0][0]
            db.executemany(
                "INSERT INTO channel_subscriptions (instance_id, channel, mode, cursor, "
                "created_at) VALUES (?,?,?,?,unixepoch('subsec')) ON CONFLICT "
                "(instance_id, channel) DO UPDATE SET mode = excluded.mode, "
                "cursor = excluded.cursor",
                [(instance_id, channel, mode, cursor) for channel, mode in missing],
            )

    @staticmethod
    def _join(db: apsw.Connection, instance_id: str, groups: Sequence[str], now: float) -> None:
        db.executemany(
            "INSERT OR IGNORE INTO group_members (group_name, instance_id, joined_at) "
            "VALUES (?,?,?)",
            [(group, instance_id, now) for group in groups],
        )

    def fork_instance(
        self,
        instance: InstanceRecord,
        steps: Sequence[StepRecord],
        subscriptions: Sequence[tuple[str, str]],
        groups: Sequence[str],
        insert_instance: str,
    ) -> bool:
        with self._c.immediate() as db:
            db.execute(insert_instance, instance)
            if db.changes() != 1:
                return False
            db.executemany(_INSERT_STEP, steps)
            self._subscribe(db, instance.instance_id, subscriptions)
            self._join(db, instance.instance_id, groups, instance.created_at)
        return True


__all__ = ["HistoryEdits"]
