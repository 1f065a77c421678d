"""``%romancy rewind|rollback|fork|retry|compare`` and ``%%workflow --on-divergence``."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError

import romancy_nb as rn
from tests.notebook.conftest import Shell

SETUP = (
    "ran = []",
    "%%activity\nasync def book(ctx, item: str) -> str:\n    ran.append(item)\n"
    "    return 'booked ' + item",
    "%%activity --compensation-of book\nasync def unbook(ctx, item: str) -> None:\n"
    "    ran.append('undo ' + item)",
    "%%workflow\nasync def trip(ctx, city: str) -> list[str]:\n"
    "    return [await book(ctx, city + ' hotel'), await book(ctx, city + ' car')]",
    "await rn.current_app().result(await rn.current_app().start(trip, 'rome', instance_id='m-1'))",
)


@pytest.fixture
def trip(ip: Shell) -> Shell:
    for cell in SETUP:
        ip.run(cell)
    ip.run("ran.clear()")
    return ip


def test_rewind_and_retry_through_the_magic(trip: Shell) -> None:
    change = trip.run("%romancy rewind m-1 book:1")
    assert isinstance(change, rn.HistoryChange) and change.archived == ["book:2"]
    trip.run("await rn.current_app().result('m-1')")
    assert trip.ns["ran"] == ["rome car"]  # no compensation, the car booked again
    error = trip.fails("%romancy rewind m-1")
    assert isinstance(error, UsageError) and "--to-start" in str(error)
    error = trip.fails("%romancy retry m-1")
    assert isinstance(error, UsageError) and "only a failed instance" in str(error)


def test_rollback_lists_then_undoes(trip: Shell) -> None:
    plan = trip.run("%romancy rollback m-1 book:1 --dry-run")
    assert [undo.step_id for undo in plan] == ["book:2"]
    assert trip.ns["ran"] == []  # a dry run runs nothing
    change = trip.run("%romancy rollback m-1 --to-start")
    assert change.compensated == ["book:2", "book:1"]
    trip.run("await rn.current_app().result('m-1')")
    assert trip.ns["ran"] == ["undo rome car", "undo rome hotel", "rome hotel", "rome car"]


def test_fork_and_compare(trip: Shell) -> None:
    trip.run(
        "%%workflow --on-divergence rewind\nasync def trip(ctx, city: str) -> list[str]:\n"
        "    return [await book(ctx, city + ' hotel'), await book(ctx, city + ' car')]"
    )
    assert trip.ns["trip"].on_divergence == "rewind"
    fork = trip.run("""%romancy fork m-1 --at book:1 --input '{"city": "oslo"}' --id m-2""")
    assert fork == "m-2"
    trip.run("await rn.current_app().result('m-2')")
    assert trip.ns["ran"] == ["oslo hotel", "oslo car"]
    comparison = trip.run("%romancy compare m-1 m-2")
    assert comparison.first_difference == "book:1"
    error = trip.fails("%romancy fork m-1 --input '[1]'")
    assert isinstance(error, UsageError) and "JSON object" in str(error)
    error = trip.fails("%romancy rewind nope book:1")
    assert isinstance(error, UsageError) and "no instance 'nope'" in str(error)


def test_an_unknown_divergence_policy_is_a_usage_error(ip: Shell) -> None:
    error = ip.fails("%%workflow --on-divergence sometimes\nasync def w(ctx) -> None:\n    pass")
    assert isinstance(error, UsageError)
