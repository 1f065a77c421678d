"""``romancy-nb event TYPE --data JSON``: send an event from a shell.

The event is stored in the database; the workers that run the subscribed instances notice
it within milliseconds (their change watcher) and resume those that wait for it. This
process runs no workflow itself, so it needs no ``--import``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer
from rich.text import Text

from romancy_nb.cli.commands import DbOption, JsonOption
from romancy_nb.cli.common import EXIT_USAGE, CliError, handle_errors, open_app, resolve_db, stdout


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
    """Send an event; instances subscribed to TYPE receive it, waiting ones resume."""
    try:
        payload = json.loads(data)
    except json.JSONDecodeError as error:
        raise CliError(f"--data is not valid JSON ({error}): {data!r}", EXIT_USAGE) from None
    path = resolve_db(ctx, db)
    with open_app(path) as app:
        sent = asyncio.run(app.send_event(event_type, payload, source=source, id=event_id))
    if json_output:
        print(json.dumps({"type": event_type, "id": sent, "source": source}))
        return
    stdout().print(Text.assemble("sent ", (event_type, "bold"), f" (id {sent})"))
