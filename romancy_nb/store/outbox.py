"""What both backends' outbox share: its columns and the query of ``list_outbox``.

The SQL dialects differ only in their placeholder (``?`` / ``%s``), which each backend
passes in; claims and settlements differ more (locks, ``DISTINCT ON``) and stay in each
backend's ``outbox.py``.
"""

from __future__ import annotations

from typing import Any

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


__all__ = ["COLUMNS", "list_query"]
