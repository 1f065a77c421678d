"""What both backends' outbox share: its columns, and the statements that differ only in
their placeholders (``list_outbox``, settling, releasing).

Each backend passes its placeholder in: ``mark`` for a positional one (``?`` / ``%s``),
``named`` for a named one as a format string (``:{}`` / ``%({})s``). Claims differ more
(locks, ``DISTINCT ON``) and stay in each backend's ``outbox.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from romancy_nb.store.protocol import OutboxOutcome

COLUMNS = (
    "seq, event_id, instance_id, step_id, event_type, data, attributes, created_at, status, "
    "attempts, next_attempt_at, last_error, delivered_at"
)
"""The columns of an :class:`~romancy_nb.store.protocol.OutboxRecord`, in its order."""


def list_query(
    status: str | None, instance_id: str | None, limit: int, mark: str
) -> tuple[str, list[Any]]:
    """The ``list_outbox`` query and its arguments, ``mark`` the dialect's placeholder."""
    filters = {"status": status, "instance_id": instance_id}
    where = [f"{column} = {mark}" for column, value in filters.items() if value is not None]
    args: list[Any] = [value for value in filters.values() if value is not None]
    sql = f"SELECT {COLUMNS} FROM outbox_events"
    if where:
        sql += " WHERE " + " AND ".join(where)
    return f"{sql} ORDER BY seq DESC LIMIT {mark}", [*args, limit]


def settle_statement(named: str) -> str:
    """The update of one settled event, its arguments named as :func:`settle_args` names
    them. A delivery is a fact whoever reports it; a retry or a failure only from the lease
    holder (a relayer whose lease ran out must not reschedule what another now delivers)."""
    status, worker = named.format("status"), named.format("worker")
    return (
        f"UPDATE outbox_events SET status = {status}, attempts = {named.format('attempts')}, "
        f"next_attempt_at = {named.format('next_attempt_at')}, "
        f"last_error = coalesce({named.format('error')}, last_error), "
        f"delivered_at = CASE WHEN {status} = 'delivered' THEN {named.format('at')} "
        "ELSE delivered_at END, claimed_by = NULL, claimed_until = NULL "
        f"WHERE seq = {named.format('seq')} AND status = 'pending' "
        f"AND ({status} = 'delivered' OR claimed_by = {worker})"
    )


def settle_args(worker_id: str, outcomes: Sequence[OutboxOutcome]) -> list[dict[str, Any]]:
    return [{**outcome._asdict(), "worker": worker_id} for outcome in outcomes]


def release_statement(mark: str) -> str:
    """The update that ends one relayer's leases on its pending events."""
    return (
        "UPDATE outbox_events SET claimed_by = NULL, claimed_until = NULL "
        f"WHERE status = 'pending' AND claimed_by = {mark}"
    )


__all__ = ["COLUMNS", "list_query", "release_statement", "settle_args", "settle_statement"]
