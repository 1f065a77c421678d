"""Replay debugging and run comparison in a notebook: ``%romancy replay ID``,
``rn.compare(a, b)``.

The engine's :meth:`App.replay` re-runs an instance against its history with the code the
notebook defines *now*, writing nothing, and :meth:`App.compare` pairs two runs step by
step. This module shows their answers the way a person reads them: a table top to bottom,
one row per step, the diverging or differing steps highlighted and the diff below. The HTML
forms are registered with IPython when the extension loads, so a report or a comparison
left as a cell's last value renders as a table.
"""

from __future__ import annotations

import html
from typing import Any

import pandas as pd

from romancy_nb.describe import short
from romancy_nb.engine import Comparison, ReplayReport

_REPLAY_COLUMNS = [
    "step", "kind", "status", "recorded input", "recorded output", "code asked for", "diff",
]  # fmt: skip
_STATUS_COLOURS = {
    "matched": "#1a7f37",
    "diverged": "#cf222e",
    "would execute": "#0969da",
    "would wait": "#0969da",
    "not reached": "#6e7781",
}
_VERDICTS = {
    "completed": "the current code reaches the end from history alone",
    "frontier": "the current code agrees with history up to where history ends",
    "diverged": "the current code DIVERGES from history (see the diff)",
    "failed": "the workflow code raised",
}


def replay_frame(report: ReplayReport) -> pd.DataFrame:
    """One row per step: matched, diverged, would execute / would wait, not reached."""
    rows = [
        {
            "step": row.step_id,
            "kind": row.kind,
            "status": row.status,
            "recorded input": row.recorded_input,
            "recorded output": row.recorded_output,
            "code asked for": row.asked_input if row.status != "matched" else None,
            "diff": row.diff or "",
        }
        for row in report.rows
    ]
    return pd.DataFrame(rows, columns=_REPLAY_COLUMNS)


def summary(report: ReplayReport) -> str:
    """A one-line verdict above the table."""
    head = (
        f"{report.instance_id}: {report.replayed} of {report.recorded} recorded steps replayed "
        f"in {report.seconds * 1000:.1f} ms"
    )
    verdict = _VERDICTS[report.outcome]
    if report.outcome == "failed" and report.error is not None:
        verdict += f" ({type(report.error).__name__}: {report.error})"
    return f"{head}: {verdict}."


def _cell(value: Any) -> str:
    return html.escape(short(value)) if value is not None else ""


def report_html(report: ReplayReport) -> str:
    """The report as an HTML table, statuses coloured, each diff under its step."""
    rows = []
    for row in report.rows:
        colour = _STATUS_COLOURS.get(row.status, "inherit")
        asked = _cell(row.asked_input) if row.status != "matched" else ""
        rows.append(
            f"<tr><td><code>{html.escape(row.step_id)}</code></td>"
            f"<td>{html.escape(row.kind)}</td>"
            f'<td style="color:{colour};font-weight:600">{html.escape(row.status)}</td>'
            f"<td>{_cell(row.recorded_input)}</td><td>{_cell(row.recorded_output)}</td>"
            f"<td>{asked}</td></tr>"
        )
        if row.diff:
            rows.append(
                f'<tr><td colspan="6"><pre style="margin:0">{html.escape(row.diff)}</pre></td></tr>'
            )
    head = "".join(f"<th>{name}</th>" for name in _REPLAY_COLUMNS[:-1])
    return (
        f'<div class="romancy-replay"><p>{html.escape(summary(report))}</p>'
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def comparison_frame(comparison: Comparison) -> pd.DataFrame:
    """One row per step of either run: each side's status, input and output, what differs."""
    return pd.DataFrame(comparison.records())


def comparison_html(comparison: Comparison) -> str:
    """The two runs side by side; a differing step's row is highlighted."""
    a, b = html.escape(comparison.a), html.escape(comparison.b)
    rows = []
    for row in comparison.records():
        style = ' style="background:#fff8c5"' if row["differs"] else ""
        sides = "".join(
            f"<td>{html.escape(row[f'{side}_status'] or '—')}</td>"
            f"<td>{_cell(row[f'{side}_input'])}</td><td>{_cell(row[f'{side}_output'])}</td>"
            for side in ("a", "b")
        )
        rows.append(
            f"<tr{style}><td><code>{html.escape(row['step_id'])}</code></td>{sides}"
            f"<td>{html.escape(row['differs'])}</td></tr>"
        )
    first = comparison.first_difference
    verdict = f"first difference: {first}" if first else "the histories agree"
    head = (
        f"<tr><th></th><th colspan='3'>{a} ({html.escape(comparison.a_status)})</th>"
        f"<th colspan='3'>{b} ({html.escape(comparison.b_status)})</th><th></th></tr>"
        "<tr><th>step</th>"
        + "<th>status</th><th>input</th><th>output</th>" * 2
        + "<th>differs</th></tr>"
    )
    return (
        f'<div class="romancy-compare"><p>{html.escape(verdict)}</p>'
        f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def compare(a: str, b: str, *, app: Any = None) -> Comparison:
    """``rn.compare(a, b)``: two runs of the default app (or ``app``) side by side."""
    from romancy_nb.notebook.state import current_app

    return (app or current_app()).compare(a, b)


def install_formatters(ipython: Any) -> None:
    """Render replay reports and comparisons as HTML tables in this kernel."""
    formatter = ipython.display_formatter.formatters["text/html"]
    formatter.for_type(ReplayReport, report_html)
    formatter.for_type(Comparison, comparison_html)
