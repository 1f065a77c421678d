"""``%romancy serve`` outside a kernel, and ``%romancy event`` naming the instance it started
(a plain IPython shell runs the magic's coroutine at once; the kernel side is
tests/notebooks/test_serve_magic.py)."""

from __future__ import annotations

import pytest

from tests.notebook.conftest import Shell


def test_serve_needs_a_kernel_and_says_what_to_run_instead(ip: Shell) -> None:
    error = ip.fails("%romancy serve --port 0")
    assert "needs a Jupyter kernel" in str(error)
    assert "romancy-nb serve" in str(error)
    assert ip.run("%romancy serve --stop") is None  # nothing to stop


def test_event_says_which_event_handler_instance_it_started(
    ip: Shell, capsys: pytest.CaptureFixture[str]
) -> None:
    ip.run("%%workflow --event-handler\nasync def greet(ctx, name: str) -> str:\n    return name")
    capsys.readouterr()
    event_id = ip.run('%romancy event greet \'{"name": "Ada"}\'')
    said = capsys.readouterr().out
    assert f"sent event 'greet' (id {event_id}, source notebook): started greet:{event_id}" in said
    assert ip.run(f"await rn.current_app().result('greet:{event_id}', timeout=10)") == "Ada"


def test_event_data_that_does_not_fit_the_handler_is_refused_before_sending(ip: Shell) -> None:
    ip.run("%%workflow --event-handler\nasync def tally(ctx, a: int, b: int) -> int:\n    return a")
    error = ip.fails("%romancy event tally '{\"a\": 1}'")
    assert "parameters of workflow 'tally'" in str(error)
    assert ip.run("rn.current_app().list_instances(workflow='tally').instances") == []
    assert ip.run("len(rn.events())") == 0
