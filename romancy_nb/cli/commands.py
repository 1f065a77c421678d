"""The management commands: thin calls into :class:`romancy_nb.App`, then a table or JSON."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.text import Text

import romancy_nb as rn
from romancy_nb.cli import render
from romancy_nb.cli.common import (
    EXIT_ERROR,
    CliError,
    handle_errors,
    import_modules,
    instance_not_found,
    open_app,
    resolve_db,
    stdout,
)
from romancy_nb.engine.ids import instance_id_problem
from romancy_nb.store.protocol import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    OUTBOX_STATUSES,
    WAITING_STATUSES,
)

STATUSES = (*ACTIVE_STATUSES, *WAITING_STATUSES, *FINAL_STATUSES)
"""Every status an instance can have: what ``list --status`` accepts."""


def _instance_id(value: str) -> str:
    """An id the store could hold, else a usage error (exit 2) naming what is wrong."""
    problem = instance_id_problem(value)
    if problem is not None:
        raise typer.BadParameter(problem)
    return value


def _status(value: str | None) -> str | None:
    if value is not None and value not in STATUSES:
        raise typer.BadParameter(f"{value!r} is not a status; use one of {', '.join(STATUSES)}")
    return value


InstanceIdArgument = Annotated[
    str, typer.Argument(help="The instance id.", callback=_instance_id, show_default=False)
]

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        metavar="PATH|URL",
        help="SQLite file or postgresql:// URL. Default: the global --db, else $ROMANCY_DB, "
        "else ./romancy.db.",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print plain JSON for scripts.")]
ImportOption = Annotated[
    list[str] | None,
    typer.Option(
        "--import",
        "-i",
        metavar="MODULE",
        help="Import a module (pkg.mod or path/to/file.py) that defines workflows. Repeatable.",
        show_default=False,
    ),
]


def _get(app: rn.App, instance_id: str, db: str) -> rn.InstanceInfo:
    try:
        return app.get_instance(instance_id)
    except rn.WorkflowNotFound:
        raise instance_not_found(instance_id, db) from None


@handle_errors
def list_command(
    ctx: typer.Context,
    workflow: Annotated[
        str | None, typer.Option("--workflow", "-w", help="Only instances of this workflow.")
    ] = None,
    status: Annotated[
        str | None,
        typer.Option(
            "--status",
            "-s",
            callback=_status,
            help=f"Only this status: {', '.join(STATUSES)}.",
        ),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Page size.")] = 20,
    page_token: Annotated[
        str | None, typer.Option("--page-token", help="Continue after a previous page.")
    ] = None,
    json: JsonOption = False,
    db: DbOption = None,
) -> None:
    """List instances, newest first, one page at a time.

    Examples:

      romancy-nb list --status failed --limit 50

      romancy-nb --db postgresql://app@db/orders list --workflow checkout --json
    """
    path = resolve_db(ctx, db)
    with open_app(path) as app:
        try:
            page = app.list_instances(
                workflow=workflow, status=status, limit=limit, page_token=page_token
            )
        except ValueError as error:  # a malformed page token is a usage error
            raise typer.BadParameter(str(error), param_hint="'--page-token'") from None
    if json:
        render.echo_json(render.page_json(page))
        return
    out = stdout()
    if not page.instances:
        out.print("no instances" + (" match" if workflow or status or page_token else ""))
        return
    out.print(render.instances_table(page.instances))
    if page.next_page_token:
        out.print(Text(f"more: --page-token {page.next_page_token}", style="dim"))


@handle_errors
def get_command(
    ctx: typer.Context,
    instance_id: InstanceIdArgument,
    json: JsonOption = False,
    db: DbOption = None,
) -> None:
    """Show one instance: status, input, output and error (exit 3: no such instance).

    Example:

      romancy-nb get order-42 --json
    """
    path = resolve_db(ctx, db)
    with open_app(path) as app:
        info = _get(app, instance_id, path)
    if json:
        render.echo_json(render.instance_json(info))
    else:
        stdout().print(render.instance_table(info))


@handle_errors
def history_command(
    ctx: typer.Context,
    instance_id: InstanceIdArgument,
    json: JsonOption = False,
    db: DbOption = None,
) -> None:
    """Show the recorded steps of an instance, compensations included.

    Example:

      ROMANCY_DB=shop.db romancy-nb history order-42
    """
    path = resolve_db(ctx, db)
    with open_app(path) as app:
        info = _get(app, instance_id, path)
        steps = app.get_history(instance_id)
    if json:
        render.echo_json([render.step_json(s) for s in steps])
    else:
        stdout().print(render.history_table(steps, began=info.created_at))


@handle_errors
def cancel_command(
    ctx: typer.Context,
    instance_id: InstanceIdArgument,
    reason: Annotated[
        str, typer.Option("--reason", "-r", help="Why; stored with the instance.")
    ] = "cancelled from the command line",
    imports: ImportOption = None,
    json: JsonOption = False,
    db: DbOption = None,
) -> None:
    """Cancel an instance; its saga compensations run in reverse order.

    Compensations run in this process when it defines the workflow (see --import). If a
    live worker holds the instance, the request is stored and that worker cancels it.

    Example:

      romancy-nb cancel order-42 --reason "customer asked" --import flows
    """
    import_modules(imports or [])
    path = resolve_db(ctx, db)
    with open_app(path) as app:
        info = _get(app, instance_id, path)
        if info.status in FINAL_STATUSES:
            raise CliError(f"instance {instance_id!r} is already {info.status}; nothing to cancel")
        try:
            new_status = asyncio.run(_cancel(app, instance_id, reason))
        except rn.WorkflowNotFound:
            raise CliError(
                f"cancellation of {instance_id!r} is recorded, but its workflow "
                f"{info.workflow_name!r} is not defined in this process, so its compensations "
                "cannot run here. A worker that runs the definitions will compensate it when "
                "it picks the instance up; or run this command again with --import MODULE "
                "(the module that defines the workflow) to compensate it now.",
                EXIT_ERROR,
            ) from None
        after = app.get_instance(instance_id)
        steps = app.get_history(instance_id)
    out = stdout()
    undone = [s for s in steps if s.kind == "compensation"]
    # The holder may finish cancelling before we read it back: name who held it then.
    holder = after.lock_owner or info.lock_owner or "another worker"
    if json:
        answer = {"instance_id": instance_id, "status": after.status}
        if new_status == "cancelled":
            answer["compensations"] = [render.step_json(s) for s in undone]
        else:
            answer["requested_from"] = holder
        render.echo_json(answer)
        return
    if new_status == "cancelled":
        out.print(Text.assemble("cancelled ", (instance_id, "bold")))
        if undone:
            out.print(render.history_table(undone, title="compensations"))
        return
    out.print(
        f"cancellation requested: {holder} holds {instance_id} and will cancel it at its next "
        f"sweep (status now: {after.status})"
    )


async def _cancel(app: rn.App, instance_id: str, reason: str) -> str:
    async with app:
        return await app.cancel(instance_id, reason)


def _outbox_status(value: str | None) -> str | None:
    if value is not None and value not in OUTBOX_STATUSES:
        raise typer.BadParameter(
            f"{value!r} is not an outbox status; use one of {', '.join(OUTBOX_STATUSES)}"
        )
    return value


@handle_errors
def outbox_command(
    ctx: typer.Context,
    status: Annotated[
        str | None,
        typer.Option(
            "--status",
            "-s",
            callback=_outbox_status,
            help=f"Only this status: {', '.join(OUTBOX_STATUSES)}.",
        ),
    ] = None,
    instance: Annotated[
        str | None, typer.Option("--instance", help="Only the events of this instance.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="How many, newest.")] = 20,
    json: JsonOption = False,
    db: DbOption = None,
) -> None:
    """List the events activities sent through the outbox (ctx.send_event), newest first,
    and how their delivery goes: pending, delivered or failed, attempts, last error.

    Examples:

      romancy-nb outbox --status failed

      romancy-nb outbox --instance order-7 --json
    """
    path = resolve_db(ctx, db)
    with open_app(path) as app:
        events = app.list_outbox(status=status, instance_id=instance, limit=limit)
    if json:
        render.echo_json({"events": [render.outbox_json(event) for event in events]})
        return
    out = stdout()
    if not events:
        out.print("no outbox events" + (" match" if status or instance else ""))
        return
    out.print(render.outbox_table(events))


@handle_errors
def migrate_command(ctx: typer.Context, json: JsonOption = False, db: DbOption = None) -> None:
    """Create the database if needed and apply pending schema migrations.

    Example:

      romancy-nb migrate --db postgresql://app@db/orders
    """
    path = resolve_db(ctx, db)
    with open_app(path, must_exist=False) as app:
        applied = app.store.migrate()
    if json:
        render.echo_json({"db": path, "applied": list(applied)})
    elif applied:
        stdout().print(f"{path}: applied {', '.join(applied)}")
    else:
        stdout().print(f"{path}: up to date, nothing to apply")
