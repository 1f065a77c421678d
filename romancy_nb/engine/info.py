"""The read-only views of instances and steps that the management API returns."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from romancy_nb.store import InstanceRecord, StepRecord


def _time(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def decode_json(text: str | None) -> Any:
    """A stored JSON column's value (None for SQL NULL), as every view of history reads it."""
    return json.loads(text) if text is not None else None


@dataclass(frozen=True)
class InstanceInfo:
    """A workflow instance as stored: input, output and error decoded from JSON."""

    instance_id: str
    workflow_name: str
    status: str
    input: dict[str, Any]
    output: Any
    error: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    lock_owner: str | None
    cancel_reason: str | None
    code_version: str | None
    forked_from: str | None = None
    """The instance this one was forked from (``app.fork``), else None."""
    forked_at: str | None = None
    """The last step the fork copied from ``forked_from``."""

    @classmethod
    def from_record(cls, record: InstanceRecord) -> InstanceInfo:
        return cls(
            record.instance_id,
            record.workflow_name,
            record.status,
            json.loads(record.input),
            decode_json(record.output),
            decode_json(record.error),
            _time(record.created_at),
            _time(record.updated_at),
            record.lock_owner,
            record.cancel_reason,
            record.code_version,
            record.forked_from,
            record.forked_at,
        )


@dataclass(frozen=True)
class StepInfo:
    """One step of an instance's history."""

    seq: int
    step_id: str
    kind: str
    name: str
    status: str
    input: Any
    output: Any
    error: dict[str, Any] | None
    attempts: int
    started_at: datetime
    finished_at: datetime

    @property
    def duration(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()

    @classmethod
    def from_record(cls, record: StepRecord) -> StepInfo:
        return cls(
            record.seq,
            record.step_id,
            record.kind,
            record.name,
            record.status,
            decode_json(record.input),
            decode_json(record.output),
            decode_json(record.error),
            record.attempts,
            _time(record.started_at),
            _time(record.finished_at),
        )


@dataclass(frozen=True)
class InstancePage:
    """One page of ``list_instances``; pass ``next_page_token`` back for the next page."""

    instances: list[InstanceInfo]
    next_page_token: str | None

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.instances)

    def __len__(self) -> int:
        return len(self.instances)


def page_token(record: InstanceRecord) -> str:
    """An opaque cursor after ``record`` (keyset pagination: stable under inserts)."""
    raw = json.dumps([record.created_at, record.instance_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def parse_page_token(token: str) -> tuple[float, str]:
    try:
        padded = token + "=" * (-len(token) % 4)
        created_at, instance_id = json.loads(base64.urlsafe_b64decode(padded))
        return float(created_at), str(instance_id)
    except (ValueError, TypeError) as error:
        raise ValueError(f"invalid page_token {token!r}") from error
