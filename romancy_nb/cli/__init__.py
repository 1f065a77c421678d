"""``romancy-nb``: inspect and manage workflow instances from a shell.

The commands are thin: each calls the management API of :class:`romancy_nb.App` and shows
the answer as a rich table, or as plain JSON with ``--json``. Exit codes: 0 ok, 1 a runtime
or workflow error, 2 a usage error, 3 an unknown instance id or a missing database.
"""

from __future__ import annotations

from typing import Annotated

import typer

from romancy_nb.cli import commands
from romancy_nb.cli.common import (
    DB_ENV,
    Command,
    GlobalOptions,
    Group,
    handle_errors,
    import_modules,
)
from romancy_nb.cli.demo import demo_command
from romancy_nb.cli.events import event_command
from romancy_nb.cli.mcp import mcp_command
from romancy_nb.cli.notebook import run_command
from romancy_nb.cli.serve import serve_command
from romancy_nb.cli.travel import (
    compare_command,
    fork_command,
    replay_command,
    retry_command,
    rewind_command,
    rollback_command,
)
from romancy_nb.cli.worker import worker_command

app = typer.Typer(
    name="romancy-nb",
    cls=Group,
    help="Inspect and manage romancy_nb workflow instances.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
@handle_errors
def _global(
    ctx: typer.Context,
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            envvar=DB_ENV,
            metavar="PATH|URL",
            help="Database for every command: a SQLite file or a postgresql:// URL "
            "(default ./romancy.db).",
            show_default=False,
        ),
    ] = None,
    imports: Annotated[
        list[str] | None,
        typer.Option(
            "--import",
            "-i",
            metavar="MODULE",
            help="Import a module (pkg.mod or path/to/file.py) that defines workflows, "
            "before the command runs. Repeatable.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Inspect and manage romancy_nb workflow instances."""
    ctx.obj = GlobalOptions(db=db or None, imports=list(imports or []))
    import_modules(ctx.obj.imports)


app.command("list", cls=Command)(commands.list_command)
app.command("get", cls=Command)(commands.get_command)
app.command("history", cls=Command)(commands.history_command)
app.command("cancel", cls=Command)(commands.cancel_command)
app.command("event", cls=Command)(event_command)
app.command("outbox", cls=Command)(commands.outbox_command)
app.command("migrate", cls=Command)(commands.migrate_command)
# Time travel (romancy_nb.cli.travel).
app.command("replay", cls=Command)(replay_command)
app.command("rewind", cls=Command)(rewind_command)
app.command("rollback", cls=Command)(rollback_command)
app.command("retry", cls=Command)(retry_command)
app.command("fork", cls=Command)(fork_command)
app.command("compare", cls=Command)(compare_command)
app.command("demo", cls=Command)(demo_command)
# Headless notebooks (romancy_nb.cli.notebook) and workers (romancy_nb.cli.worker).
app.command("run", cls=Command)(run_command)
app.command("worker", cls=Command)(worker_command)
# CloudEvents over HTTP (romancy_nb.cli.serve).
app.command("serve", cls=Command)(serve_command)
# Workflows as MCP tools (romancy_nb.cli.mcp).
app.command("mcp", cls=Command)(mcp_command)


def main() -> None:
    """Entry point of the ``romancy-nb`` script."""
    app(prog_name="romancy-nb")


__all__ = ["app", "main"]
