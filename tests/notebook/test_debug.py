"""Replay reports and run comparisons as tables a person reads (romancy_nb.notebook.debug)."""

from __future__ import annotations

import romancy_nb as rn
from romancy_nb.notebook.debug import comparison_html, replay_frame, report_html
from tests.notebook.conftest import Shell

CELLS = (
    "%%activity\nasync def shout(ctx, text: str) -> str:\n    return text.upper() + '<b>'",
    "%%workflow\nasync def shouter(ctx, a: str) -> list[str]:\n"
    "    return [await shout(ctx, a), await shout(ctx, a + '!'), await shout(ctx, 'end')]",
)


def _run(ip: Shell, iid: str) -> None:
    for cell in CELLS:
        ip.run(cell)
    ip.run(f"await rn.current_app().result(await rn.current_app().start(shouter, 'hi', "
           f"instance_id={iid!r}))")  # fmt: skip


def test_an_edited_cell_shows_as_a_diverged_row_with_its_diff_and_the_rows_after_it(
    ip: Shell,
) -> None:
    _run(ip, "d-1")
    ip.run(
        "%%workflow\nasync def shouter(ctx, a: str) -> list[str]:\n"
        "    return [await shout(ctx, a), await shout(ctx, a + '?'), await shout(ctx, 'end')]"
    )
    report = ip.run("await rn.current_app().replay('d-1')")
    frame = replay_frame(report)
    assert list(frame["status"]) == ["matched", "diverged", "not reached"]
    assert frame["code asked for"][1] == ["hi?"] and frame["recorded input"][1] == ["hi!"]
    page = report_html(report)
    assert "diverged" in page and "+    &quot;hi?&quot;" in page
    formatted = ip.shell.display_formatter.format(report)[0]
    assert formatted["text/html"] == page  # a report left as a cell's value is this table


def test_stored_text_is_escaped_in_the_html(ip: Shell) -> None:
    _run(ip, "e-1")
    report = ip.run("await rn.current_app().replay('e-1')")
    page = report_html(report)
    assert "HI&lt;b&gt;" in page
    assert "HI<b>" not in page


def test_compare_shows_two_runs_with_the_differing_step_highlighted(ip: Shell) -> None:
    _run(ip, "c-1")
    ip.run(
        "%%workflow\nasync def shouter(ctx, a: str) -> list[str]:\n"
        "    return [await shout(ctx, a), await shout(ctx, a + '?'), await shout(ctx, 'end')]"
    )
    ip.run("await rn.current_app().result(await rn.current_app().start(shouter, 'hi', "
           "instance_id='c-2'))")  # fmt: skip
    comparison = ip.run("rn.compare('c-1', 'c-2')")
    assert isinstance(comparison, rn.Comparison)
    assert comparison.first_difference == "shout:2"
    page = comparison_html(comparison)
    assert page.count('style="background:#fff8c5"') == 1
    assert ip.shell.display_formatter.format(comparison)[0]["text/html"] == page
