"""How the CLI shows things: rich tables for people, plain JSON for scripts."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import typer
from rich import box
from rich.table import Table
from rich.text import Text

import romancy_nb as rn
from romancy_nb.describe import (
    error_summary,
    short,
    step_duration,
    step_outcome,
    with_previous_end,
)
from romancy_nb.store.protocol import OutboxRecord

STATUS_STYLES = {
    "completed": "green",
    "failed": "red",
    "cancelled": "yellow",
    "compensating": "magenta",
    "running": "cyan",
    "pending": "cyan",
    "delivered": "green",
}


# JSON


def plain(value: Any) -> Any:
    """``value`` as JSON-ready data: dataclasses as objects, datetimes as ISO 8601 text."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def instance_json(info: rn.InstanceInfo) -> dict[str, Any]:
    return plain(info)


def step_json(step: rn.StepInfo) -> dict[str, Any]:
    data = plain(step)
    data["duration_ms"] = round(step.duration * 1000, 3)
    return data


def page_json(page: rn.InstancePage) -> dict[str, Any]:
    return {
        "instances": [instance_json(i) for i in page.instances],
        "next_page_token": page.next_page_token,
    }


def outbox_json(event: OutboxRecord) -> dict[str, Any]:
    """An outbox event: its CloudEvents attributes and data decoded, times in ISO 8601."""
    attributes = json.loads(event.attributes)
    return {
        "seq": event.seq,
        "id": event.event_id,
        "type": event.event_type,
        "source": attributes.get("source"),
        "subject": attributes.get("subject"),
        "instance_id": event.instance_id,
        "step_id": event.step_id,
        "data": json.loads(event.data),
        "status": event.status,
        "attempts": event.attempts,
        "last_error": event.last_error,
        "created_at": _utc(event.created_at),
        "next_attempt_at": _utc(event.next_attempt_at) if event.status == "pending" else None,
        "delivered_at": _utc(event.delivered_at) if event.delivered_at is not None else None,
    }


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def echo_json(data: Any) -> None:
    """Write ``data`` as indented JSON on stdout (no colour, no wrapping)."""
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


# text


def when(moment: datetime) -> str:
    """A UTC time to the second, as the tables show it."""
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def status(text: str) -> Text:
    return Text(text, style=STATUS_STYLES.get(text, ""))


# tables


def _table(title: str | None = None) -> Table:
    # A light box: a header rule and no column borders, so more fits in 80 columns.
    return Table(
        title=title,
        title_justify="left",
        header_style="bold",
        box=box.SIMPLE_HEAD,
        show_edge=False,
    )


def instances_table(instances: Iterable[rn.InstanceInfo]) -> Table:
    # Only the names may fold onto a second line; the fixed-format columns never shrink.
    table = _table()
    table.add_column("instance", overflow="fold", min_width=8)
    table.add_column("workflow", overflow="fold", min_width=8)
    table.add_column("status", no_wrap=True)
    table.add_column("created (UTC)", no_wrap=True)
    table.add_column("updated (UTC)", no_wrap=True)
    for info in instances:
        table.add_row(
            info.instance_id,
            info.workflow_name,
            status(info.status),
            when(info.created_at),
            when(info.updated_at),
        )
    return table


def outbox_table(events: Iterable[OutboxRecord]) -> Table:
    table = _table()
    table.add_column("event", overflow="fold", min_width=8)
    table.add_column("type", overflow="fold", min_width=8)
    table.add_column("instance", overflow="fold", min_width=8)
    table.add_column("status", no_wrap=True)
    table.add_column("tries", justify="right", no_wrap=True)
    table.add_column("created (UTC)", no_wrap=True)
    table.add_column("last error", overflow="fold")
    for event in events:
        table.add_row(
            event.event_id,
            event.event_type,
            event.instance_id,
            status(event.status),
            str(event.attempts),
            when(datetime.fromtimestamp(event.created_at, UTC)),
            event.last_error or "",
        )
    return table


def instance_table(info: rn.InstanceInfo) -> Table:
    """One instance as a two-column table of fields."""
    table = Table(show_header=False, box=None, padding=(0, 2, 0, 0))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("instance", info.instance_id)
    table.add_row("workflow", info.workflow_name)
    table.add_row("status", status(info.status))
    table.add_row("created", when(info.created_at) + " UTC")
    table.add_row("updated", when(info.updated_at) + " UTC")
    if info.lock_owner:
        table.add_row("held by", info.lock_owner)
    if info.cancel_reason:
        table.add_row("cancel reason", info.cancel_reason)
    if info.code_version:
        table.add_row("code version", info.code_version)
    if info.forked_from:
        table.add_row("forked from", f"{info.forked_from} at {info.forked_at or 'its start'}")
    table.add_row("input", short(info.input, 2000))
    if info.output is not None or info.status == "completed":
        table.add_row("output", short(info.output, 2000))
    if info.error:
        table.add_row("error", Text(error_summary(info.error, first_line=False), style="red"))
    return table


def history_table(
    steps: Iterable[rn.StepInfo], *, title: str | None = None, began: datetime | None = None
) -> Table:
    """The steps as a table; a wait's time runs from when it began (``began``: the run's
    start, for a first step that waits) to its answer, as the notebook shows it."""
    # Only the step and the output may fold; the fixed-format columns never shrink.
    table = _table(title)
    table.add_column("seq", justify="right", no_wrap=True)
    table.add_column("step", overflow="fold", min_width=8)
    table.add_column("kind", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("tries", justify="right", no_wrap=True)
    table.add_column("time", justify="right", no_wrap=True)
    table.add_column("output / error", overflow="fold", min_width=8)
    for step, previous_end in with_previous_end(steps, began):
        table.add_row(
            str(step.seq),
            step.step_id,
            step.kind,
            status(step.status),
            str(step.attempts),
            step_duration(step, previous_end),
            Text(step_outcome(step), style="red" if step.error else ""),
        )
    return table
