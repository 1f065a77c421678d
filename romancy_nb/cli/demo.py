"""``romancy-nb demo``: run the order saga of :mod:`romancy_nb.examples.orders` and explain it."""

from __future__ import annotations

import shlex
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text

import romancy_nb as rn
from romancy_nb.cli import render
from romancy_nb.cli.common import CliError, global_options, handle_errors, open_app, stdout
from romancy_nb.describe import error_summary


def _demo_db(ctx: typer.Context, db: str | None) -> str:
    """The given database, else a new file in a fresh temporary folder (kept for a look)."""
    chosen = db or global_options(ctx).db
    if chosen:
        return chosen
    return str(Path(tempfile.mkdtemp(prefix="romancy-demo-")) / "demo.db")


@handle_errors
def demo_command(
    ctx: typer.Context,
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            metavar="PATH",
            help="Database to write. Default: the global --db or $ROMANCY_DB, else a new "
            "temporary file.",
            show_default=False,
        ),
    ] = None,
    json: Annotated[
        bool, typer.Option("--json", help="Print the two instances and their histories as JSON.")
    ] = False,
) -> None:
    """Run an order saga end to end: one order completes, one fails and is compensated.

    Example:

      romancy-nb demo --db demo.db
    """
    from romancy_nb.examples import orders  # only the demo needs the example's definitions

    path = _demo_db(ctx, db)
    out = stdout()
    if not json:
        out.print(Text.assemble(("romancy-nb demo", "bold"), f": an order saga, stored in {path}"))
        out.print()
    previous = orders.say
    orders.say = (lambda line: None) if json else (lambda line: out.print(Text(line, style="dim")))
    try:
        outcomes = orders.run_demo(path)
    finally:
        orders.say = previous
    with open_app(path) as app:
        infos = [app.get_instance(iid) for iid, _ in outcomes]
        histories = [app.get_history(iid) for iid, _ in outcomes]
    statuses = sorted(info.status for info in infos)
    expected = statuses == ["completed", "failed"]
    if json:
        instances = [
            {**render.instance_json(info), "history": [render.step_json(s) for s in steps]}
            for info, steps in zip(infos, histories, strict=True)
        ]
        render.echo_json({"db": path, "instances": instances})
    else:
        out.print()
        _show(out, path, infos, histories)
    if not expected:
        raise CliError(f"the demo did not end as expected: statuses {statuses}")


def _show(
    out: Console, path: str, infos: list[rn.InstanceInfo], histories: list[list[rn.StepInfo]]
) -> None:
    for info, steps in zip(infos, histories, strict=True):
        title = Text.assemble((info.instance_id, "bold"), "  ", render.status(info.status))
        out.print(title)
        if info.error:
            out.print(Text(error_summary(info.error), style="red"))
        out.print(render.history_table(steps))
        out.print()
    _explain(out, path, infos, histories)


def _explain(
    out: Console, path: str, infos: list[rn.InstanceInfo], histories: list[list[rn.StepInfo]]
) -> None:
    done = next((i for i in infos if i.status == "completed"), None)
    failed = next(
        ((i, h) for i, h in zip(infos, histories, strict=True) if i.status == "failed"), None
    )
    lines = ["[bold]What happened[/bold]"]
    if done is not None:
        lines.append(
            f"• {escape(done.instance_id)} ran reserve_inventory → charge_payment → ship_order "
            "and completed; its Receipt is stored as the instance's output."
        )
    if failed is not None:
        info, steps = failed
        undone = [s.step_id.removeprefix("compensate:") for s in steps if s.kind == "compensation"]
        lines.append(
            f"• {escape(info.instance_id)}: ship_order raised a TerminalError, which is never "
            "retried, so the workflow failed and the saga ran the compensations of its "
            f"completed steps in reverse order: {escape(', then '.join(undone) or 'none')} "
            "(refund the payment, then release the stock)."
        )
    lines.append(
        "• Every step — result, error, attempts, timing — is a row in the database, so a "
        "crashed run resumes from its last step instead of starting over."
    )
    lines.append("")
    lines.append("Look again with:")
    first = infos[-1].instance_id if infos else "ID"
    db = escape(shlex.quote(path))
    lines.append(f"  romancy-nb list --db {db}")
    lines.append(f"  romancy-nb history {escape(shlex.quote(first))} --db {db}")
    out.print("\n".join(lines))
