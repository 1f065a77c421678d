"""Replay debugging in a notebook: ``%romancy replay ID``.

The engine's :meth:`App.replay` re-runs an instance against its history with the code the
notebook defines *now*, writing nothing. This module turns its report into a table a person
reads top to bottom: every step answered from history, then where the replay stopped — the
first step the current code would execute, or the divergence with its diff.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from romancy_nb.engine import ReplayReport


def replay_frame(report: ReplayReport) -> pd.DataFrame:
    """One row per step: ``cached`` from history, then ``would execute`` or ``diverged``."""
    rows: list[dict[str, Any]] = [
        {"step": step, "outcome": "cached", "detail": ""} for step in report.steps
    ]
    if report.outcome == "frontier":
        rows.append({"step": "…", "outcome": "would execute", "detail": report.stopped_at})
    elif report.outcome == "diverged":
        error: Any = report.error
        rows.append({"step": error.step_id, "outcome": "diverged", "detail": error.diff})
    elif report.outcome == "failed":
        rows.append({"step": "…", "outcome": "raised", "detail": repr(report.error)})
    else:
        rows.append({"step": "(end)", "outcome": "completed", "detail": repr(report.result)})
    return pd.DataFrame(rows, columns=["step", "outcome", "detail"])


def summary(report: ReplayReport) -> str:
    """A one-line verdict above the table."""
    head = (
        f"{report.instance_id}: {report.replayed} of {report.recorded} recorded steps replayed "
        f"in {report.seconds * 1000:.1f} ms"
    )
    verdict = {
        "completed": "the current code reaches the end from history alone",
        "frontier": "the current code agrees with history up to where history ends",
        "diverged": "the current code DIVERGES from history (see the diff)",
        "failed": "the workflow code raised",
    }[report.outcome]
    return f"{head}: {verdict}."
