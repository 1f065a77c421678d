"""Every script under examples/ runs to completion on a fresh database and says so."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

EXPECTED = {
    "booking_approval.py": [
        "both trips wait for approval (status waiting_for_event)",
        "'approved_by': 'manager'",
        "oslo: hotel released",
        "oslo: flight released",
        "oslo failed: nobody approved oslo within 0.5 s; status failed",
    ],
    "channels.py": [
        "each of the 12 jobs was taken exactly once",
        "heard ['12 jobs dispatched', 'all done']",
    ],
    "timer.py": [
        "status waiting_for_timer; closing the app",
        "reminder: go home",
        "history: remind:1, pause, remind:2, now:1, sleep:1, remind:3",
    ],
    "retry.py": ["page after 3 attempts", "attempt 3: example.org/mirror refused"],
    "saga.py": [
        "refunded 39.90",
        "released 2 x teapot",
        "compensate:charge_card:1 (completed), compensate:reserve_stock:1 (completed)",
    ],
}


def test_every_example_is_covered() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_example_runs(script: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--db", str(tmp_path / "example.db")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    for line in EXPECTED[script]:
        assert line in done.stdout, (line, done.stdout)
    # the release order matters: reverse of the reservations
    if script == "booking_approval.py":
        out = done.stdout
        assert out.index("oslo: hotel released") < out.index("oslo: flight released")
