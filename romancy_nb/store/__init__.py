"""Storage behind one protocol; backends are imported only when a URL asks for them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from romancy_nb.store.protocol import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    AttemptRecord,
    InstanceQuery,
    InstanceRecord,
    Session,
    StepRecord,
    Store,
    WorkerRecord,
)


def open_store(url: str | Path, **options: Any) -> Store:
    """Open the store a URL names: a file path or ``:memory:`` → SQLite (APSW).

    ``postgresql://`` URLs are reserved for the PostgreSQL backend, which is not built yet.
    """
    text = str(url)
    if text.startswith(("postgresql://", "postgres://")):
        raise NotImplementedError(
            "the PostgreSQL store is not built yet; use a SQLite file path for now"
        )
    if text.startswith("sqlite:///"):
        text = text.removeprefix("sqlite:///")
    from romancy_nb.store.sqlite.store import SqliteStore

    return SqliteStore(text, **options)


__all__ = [
    "ACTIVE_STATUSES",
    "FINAL_STATUSES",
    "AttemptRecord",
    "InstanceQuery",
    "InstanceRecord",
    "Session",
    "StepRecord",
    "Store",
    "WorkerRecord",
    "open_store",
]
