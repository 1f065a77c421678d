"""``%romancy rewind|rollback|fork|retry|compare``: time travel from a line magic.

Each command calls the engine's operation on the notebook's app and shows what it did in the
cell's output, updated in place when the operation finishes (it runs on the kernel's loop,
so a long rollback does not block the kernel). The arguments mirror the CLI's.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Coroutine
from typing import Any

from IPython.display import Pretty, display

from romancy_nb.describe import history_change, rollback_plan
from romancy_nb.notebook import aio, state


def add_commands(sub: Any, json_arg: Callable[[str, str], Any]) -> None:
    """Add the time-travel subcommands to ``%romancy``'s parser."""
    for name, text in (
        ("rewind", "go back to STEP (later history archived), then resume; no compensation"),
        ("rollback", "undo the steps after STEP (compensations, newest first), then resume"),
    ):
        command = sub.add_parser(name, help=text)
        command.add_argument("instance_id")
        command.add_argument("step", nargs="?", help="the last step kept")
        command.add_argument("--to-start", action="store_true", help="keep no step")
        if name == "rollback":
            command.add_argument(
                "--dry-run", action="store_true", help="only list the compensations"
            )
    fork = sub.add_parser("fork", help="a new instance from a copy of the history")
    fork.add_argument("instance_id")
    fork.add_argument("--at", metavar="STEP", help="copy up to STEP (default: all)")
    fork.add_argument(
        "--input",
        metavar="JSON",
        type=lambda text: json_arg(text, "--input"),
        help="new arguments by name, a JSON object",
    )
    fork.add_argument("--id", dest="new_id", help="the new instance's id")
    sub.add_parser("retry", help="a failed instance resumes from its failed step").add_argument(
        "instance_id"
    )
    compare = sub.add_parser("compare", help="two runs side by side, step by step")
    compare.add_argument("a")
    compare.add_argument("b")


def run(options: argparse.Namespace) -> Any:
    """Carry out one parsed time-travel command; what it returns is the cell's value."""
    app = state.current_app()
    command = options.command
    if command == "compare":
        return app.compare(options.a, options.b)
    iid = options.instance_id
    app.get_instance(iid)  # an unknown id fails here, at the call
    if command == "fork":
        if options.input is not None and not isinstance(options.input, dict):
            raise ValueError("--input must be a JSON object of arguments by name")
        fork = app.fork(iid, at=options.at, input=options.input, instance_id=options.new_id)
        return _shown(fork, f"{iid}: forking…", lambda new: f"forked {iid} as {new}")
    if command == "retry":
        return _shown(app.retry(iid), f"{iid}: retrying…", history_change)
    to = _target(options.step, options.to_start)
    if command == "rewind":
        return _shown(app.rewind(iid, to=to), f"{iid}: rewinding…", history_change)
    if options.dry_run:
        return _shown(app.rollback_plan(iid, to=to), f"{iid}: planning…", rollback_plan)
    return _shown(app.rollback(iid, to=to), f"{iid}: rolling back…", history_change)


def _target(step: str | None, to_start: bool) -> str | None:
    if (step is None) == (not to_start):
        raise ValueError("give the STEP to go back to, or --to-start (not both)")
    return step


def _shown(
    operation: Coroutine[Any, Any, Any], working: str, done_text: Callable[[Any], str]
) -> Any:
    """Run ``operation`` on the kernel's loop, showing ``working`` until it ends, then
    what it did (or why it failed); in a plain shell it runs at once and returns."""
    handle = display(Pretty(working), display_id=True)

    def done(value: Any, error: BaseException | None) -> None:
        if handle is not None:
            text = done_text(value) if error is None else f"failed: {error}"
            handle.update(Pretty(text))

    ran, value = aio.run_or_schedule(operation, done)
    if ran:
        done(value, None)
        return value
    return None
