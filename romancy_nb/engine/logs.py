"""Structured logging: the attributes the engine's log records carry.

Records about an instance get ``instance_id``, ``workflow`` and ``step_id`` (None where
they do not apply) as record attributes, so a handler can filter on them or a formatter
can show them (``%(instance_id)s``) without parsing messages. The engine logs to the
``romancy_nb`` logger.
"""

from __future__ import annotations

import logging

log = logging.getLogger("romancy_nb")


def fields(
    instance_id: str, workflow: str | None = None, step_id: str | None = None
) -> dict[str, str | None]:
    """The ``extra=`` of a record about one instance (and one of its steps)."""
    return {"instance_id": instance_id, "workflow": workflow, "step_id": step_id}


__all__ = ["fields", "log"]
