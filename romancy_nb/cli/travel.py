"""Time travel from a shell: ``replay``, ``rewind``, ``rollback``, ``retry``, ``fork``,
``compare``.

Replaying and rolling back need the workflow's code: give the module that defines it with
``--import``. A rewound, retried or forked instance resumes in whichever worker defines its
workflow (this command only changes its history, and stops what it started when it exits).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.table import Table
from rich.text import Text

import romancy_nb as rn
from romancy_nb.cli import render
from romancy_nb.cli.commands import DbOption, ImportOption, InstanceIdArgument, JsonOption
from romancy_nb.cli.common import (
    EXIT_USAGE,
    CliError,
    handle_errors,
    import_modules,
    instance_not_found,
    open_app,
    resolve_db,
    stdout,
)
from romancy_nb.describe import history_change, rollback_plan, short

T = TypeVar("T")

StepArgument = Annotated[
    str | None,
    typer.Argument(
        metavar="STEP",
        help="The step id (as `romancy-nb history` shows it): the last step kept.",
        show_default=False,
    ),
]
ToStartOption = Annotated[
    bool, typer.Option("--to-start", help="Go back before the first step (keep none).")
]

REPLAY_STYLES = {
    "matched": "green",
    "diverged": "bold red",
    "would execute": "cyan",
    "would wait": "cyan",
    "not reached": "dim",
}


def _target(step: str | None, to_start: bool) -> str | None:
    if (step is None) == (not to_start):
        raise CliError("give the STEP to go back to, or --to-start (not both)", EXIT_USAGE)
    return step


def _managed(db: str, instance_id: str, operation: Callable[[rn.App], Awaitable[T]]) -> T:
    """Run one time-travel call on an open app; the runs it started stop at exit and
    resume in a worker."""
    with open_app(db) as app:
        try:
            app.get_instance(instance_id)
        except rn.WorkflowNotFound:
            raise instance_not_found(instance_id, db) from None

        async def main() -> T:
            async with app:
                return await operation(app)

        return asyncio.run(main())


def _resumes(app_db: str, info: rn.InstanceInfo) -> str:
    return (
        f"it resumes in a worker that defines workflow {info.workflow_name!r} "
        f"(e.g. romancy-nb --db {app_db} worker ...)"
    )


def _show_change(change: rn.HistoryChange, db: str, as_json: bool) -> None:
    if as_json:
        render.echo_json(render.plain(change))
        return
    with open_app(db) as app:
        info = app.get_instance(change.instance_id)
    status = f"status: {info.status}"
    if info.status == "running":
        status += "; " + _resumes(db, info)
    stdout().print(history_change(change) + "\n" + status, markup=False)


@handle_errors
def replay_command(
    ctx: typer.Context,
    instance_id: InstanceIdArgument,
    imports: ImportOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Replay an instance against its history with the current code; write nothing.

    One row per step: matched, diverged (with a diff), would execute / would wait, or not
    reached. Needs the workflow's code: --import the module that defines it. Exits 1 when
    the code diverges from history.

    Example:

      romancy-nb replay order-42 --import flows
    """
    import_modules(imports or [])
    path = resolve_db(ctx, db)
    with open_app(path) as app:
        try:
            app.get_instance(instance_id)
            report = asyncio.run(app.replay(instance_id))
        except rn.WorkflowNotFound as error:
            if "no instance" in str(error):
                raise instance_not_found(instance_id, path) from None
            raise CliError(f"{error} (--import the module that defines it)", EXIT_USAGE) from None
    if as_json:
        render.echo_json(
            {
                "instance_id": report.instance_id,
                "outcome": report.outcome,
                "replayed": report.replayed,
                "recorded": report.recorded,
                "stopped_at": report.stopped_at,
                "error": str(report.error) if report.error else None,
                "rows": report.records(),
            }
        )
    else:
        out = stdout()
        out.print(replay_table(report))
        for row in report.rows:
            if row.diff:
                out.print(Text(f"\n{row.step_id} diverged:", style="bold red"))
                out.print(Text(row.diff))
        out.print(f"\n{report.instance_id}: {report.outcome} "
                  f"({report.replayed} of {report.recorded} recorded steps replayed)")  # fmt: skip
    if report.outcome == "diverged":
        raise typer.Exit(1)


def replay_table(report: rn.ReplayReport) -> Table:
    table = Table(
        title=f"replay of {report.instance_id}", title_justify="left", header_style="bold"
    )
    for column in ("step", "status", "recorded input", "recorded output", "code asked for"):
        table.add_column(column, overflow="fold")
    for row in report.rows:
        asked = short(row.asked_input) if row.asked_input is not None else ""
        table.add_row(
            row.step_id,
            Text(row.status, style=REPLAY_STYLES.get(row.status, "")),
            short(row.recorded_input) if row.recorded_input is not None else "",
            short(row.recorded_output) if row.recorded_output is not None else "",
            asked if row.status != "matched" else "",
        )
    return table


@handle_errors
def rewind_command(
    ctx: typer.Context,
    instance_id: InstanceIdArgument,
    step: StepArgument = None,
    to_start: ToStartOption = False,
    imports: ImportOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Go back to STEP: later history is archived and the instance resumes from there with
    the current code. No compensation runs (see rollback for that)."""
    import_modules(imports or [])
    to = _target(step, to_start)
    path = resolve_db(ctx, db)
    change = _managed(path, instance_id, lambda app: app.rewind(instance_id, to=to))
    _show_change(change, path, as_json)


@handle_errors
def rollback_command(
    ctx: typer.Context,
    instance_id: InstanceIdArgument,
    step: StepArgument = None,
    to_start: ToStartOption = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask to confirm.")] = False,
    imports: ImportOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Undo the steps after STEP: their compensations run newest first, then the instance
    resumes from STEP. Lists the compensations and asks to confirm (unless --yes).
    Needs the workflow's code: --import the module that defines it."""
    import_modules(imports or [])
    to = _target(step, to_start)
    path = resolve_db(ctx, db)
    plan = _managed(path, instance_id, lambda app: app.rollback_plan(instance_id, to=to))
    if not yes:
        text = f"rolling back {instance_id} to {to or 'its start'} " + rollback_plan(plan)
        stdout().print(text, markup=False)
        typer.confirm("go on?", abort=True)
    change = _managed(path, instance_id, lambda app: app.rollback(instance_id, to=to))
    _show_change(change, path, as_json)


@handle_errors
def retry_command(
    ctx: typer.Context,
    instance_id: InstanceIdArgument,
    imports: ImportOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Resume a failed instance from the step that failed, keeping earlier results."""
    import_modules(imports or [])
    path = resolve_db(ctx, db)
    change = _managed(path, instance_id, lambda app: app.retry(instance_id))
    _show_change(change, path, as_json)


@handle_errors
def fork_command(
    ctx: typer.Context,
    instance_id: InstanceIdArgument,
    at: Annotated[
        str | None,
        typer.Option(
            "--at",
            metavar="STEP",
            help="Copy history up to STEP (default: all).",
            show_default=False,
        ),
    ] = None,
    input_json: Annotated[
        str | None,
        typer.Option(
            "--input",
            metavar="JSON",
            help='New arguments by name, e.g. \'{"topic": "x"}\'.',
            show_default=False,
        ),
    ] = None,
    new_id: Annotated[
        str | None,
        typer.Option("--id", metavar="ID", help="The new instance's id.", show_default=False),
    ] = None,
    imports: ImportOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Start a new instance from a copy of this one's history; the original is untouched."""
    import_modules(imports or [])
    values = _json_object(input_json) if input_json is not None else None
    path = resolve_db(ctx, db)
    fork = _managed(
        path,
        instance_id,
        lambda app: app.fork(instance_id, at=at, input=values, instance_id=new_id),
    )
    if as_json:
        render.echo_json({"instance_id": fork, "forked_from": instance_id, "forked_at": at})
    else:
        stdout().print(Text.assemble("forked ", (instance_id, "bold"), " as ", (fork, "bold")))


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise CliError(f"--input is not JSON: {error}", EXIT_USAGE) from None
    if not isinstance(value, dict):
        raise CliError("--input must be a JSON object of arguments by name", EXIT_USAGE)
    return value


@handle_errors
def compare_command(
    ctx: typer.Context,
    a: Annotated[str, typer.Argument(help="The first instance id.", show_default=False)],
    b: Annotated[str, typer.Argument(help="The second instance id.", show_default=False)],
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Two runs side by side, step by step, with the differing steps highlighted."""
    path = resolve_db(ctx, db)
    with open_app(path) as app:
        for iid in (a, b):
            try:
                app.get_instance(iid)
            except rn.WorkflowNotFound:
                raise instance_not_found(iid, path) from None
        comparison = app.compare(a, b)
    if as_json:
        render.echo_json(comparison.records())
        return
    table = Table(title=f"{a}  vs  {b}", title_justify="left", header_style="bold")
    for column in ("step", f"{a}", f"{b}", "differs"):
        table.add_column(column, overflow="fold")
    for row in comparison.records():
        style = "" if not row["differs"] else "bold yellow"
        table.add_row(
            row["step_id"],
            _side(row["a_status"], row["a_input"], row["a_output"]),
            _side(row["b_status"], row["b_input"], row["b_output"]),
            Text(row["differs"], style=style),
        )
    stdout().print(table)
    first = comparison.first_difference
    stdout().print(f"first difference: {first}" if first else "the histories agree")


def _side(status: str | None, value_in: Any, value_out: Any) -> str:
    if status is None:
        return "—"
    return f"{status}: {short(value_in)} → {short(value_out)}"


__all__ = [
    "compare_command",
    "fork_command",
    "replay_command",
    "retry_command",
    "rewind_command",
    "rollback_command",
]
