"""``romancy-nb serve``: receive CloudEvents over HTTP for an app, with uvicorn.

It serves ``app.asgi()`` (:mod:`romancy_nb.http.ingress`) for the app ``--app`` names,
loaded as ``romancy-nb worker`` loads it: the process is a worker too, so the
event-handler instances it starts and the waiting ones an event wakes run here (as well
as in any other worker on the database); ``--max-concurrent 0`` makes it an ingress only.
SIGTERM or Ctrl-C stops it: uvicorn finishes the requests in flight, then the app closes
and releases its runs to other workers.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated

import typer

import romancy_nb as rn
from romancy_nb.cli.common import EXIT_USAGE, CliError, global_options, handle_errors
from romancy_nb.cli.common import stdout as console
from romancy_nb.cli.worker import APP_OPTION, AppDbOption, module_app
from romancy_nb.store import display_url

TOKEN_ENV = "ROMANCY_HTTP_TOKEN"


async def _serve(served: rn.App, host: str, port: int, token: str | None, max_body: int) -> None:
    try:
        import uvicorn
    except ImportError:
        raise CliError(
            "romancy-nb serve needs the http extra: pip install 'romancy-nb[http]'", EXIT_USAGE
        ) from None
    ingress = served.asgi(token=token, max_body=max_body)
    config = uvicorn.Config(ingress, host=host, port=port, lifespan="on", log_level="info")
    server = uvicorn.Server(config)
    handlers = sorted(wf.name for wf in served.registry.workflows() if wf.event_handler)
    console().print(
        f"serving CloudEvents on http://{host}:{port} for {display_url(served.url)} "
        f"(event handlers: {', '.join(handlers) or 'none'}; "
        f"{'bearer token required' if token else 'no token'})",
        markup=False,
    )
    # uvicorn stops gracefully on SIGTERM, then raises it again under the handler it found:
    # with this one, a graceful stop exits 0, as romancy-nb worker does.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    await server.serve()
    if not server.started:
        raise CliError(f"the server on {host}:{port} did not start (see the log above)")
    console().print("stopped", markup=False)


@handle_errors
def serve_command(
    ctx: typer.Context,
    app_spec: Annotated[str, APP_OPTION],
    db: AppDbOption = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", min=1, max=65535)] = 8000,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar=TOKEN_ENV,
            help=f"Require 'Authorization: Bearer TOKEN' on events (or ${TOKEN_ENV}).",
            show_default=False,
        ),
    ] = None,
    max_body: Annotated[
        int, typer.Option("--max-body", min=1, help="Largest request body, in bytes.")
    ] = 1 << 20,
    max_concurrent: Annotated[
        int | None,
        typer.Option(
            "--max-concurrent",
            "-c",
            min=0,
            help="Run at most this many instances here (0: only receive; default: the app's).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Receive CloudEvents over HTTP (POST /; /health/live, /health/ready) until stopped.

    Examples:

      romancy-nb serve --app flows:app --db postgresql://app@db/orders --port 8080

      ROMANCY_HTTP_TOKEN=s3cret romancy-nb serve --app flows:app --host 0.0.0.0
    """
    served = module_app(app_spec, db or global_options(ctx).db, max_concurrent)
    asyncio.run(_serve(served, host, port, token or None, max_body))
