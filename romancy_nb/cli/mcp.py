"""``romancy-nb mcp``: an app's workflows as MCP tools, over stdio or streamable HTTP.

It serves :func:`romancy_nb.ai.mcp_server` for the app ``--app`` names, loaded as
``romancy-nb worker`` loads it. By default the process is a worker too, so a workflow an
MCP host starts runs here, and ``instance_result`` answers without anything else
running; ``--max-concurrent 0`` makes it a client only, whose starts wait for the
workers on the same database. Over stdio (the default, what MCP hosts spawn) stdout is
the protocol, so everything it says goes to stderr; ``--http`` serves streamable HTTP at
``http://HOST:PORT/mcp`` with uvicorn instead. When the host disconnects (stdio) or on
SIGTERM (HTTP), runs get ``--grace`` seconds to finish, the rest go to other workers.
"""

from __future__ import annotations

import asyncio
import signal
from typing import TYPE_CHECKING, Annotated, Any

import typer

import romancy_nb as rn
from romancy_nb.cli.common import EXIT_USAGE, CliError, global_options, handle_errors
from romancy_nb.cli.common import stderr as console
from romancy_nb.cli.worker import APP_OPTION, AppDbOption, module_app
from romancy_nb.store import display_url

if TYPE_CHECKING:
    from mcp.server import Server


def _served(app: rn.App, where: str) -> None:
    names = sorted(wf.name for wf in app.registry.workflows())
    runs = "a client: workers run them" if app.max_concurrent == 0 else "runs them here"
    console().print(
        f"mcp serving {', '.join(names) or 'no workflows'} on {display_url(app.url)} "
        f"over {where} ({runs})",
        markup=False,
    )


async def _serve(app: rn.App, http: tuple[str, int] | None, grace: float) -> None:
    try:
        from mcp.server.stdio import stdio_server

        from romancy_nb.ai.mcp import mcp_server
    except ImportError:
        raise CliError(
            "romancy-nb mcp needs the ai extra: pip install 'romancy-nb[ai]'", EXIT_USAGE
        ) from None
    server = mcp_server(app)
    await app.open()
    try:
        if http is None:
            _served(app, "stdio")
            async with stdio_server() as (read, write):
                await server.run(read, write, server.create_initialization_options())
        else:
            await _serve_http(server, app, *http)
    finally:
        await app.drain(grace)
        await app.close()
    console().print("stopped", markup=False)


async def _serve_http(server: Server[Any], app: rn.App, host: str, port: int) -> None:
    import uvicorn

    asgi = server.streamable_http_app(host=host)
    config = uvicorn.Config(asgi, host=host, port=port, lifespan="on", log_level="warning")
    web = uvicorn.Server(config)
    _served(app, f"streamable HTTP at http://{host}:{port}/mcp")
    # uvicorn stops gracefully on SIGTERM, then raises it again under the handler it found:
    # with this one, a graceful stop exits 0, as romancy-nb serve does.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    await web.serve()
    if not web.started:
        raise CliError(f"the server on {host}:{port} did not start (see the log above)")


@handle_errors
def mcp_command(
    ctx: typer.Context,
    app_spec: Annotated[str, APP_OPTION],
    db: AppDbOption = None,
    http: Annotated[
        bool, typer.Option("--http", help="Serve streamable HTTP instead of stdio.")
    ] = False,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (--http).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option("--port", "-p", min=1, max=65535)] = 8000,
    max_concurrent: Annotated[
        int | None,
        typer.Option(
            "--max-concurrent",
            "-c",
            min=0,
            help="Run at most this many instances here (0: only start them, for other "
            "workers; default: the app's).",
            show_default=False,
        ),
    ] = None,
    grace: Annotated[
        float, typer.Option("--grace", min=0, help="Seconds to let runs finish at the end.")
    ] = 10.0,
) -> None:
    """Serve the app's workflows as MCP tools (start_*, instance_status, instance_result,
    send_event, list_instances, cancel_instance) over stdio, or streamable HTTP.

    Examples:

      romancy-nb mcp --app flows:app --db orders.db

      romancy-nb mcp --app flows:app --db postgresql://app@db/orders --http --port 8765 -c 0
    """
    served = module_app(app_spec, db or global_options(ctx).db, max_concurrent)
    asyncio.run(_serve(served, (host, port) if http else None, grace))
