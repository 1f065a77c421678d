"""The store's tables as pandas DataFrames: ``rn.instances()``, ``rn.history()``, ...

Times become timezone-aware ``datetime64[ns, UTC]`` columns, JSON columns are decoded to
Python values, and a view whose table does not exist yet (an older database) is an empty
frame with the same columns. Tables are read through the store protocol (``read_table``);
this module writes no SQL.

``instance_summary()`` and ``history_summary()`` are what ``%romancy list`` and ``%romancy
history`` show: the columns people read, as text, worded as ``romancy-nb list`` and
``romancy-nb history`` word them (``--all`` gives the typed frames above instead).

``events()``, ``timers()`` and ``messages()`` read the tables of durable waiting
(``channel_messages`` and ``waits``): ``timers()`` is every pending wait with a deadline (a
``ctx.sleep``, or a ``wait_event``/``receive`` timeout); ``messages()`` is every stored
channel message; ``events()`` is the messages that are CloudEvents (their metadata has a
``type`` or ``specversion``), as delivered by ``app.send_event``. ``outbox()`` is the other
direction: the CloudEvents activities sent with ``ctx.send_event``, and how their delivery
goes.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic_core import from_json

from romancy_nb.describe import error_summary, step_duration, step_outcome, with_previous_end
from romancy_nb.notebook.state import current_app
from romancy_nb.store import TableRows

if TYPE_CHECKING:
    import pandas as pd

    from romancy_nb.engine import App

INSTANCE_COLUMNS = [
    "instance_id",
    "workflow_name",
    "status",
    "input",
    "output",
    "error",
    "lock_owner",
    "cancel_reason",
    "code_version",
    "created_at",
    "updated_at",
    "forked_from",
    "forked_at",
]
HISTORY_COLUMNS = [
    "instance_id",
    "seq",
    "step_id",
    "kind",
    "name",
    "status",
    "input",
    "output",
    "error",
    "attempts",
    "started_at",
    "finished_at",
    "duration",
]
TIMER_COLUMNS = ["instance_id", "step_id", "kind", "name", "channel", "fire_at", "created_at"]
MESSAGE_COLUMNS = [
    "id",
    "message_id",
    "channel",
    "target_instance_id",
    "data",
    "metadata",
    "sender_instance_id",
    "created_at",
]
EVENT_COLUMNS = ["id", "type", "source", "event_id", "data", "metadata", "created_at"]
OUTBOX_COLUMNS = [
    "seq",
    "event_id",
    "instance_id",
    "step_id",
    "type",
    "source",
    "subject",
    "data",
    "status",
    "attempts",
    "last_error",
    "created_at",
    "next_attempt_at",
    "delivered_at",
]

JSON_COLUMNS = frozenset({"input", "output", "error", "data", "metadata", "next_input"})
TIME_COLUMNS = frozenset(
    {
        "created_at",
        "updated_at",
        "started_at",
        "finished_at",
        "fire_at",
        "ended_at",
        "joined_at",
        "heartbeat_at",
        "at",
        "next_attempt_at",
        "delivered_at",
    }
)
INT_COLUMNS = frozenset({"seq", "attempts", "id", "cursor", "run_no", "steps", "pid", "attempt"})
SUMMARY_COLUMNS = ["instance", "workflow", "status", "created (UTC)", "updated (UTC)", "error"]
STEP_SUMMARY_COLUMNS = ["seq", "step", "kind", "status", "tries", "time", "output / error"]
_WHEN = "%Y-%m-%d %H:%M:%S"


def _decode(text: Any) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def decode_column(column: Sequence[str | None]) -> list[Any]:
    """Decode a column of JSON texts (None stays None).

    One parse of the whole column joined as a JSON array, in pydantic-core's Rust parser:
    5x faster than a ``json.loads`` per value on a 100,000-step history. A value that is not
    valid JSON makes the column fall back to one parse per value (kept as text).
    """
    try:
        values = from_json("[" + ",".join("null" if v is None else v for v in column) + "]")
        if len(values) == len(column):  # "1,2" as one value would shift the others
            return values
    except (TypeError, ValueError):
        pass
    return [_decode(v) for v in column]


def read(
    app: App, table: str, where: dict[str, Any] | None = None, *, decode_json: bool = True
) -> pd.DataFrame | None:
    """One store table as a typed DataFrame; None if the table does not exist."""

    app.ensure_schema()
    # Building a big frame allocates millions of small objects and no reference cycles:
    # pausing the cyclic GC meanwhile saves about a third of the time on 100,000 steps.
    paused = gc.isenabled()
    gc.disable()
    try:
        return _frame(app.store.read_table(table, where), decode_json)
    finally:
        if paused:
            gc.enable()


def _frame(found: TableRows | None, decode_json: bool) -> pd.DataFrame | None:
    import pandas as pd

    if found is None:
        return None
    columns, rows = found
    values = list(zip(*rows, strict=True)) if rows else [() for _ in columns]
    data: dict[str, Any] = {}
    for name, column in zip(columns, values, strict=True):
        if name in TIME_COLUMNS:
            data[name] = pd.to_datetime(pd.array(column, dtype="float64"), unit="s", utc=True)
        elif name in INT_COLUMNS:
            data[name] = pd.array(column, dtype="Int64" if None in column else "int64")
        elif decode_json and name in JSON_COLUMNS:
            data[name] = pd.Series(decode_column(column), dtype=object)
        else:
            data[name] = pd.Series(column, dtype=object if not column else None)
    return pd.DataFrame(data, columns=columns)


def _empty(columns: list[str]) -> pd.DataFrame:
    import pandas as pd

    data: dict[str, Any] = {}
    for name in columns:
        if name in TIME_COLUMNS:
            data[name] = pd.Series([], dtype="datetime64[ns, UTC]")
        elif name in INT_COLUMNS:
            data[name] = pd.Series([], dtype="int64")
        elif name == "duration":
            data[name] = pd.Series([], dtype="timedelta64[ns]")
        else:
            data[name] = pd.Series([], dtype=object)
    return pd.DataFrame(data, columns=columns)


def instances(
    workflow: str | None = None, status: str | None = None, *, app: App | None = None
) -> pd.DataFrame:
    """Every instance, newest first (``workflow=`` / ``status=`` filter)."""
    where = {
        key: value
        for key, value in (("workflow_name", workflow), ("status", status))
        if value is not None
    }
    frame = read(app or current_app(), "workflow_instances", where)
    if frame is None:
        return _empty(INSTANCE_COLUMNS)
    frame = frame.sort_values(["created_at", "instance_id"], ascending=False)
    return frame[INSTANCE_COLUMNS].reset_index(drop=True)


def instance_summary(
    workflow: str | None = None,
    status: str | None = None,
    limit: int = 50,
    *,
    app: App | None = None,
) -> pd.DataFrame:
    """Instances newest first, the columns people read: id, workflow, status, times to the
    second (UTC), and the error's first line."""
    import pandas as pd

    page = (app or current_app()).list_instances(workflow=workflow, status=status, limit=limit)
    rows = [
        (
            info.instance_id,
            info.workflow_name,
            info.status,
            info.created_at.strftime(_WHEN),
            info.updated_at.strftime(_WHEN),
            error_summary(info.error),
        )
        for info in page
    ]
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS, dtype=object)


def history_summary(iid: str, *, app: App | None = None) -> pd.DataFrame:
    """One instance's steps as people read them: durations in words (a wait from when it
    began to when it was answered), the output or error in one line, what a compensation
    undid."""
    import pandas as pd

    app = app or current_app()
    began = app.get_instance(iid).created_at
    rows = [
        (
            step.seq,
            step.step_id,
            step.kind,
            step.status,
            step.attempts,
            step_duration(step, previous_end),
            step_outcome(step),
        )
        for step, previous_end in with_previous_end(app.get_history(iid), began)
    ]
    return pd.DataFrame(rows, columns=STEP_SUMMARY_COLUMNS)


def history(iid: str | None = None, *, app: App | None = None) -> pd.DataFrame:
    """The recorded steps of one instance (``iid``) or of all, in recording order.

    ``duration`` is ``finished_at - started_at`` (retries included).
    """
    frame = read(app or current_app(), "workflow_history", {"instance_id": iid} if iid else None)
    if frame is None:
        return _empty(HISTORY_COLUMNS)
    frame["duration"] = frame["finished_at"] - frame["started_at"]
    frame = frame.sort_values(["instance_id", "seq"] if iid is None else ["seq"], kind="stable")
    return frame[HISTORY_COLUMNS].reset_index(drop=True)


def timers(*, app: App | None = None) -> pd.DataFrame:
    """Pending waits with a deadline: sleeps, and event/message waits with a timeout."""
    frame = read(app or current_app(), "waits")
    if frame is None:
        return _empty(TIMER_COLUMNS)
    frame = frame[frame["fire_at"].notna()].sort_values("fire_at")
    return frame[TIMER_COLUMNS].reset_index(drop=True)


def messages(channel: str | None = None, *, app: App | None = None) -> pd.DataFrame:
    """Stored channel messages (not yet consumed or still retained), oldest first."""
    where = {"channel": channel} if channel is not None else None
    frame = read(app or current_app(), "channel_messages", where)
    if frame is None:
        return _empty(MESSAGE_COLUMNS)
    return frame[MESSAGE_COLUMNS].sort_values("id").reset_index(drop=True)


def events(*, app: App | None = None) -> pd.DataFrame:
    """Stored CloudEvents: messages whose metadata carries a ``type`` or ``specversion``."""
    frame = messages(app=app)
    if frame.empty:
        return _empty(EVENT_COLUMNS)
    meta = frame["metadata"]
    is_event = meta.map(lambda m: isinstance(m, dict) and ("type" in m or "specversion" in m))
    frame = frame[is_event.astype(bool)].copy()
    if frame.empty:
        return _empty(EVENT_COLUMNS)
    frame["type"] = frame["channel"]
    frame["source"] = frame["metadata"].map(lambda m: m.get("source"))
    frame["event_id"] = frame["message_id"]
    return frame[EVENT_COLUMNS].reset_index(drop=True)


def outbox(
    status: str | None = None,
    instance_id: str | None = None,
    limit: int = 1000,
    *,
    app: App | None = None,
) -> pd.DataFrame:
    """The outbox (``ctx.send_event``), oldest first: each event's type, source, subject and
    data, whether it is ``pending``, ``delivered`` or ``failed``, its attempts and last
    error (the newest ``limit`` events; ``status=`` / ``instance_id=`` filter)."""
    records = (app or current_app()).list_outbox(
        status=status, instance_id=instance_id, limit=limit
    )
    rows = []
    for record in reversed(records):
        attributes = json.loads(record.attributes)
        rows.append(
            {
                **record._asdict(),
                "type": record.event_type,
                "source": attributes.get("source"),
                "subject": attributes.get("subject"),
            }
        )
    if not rows:
        return _empty(OUTBOX_COLUMNS)
    found = TableRows(OUTBOX_COLUMNS, [tuple(row[c] for c in OUTBOX_COLUMNS) for row in rows])
    frame = _frame(found, decode_json=True)
    assert frame is not None  # only a missing table gives None
    return frame
