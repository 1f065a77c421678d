"""Workers, leaders and instances on PostgreSQL: registering, electing, listing, claiming.

Each method is one statement (one round trip, its own transaction): the lease rules live
in their ``WHERE`` clauses, which PostgreSQL re-checks on the newest row version when two
workers update the same row at once, so at most one of them wins.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from romancy_nb.store.inputs import check_value, split_path
from romancy_nb.store.postgres.connections import Connections
from romancy_nb.store.postgres.sql import ACTIVE, INSERT_INSTANCE, INSTANCE_COLUMNS, NOW
from romancy_nb.store.protocol import InstanceQuery, InstanceRecord, WorkerRecord

_LEAD = (
    "INSERT INTO leaders (role, holder, expires_at) VALUES (%s, %s, %s) "
    "ON CONFLICT (role) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at "
    "WHERE leaders.holder = excluded.holder OR leaders.expires_at < %s"
)
"""Take or renew a role: the update applies only when the row is ours or expired; two
candidates at once both reach the row, and the second re-checks it after the first won."""

_CLAIM = (
    f"UPDATE workflow_instances SET lock_owner = %s WHERE instance_id IN ("
    f"SELECT instance_id FROM workflow_instances WHERE status IN {ACTIVE} "
    "AND workflow_name = ANY(%s) AND NOT (instance_id = ANY(%s)) "
    "AND (lock_owner IS NULL OR lock_owner = ANY(%s) OR NOT EXISTS "
    "(SELECT 1 FROM workers WHERE worker_id = lock_owner)) "
    "ORDER BY created_at LIMIT %s FOR UPDATE SKIP LOCKED) "
    f"RETURNING {INSTANCE_COLUMNS}"
)
"""Claim runnable instances: rows another claimer (or a writer under lease) has locked are
skipped, not waited for, so claimers at the same moment get disjoint instances."""


def _match_input(dotted: Any, value: Any) -> tuple[str, list[Any]]:
    """The condition (and its arguments) that the stored input has ``value`` at ``dotted``.

    jsonb containment finds candidates through the GIN index; the exact check of the
    path then keeps only those whose value there is that value (containment would also
    accept an array holding it). jsonb compares numbers as numbers (``1`` = ``1.0``, big
    integers exactly), strings only with strings.
    """
    keys = split_path(dotted)
    check_value(dotted, value)
    if isinstance(value, float) and not math.isfinite(value):
        return "FALSE", []  # a stored input holds no NaN nor infinity
    document: Any = value
    for key in reversed(keys):
        document = {key: document}
    return (
        "romancy_jsonb(input) @> %s::jsonb AND romancy_jsonb(input) #> %s = %s::jsonb",
        [json.dumps(document), keys, json.dumps(value)],
    )


class InstanceQueries:
    """The workers, leaders and instance methods of the PostgreSQL store."""

    def __init__(self, connections: Connections) -> None:
        self._c = connections

    # workers

    def register_worker(self, worker: WorkerRecord) -> None:
        self._c.write(
            "INSERT INTO workers (worker_id, host, pid, proc_start, started_at, heartbeat_at) "
            "VALUES (%s,%s,%s,%s,%s,%s) ON CONFLICT (worker_id) DO UPDATE SET "
            "host = excluded.host, pid = excluded.pid, proc_start = excluded.proc_start, "
            "started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at",
            worker,
        )

    def heartbeat(self, worker_id: str, now: float) -> None:
        self._c.write("UPDATE workers SET heartbeat_at = %s WHERE worker_id = %s", (now, worker_id))

    def list_workers(self) -> list[WorkerRecord]:
        rows = self._c.rows(
            "SELECT worker_id, host, pid, proc_start, started_at, heartbeat_at FROM workers"
        )
        return [WorkerRecord(*row) for row in rows]

    def remove_worker(self, worker_id: str) -> None:
        self._c.write("DELETE FROM workers WHERE worker_id = %s", (worker_id,))

    # leaders

    def lead(self, role: str, worker_id: str, now: float, ttl: float) -> bool:
        return self._c.write(_LEAD, (role, worker_id, now + ttl, now)) == 1

    def resign(self, role: str, worker_id: str) -> None:
        self._c.write("DELETE FROM leaders WHERE role = %s AND holder = %s", (role, worker_id))

    def leader(self, role: str) -> tuple[str, float] | None:
        rows = self._c.rows("SELECT holder, expires_at FROM leaders WHERE role = %s", (role,))
        return (rows[0][0], rows[0][1]) if rows else None

    # instances

    def create_instance(self, instance: InstanceRecord) -> bool:
        return self._c.write(INSERT_INSTANCE, instance) == 1

    def get_instance(self, instance_id: str) -> InstanceRecord | None:
        rows = self._c.rows(
            f"SELECT {INSTANCE_COLUMNS} FROM workflow_instances WHERE instance_id = %s",
            (instance_id,),
        )
        return InstanceRecord(*rows[0]) if rows else None

    def list_instances(self, query: InstanceQuery) -> list[InstanceRecord]:
        where: list[str] = []
        args: list[Any] = []
        if query.workflow is not None:
            where.append("workflow_name = %s")
            args.append(query.workflow)
        if query.status is not None:
            where.append("status = %s")
            args.append(query.status)
        if query.instance_id is not None:
            where.append("instance_id = %s")
            args.append(query.instance_id)
        for dotted, value in (query.input_equals or {}).items():
            condition, values = _match_input(dotted, value)
            where.append(condition)
            args.extend(values)
        if query.after is not None:
            where.append("(created_at, instance_id) < (%s, %s)")
            args.extend(query.after)
        sql = f"SELECT {INSTANCE_COLUMNS} FROM workflow_instances"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, instance_id DESC LIMIT %s"
        args.append(query.limit)
        return [InstanceRecord(*row) for row in self._c.rows(sql, args)]

    def claim_runnable(
        self,
        owner: str,
        dead_workers: Sequence[str],
        workflows: Sequence[str],
        exclude: Sequence[str],
        limit: int,
    ) -> list[InstanceRecord]:
        if limit <= 0 or not workflows:
            return []
        rows = self._c.rows(
            _CLAIM, (owner, list(workflows), list(exclude), list(dead_workers), limit)
        )
        claimed = [InstanceRecord(*row) for row in rows]
        return sorted(claimed, key=lambda r: (r.created_at, r.instance_id))  # RETURNING: any order

    def claim_instance(self, instance_id: str, owner: str, previous: str | None) -> bool:
        return (
            self._c.write(
                "UPDATE workflow_instances SET lock_owner = %s "
                "WHERE instance_id = %s AND lock_owner IS NOT DISTINCT FROM %s::text",
                (owner, instance_id, previous),
            )
            == 1
        )

    def set_status(
        self, instance_id: str, owner: str, status: str, error: str | None = None
    ) -> bool:
        return (
            self._c.write(
                "UPDATE workflow_instances SET status = %s, error = coalesce(%s, error), "
                f"updated_at = {NOW} WHERE instance_id = %s AND lock_owner = %s",
                (status, error, instance_id, owner),
            )
            == 1
        )

    def finish_instance(
        self,
        instance_id: str,
        owner: str,
        status: str,
        output: str | None,
        error: str | None,
    ) -> bool:
        return (
            self._c.write(
                "UPDATE workflow_instances SET status = %s, output = %s, "
                f"error = coalesce(%s, error), lock_owner = NULL, updated_at = {NOW} "
                "WHERE instance_id = %s AND lock_owner = %s",
                (status, output, error, instance_id, owner),
            )
            == 1
        )

    def release_instance(self, instance_id: str, owner: str) -> None:
        self._c.write(
            "UPDATE workflow_instances SET lock_owner = NULL "
            "WHERE instance_id = %s AND lock_owner = %s",
            (instance_id, owner),
        )

    def request_cancel(self, instance_id: str, reason: str) -> None:
        self._c.write(
            "UPDATE workflow_instances SET cancel_reason = %s "
            "WHERE instance_id = %s AND cancel_reason IS NULL",
            (reason, instance_id),
        )

    def cancel_requests(self, owner: str) -> list[tuple[str, str]]:
        return [
            (row[0], row[1])
            for row in self._c.rows(
                "SELECT instance_id, cancel_reason FROM workflow_instances "
                "WHERE lock_owner = %s AND cancel_reason IS NOT NULL AND status = 'running'",
                (owner,),
            )
        ]

    def save_trace_context(self, instance_id: str, carrier: str) -> None:
        self._c.write(
            "UPDATE workflow_instances SET trace_context = %s WHERE instance_id = %s",
            (carrier, instance_id),
        )

    def load_trace_context(self, instance_id: str) -> str | None:
        rows = self._c.rows(
            "SELECT trace_context FROM workflow_instances WHERE instance_id = %s", (instance_id,)
        )
        return rows[0][0] if rows else None


__all__ = ["InstanceQueries"]
