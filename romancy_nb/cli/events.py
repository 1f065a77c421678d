"""``romancy-nb event TYPE --data JSON``: send an event from a shell.

The event is stored in the database; the workers that run the subscribed instances notice
it within milliseconds (their change watcher) and resume those that wait for it.

If TYPE names a workflow registered with ``event_handler=True`` in a module given with
``--import`` (``romancy-nb -i flows event user.signup -d '{...}'``), the event also starts
it (instance ``TYPE:ID``), for a worker to run: this process runs no workflow itself, it
opens a client app (``max_concurrent=0``) only to store the start.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer
from rich.text import Text

import romancy_nb as rn
from romancy_nb.cli.commands import DbOption, JsonOption
from romancy_nb.cli.common import EXIT_USAGE, CliError, handle_errors, open_app, resolve_db, stdout
from romancy_nb.engine.handlers import EventReceipt, PreparedEvent


def _not_empty(value: str | None) -> str | None:
    """A usage error (exit 2) for ``""``, which the event API refuses."""
    if value == "":
        raise typer.BadParameter("must not be empty")
    return value


@handle_errors
def event_command(
    ctx: typer.Context,
    event_type: Annotated[
        str,
        typer.Argument(
            metavar="TYPE", callback=_not_empty, help="The event type, e.g. payment.completed."
        ),
    ],
    data: Annotated[
        str, typer.Option("--data", "-d", metavar="JSON", help="The event's data, as JSON.")
    ] = "null",
    source: Annotated[
        str, typer.Option("--source", help="The CloudEvents source attribute.")
    ] = "romancy-nb-cli",
    event_id: Annotated[
        str | None,
        typer.Option(
            "--id",
            callback=_not_empty,
            help="The event id (default: a new UUID); a repeat is ignored.",
        ),
    ] = None,
    json_output: JsonOption = False,
    db: DbOption = None,
) -> None:
    """Send an event; instances subscribed to TYPE receive it, waiting ones resume.

    An event-handler workflow named TYPE (defined in an --import module) is started.

    Examples:

      romancy-nb event payment.confirmed --data '{"order": "o-42"}' --id pay-42

      romancy-nb -i flows event user.signup --data '{"email": "a@x.org"}' --id signup-7
    """
    try:
        payload = json.loads(data)
    except json.JSONDecodeError as error:
        raise CliError(f"--data is not valid JSON ({error}): {data!r}", EXIT_USAGE) from None
    path = resolve_db(ctx, db)
    with open_app(path, max_concurrent=0) as app:
        prepared = app.prepare_event(event_type, payload, source=source, id=event_id)
        receipt = asyncio.run(_deliver(app, prepared))
    if json_output:
        answer = {"type": event_type, "id": receipt.id, "source": source}
        if receipt.instance_id is not None:
            answer["instance_id"] = receipt.instance_id
        print(json.dumps(answer))
        return
    started = "" if receipt.instance_id is None else f", started {receipt.instance_id}"
    stdout().print(Text.assemble("sent ", (event_type, "bold"), f" (id {receipt.id}{started})"))


async def _deliver(app: rn.App, prepared: PreparedEvent) -> EventReceipt:
    """Deliver and close the app: a start opened it (as a client, it ran nothing)."""
    try:
        return await app.deliver_event(prepared)
    finally:
        await app.close()
