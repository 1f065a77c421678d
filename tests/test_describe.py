"""Words for stored steps, shared by the CLI and the notebook."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

import romancy_nb as rn
from romancy_nb.describe import human_duration, step_duration, step_outcome

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def step(kind: str, started: float, finished: float, **fields: object) -> rn.StepInfo:
    values: dict[str, object] = {
        "seq": 1,
        "step_id": f"{kind}:1",
        "kind": kind,
        "name": kind,
        "status": "completed",
        "input": None,
        "output": None,
        "error": None,
        "attempts": 1,
        "started_at": T0 + timedelta(seconds=started),
        "finished_at": T0 + timedelta(seconds=finished),
    }
    values.update(fields)
    return rn.StepInfo(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 µs"),
        (0.00085, "850 µs"),
        (0.002949954, "2.9 ms"),
        (0.3125, "312 ms"),
        (3.14, "3.1 s"),
        (125, "2 min 5 s"),
        (3 * 3600 + 12 * 60, "3 h 12 min"),
        (2 * 86400 + 4 * 3600, "2 d 4 h"),
        (-1, "0 µs"),  # clocks of two machines: never a negative time
    ],
)
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_a_wait_shows_its_wait_not_the_instant_it_was_answered() -> None:
    answered_at_once = step("wait_event", 5.0, 5.0)  # what the store records today
    assert step_duration(answered_at_once, T0 + timedelta(seconds=2)) == "waited 3.0 s"
    assert step_duration(step("sleep", 1.0, 4.5), T0) == "waited 3.5 s"  # a stored start wins
    assert step_duration(step("wait_event", 5.0, 5.0), None) == "waited 0 µs"
    assert step_duration(step("activity", 1.0, 1.0029), T0) == "2.9 ms"  # work, not waits


def test_a_compensation_says_what_it_undid() -> None:
    undo = step("compensation", 0, 0.1, step_id="compensate:reserve:1")
    assert step_outcome(undo) == "undid reserve:1"
    failed = step(
        "compensation",
        0,
        0.1,
        step_id="compensate:reserve:1",
        status="failed",
        error={"type": "app.NoRefund", "message": "too late\ntraceback"},
    )
    assert step_outcome(failed) == "NoRefund: too late"
    assert step_outcome(step("activity", 0, 1, output={"a": [1, 2]})) == '{"a": [1, 2]}'
    assert step_outcome(step("activity", 0, 1)) == ""
    event = {"id": "e-1", "seq": 3, "channel": "go", "data": {"ok": True}, "metadata": {}}
    assert step_outcome(step("wait_event", 0, 1, output=event)) == '{"ok": true}'
