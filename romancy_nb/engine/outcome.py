"""How one run of an instance ended, as the app that launched it sees it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Outcome:
    """How a run ended.

    Final: ``completed``, ``failed``, ``cancelled``. The instance lives on: ``suspended``
    (it waits), ``recurred`` (a fresh run took over), ``diverged`` (its code no longer
    matches its history; it waits for a redefinition), ``stopped`` (another worker owns it
    now, or the app is closing) and ``paused`` (the store failed under it: it is resumed
    with backoff).
    """

    status: str
    value: Any = None
    """The result (``completed``); the status the instance waits in (``suspended``)."""
    error: BaseException | None = None


__all__ = ["Outcome"]
