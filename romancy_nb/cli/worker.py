"""``romancy-nb worker``: serve workflows until stopped, from a module or a notebook.

A worker opens an app on the database and keeps it open: it claims runnable instances (new
ones started by clients, released ones, those of dead workers) up to ``--max-concurrent``,
resumes waiting ones when their timer fires or their event arrives, and, if it is the
leader, runs the sweeps. Any number of workers may serve one PostgreSQL database.

``--app pkg.mod:app`` serves that module's ``rn.App`` (its registry and settings; ``--db``
and ``--max-concurrent`` override them); ``--app pkg.mod`` (or a path to a ``.py`` file)
imports the module for its definitions and serves them on ``--db``. ``--notebook NB`` runs
the notebook's definition cells instead (see :mod:`romancy_nb.cli.notebook`).

SIGTERM or Ctrl-C stops it gracefully: it takes no more work, waits up to ``--grace``
seconds for what it runs to finish or suspend, then releases the rest, which other
workers resume from their last recorded step. A second signal stops it at once.
"""

from __future__ import annotations

import asyncio
import importlib
import signal
import time
from pathlib import Path
from typing import Annotated, Any

import typer

import romancy_nb as rn
from romancy_nb.cli.common import (
    DB_ENV,
    DEFAULT_DB,
    EXIT_USAGE,
    CliError,
    global_options,
    handle_errors,
    import_modules,
    stdout,
)
from romancy_nb.store import display_url

APP_OPTION = typer.Option(
    "--app",
    "-a",
    metavar="MODULE[:APP]",
    help="Serve this module's rn.App (module:app), or the workflows a module "
    "defines (module or path/to/file.py).",
    show_default=False,
)
"""``--app`` of every command that serves an app (worker, serve, mcp); typer copies it."""

AppDbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        metavar="URL",
        help=f"Database (default: the app's own, ${DB_ENV}, or romancy.db).",
        show_default=False,
    ),
]
"""``--db`` of serve and mcp (the worker's also names --notebook's default)."""


def module_app(spec: str, db: str | None, max_concurrent: int | None) -> rn.App:
    """The app ``--app`` names: ``module:attr`` (an App, with the overrides given) or a
    module of definitions, served by a new App."""
    module_name, _, attr = spec.partition(":")
    if not module_name:
        raise CliError(f"--app {spec}: give a module, e.g. --app flows:app", EXIT_USAGE)
    import_modules([module_name], option="--app")
    if not attr:
        return rn.App(db or DEFAULT_DB, max_concurrent=max_concurrent)
    stem = Path(module_name).stem if module_name.endswith(".py") else module_name
    module = importlib.import_module(stem)
    found = getattr(module, attr, None)
    if not isinstance(found, rn.App):
        raise CliError(
            f"--app {spec}: {module_name}.{attr} is "
            f"{'missing' if found is None else 'a ' + type(found).__name__}, not an rn.App",
            EXIT_USAGE,
        )
    return _with_overrides(found, db, max_concurrent)


def _with_overrides(app: rn.App, db: str | None, max_concurrent: int | None) -> rn.App:
    changes: dict[str, Any] = {}
    if max_concurrent is not None:
        changes["max_concurrent"] = max_concurrent
    if (db is None or db == app.url) and not changes:
        return app
    if app.is_open:
        raise CliError("the app to serve is open already; let the worker open it")
    served = app.copy(db, **changes)
    app.store.close()  # the module's app is not served: let go of its connections now
    return served


_asked_to_stop = False


def _note_stop(signum: int, frame: object) -> None:
    global _asked_to_stop
    _asked_to_stop = True


async def _serve(app: rn.App, duration: float, grace: float) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            raise SystemExit(130)  # asked twice: stop now, leases expire or are released
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    if _asked_to_stop:  # a signal came while the worker was still loading: stop cleanly
        stop.set()
    out = stdout()
    await app.open()
    names = sorted(wf.name for wf in app.registry.workflows())
    limit = "no limit" if app.max_concurrent is None else f"at most {app.max_concurrent} at once"
    out.print(
        f"worker {app.worker_id} serving {', '.join(names) or 'no workflows'} "
        f"on {display_url(app.url)} ({limit})",
        markup=False,
    )
    started = time.monotonic()
    try:
        if duration:
            await asyncio.wait_for(stop.wait(), duration)
        else:
            await stop.wait()
    except TimeoutError:
        pass
    running = app.running()
    if running:
        out.print(f"draining: {len(running)} run(s), up to {grace:g} s", markup=False)
    left = await app.drain(grace)
    if left:
        out.print(f"releasing {len(left)} unfinished run(s) to other workers", markup=False)
    await app.close()
    out.print(f"stopped after {time.monotonic() - started:.1f} s", markup=False)


@handle_errors
def worker_command(
    ctx: typer.Context,
    app_spec: Annotated[str | None, APP_OPTION] = None,
    notebook: Annotated[
        Path | None,
        typer.Option("--notebook", "-n", help="Serve the workflows this notebook defines."),
    ] = None,
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            metavar="URL",
            help="Database: a SQLite path or postgresql://... (default: the app's own, "
            f"${DB_ENV}, or romancy.db; beside the notebook for --notebook).",
            show_default=False,
        ),
    ] = None,
    max_concurrent: Annotated[
        int | None,
        typer.Option(
            "--max-concurrent",
            "-c",
            min=1,
            help="Run at most this many instances at once (default: the app's, no limit).",
            show_default=False,
        ),
    ] = None,
    grace: Annotated[
        float,
        typer.Option("--grace", min=0, help="Seconds to let runs finish on SIGTERM."),
    ] = 30.0,
    duration: Annotated[
        float, typer.Option("--duration", help="Stop after this many seconds (0: run on).")
    ] = 0,
) -> None:
    """Serve workflows until stopped (Ctrl-C, SIGTERM: graceful, within --grace seconds).

    Examples:

      romancy-nb worker --app flows:app --db postgresql://app@db/orders -c 8

      romancy-nb worker --notebook pipeline.ipynb
    """
    # Until the loop's handlers are in place (loading modules or a notebook takes seconds),
    # a SIGTERM is noted rather than killing the worker mid-start.
    signal.signal(signal.SIGTERM, _note_stop)
    if (app_spec is None) == (notebook is None):
        raise CliError("give exactly one of --app MODULE[:APP] and --notebook NB", EXIT_USAGE)
    db = db or global_options(ctx).db
    if notebook is not None:
        from romancy_nb.cli.notebook import load_notebook_app

        served, loop = load_notebook_app(notebook, db)
        served = _with_overrides(served, None, max_concurrent)
        loop.run_until_complete(_serve(served, duration, grace))
        return
    assert app_spec is not None
    served = module_app(app_spec, db, max_concurrent)
    asyncio.run(_serve(served, duration, grace))
