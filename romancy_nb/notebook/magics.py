"""``%%workflow``, ``%%activity``, ``%%sql`` and the ``%romancy`` line magic."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import (
    MagicArgumentParser,
    argument,
    magic_arguments,
    parse_argstring,
)
from IPython.display import HTML, Pretty, display

from romancy_nb.engine import Workflow, registry
from romancy_nb.errors import RomancyError
from romancy_nb.notebook import aio, cells, debug, serving, state, travel, views
from romancy_nb.notebook.widgets import InstanceView, panel
from romancy_nb.store import display_url

_TIME_TRAVEL = ("rewind", "rollback", "fork", "retry", "compare")


class _Parser(MagicArgumentParser):
    """Errors and ``-h`` become a ``UsageError`` that carries the usage text."""

    def error(self, message: str) -> Any:
        raise UsageError(f"{message}\n\n{self.format_usage()}")

    def exit(self, status: int = 0, message: str | None = None) -> Any:
        raise UsageError(message or self.format_help())

    def print_help(self, file: Any = None) -> None:
        raise UsageError(self.format_help())


def _romancy_parser() -> _Parser:
    parser = _Parser(
        prog="%romancy",
        description="Inspect and manage the workflow instances of the notebook's app.",
    )
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    sub.required = True
    listing = sub.add_parser("list", help="instances, newest first (a DataFrame)")
    listing.add_argument("--workflow", "-w", help="only this workflow")
    listing.add_argument("--status", "-s", help="only this status")
    listing.add_argument("--limit", "-n", type=int, default=50, help="at most this many")
    listing.add_argument("--all", action="store_true", help="every column (rn.instances())")
    sub.add_parser("show", help="one instance's panel").add_argument("instance_id")
    sub.add_parser("panel", help="a workflow's panel: form, Start, instances").add_argument(
        "workflow"
    )
    steps = sub.add_parser("history", help="one instance's steps (a DataFrame)")
    steps.add_argument("instance_id")
    steps.add_argument("--all", action="store_true", help="every column (rn.history(ID))")
    sub.add_parser(
        "replay", help="re-run an instance against its history with the current code"
    ).add_argument("instance_id")
    cancel = sub.add_parser("cancel", help="cancel an instance (compensations run)")
    cancel.add_argument("instance_id")
    cancel.add_argument("--reason", default="cancelled from the notebook")
    event = sub.add_parser("event", help="send an event: TYPE and its data as JSON")
    event.add_argument("type")
    event.add_argument("data", nargs="?", default="null", help="JSON (default null)")
    event.add_argument("--source", default="notebook")
    serve = sub.add_parser(
        "serve", help="receive CloudEvents over HTTP in this kernel (app.asgi() on its loop)"
    )
    serve.add_argument("--port", "-p", type=int, default=8000, help="0: a free port")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--token", help="require 'Authorization: Bearer TOKEN' on events")
    serve.add_argument("--max-body", type=int, default=1 << 20, help="largest body, bytes")
    serve.add_argument("--stop", action="store_true", help="stop the ingress")
    travel.add_commands(sub, _json_arg)
    config = sub.add_parser("config", help="show or change the app's settings")
    config.add_argument("--db", metavar="PATH|URL", help="bind the default app to this database")
    return parser


def _json_arg(text: str, option: str) -> Any:
    # IPython splits magic options without removing the shell quotes around a value.
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1]
    try:
        return json.loads(text)
    except ValueError as error:
        raise UsageError(f"{option}: not valid JSON ({error}): {text}") from None


def call_arguments(value: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``--start`` JSON → call arguments: an object is keyword arguments, an array positional
    arguments, anything else one positional argument."""
    if isinstance(value, dict):
        return (), value
    if isinstance(value, list):
        return tuple(value), {}
    return (value,), {}


def _note_new_version(wf: Workflow[Any, Any], old_version: str) -> None:
    """Say that the cell registered new code, and how many instances run older code."""
    app = state.current_app()
    try:
        unfinished = [
            info
            for info in app.list_instances(workflow=wf.name, limit=1000)
            if info.status not in ("completed", "failed", "cancelled")
            and info.code_version != wf.code_version
        ]
    except RomancyError:
        unfinished = []
    text = f"{wf.name}: new code version {wf.code_version} (was {old_version})"
    if unfinished:
        text += (
            f"; {len(unfinished)} unfinished instance(s) started with older code resume "
            "with this one, checked step by step against their history"
        )
    print(text)


def show_instance(iid: str, *, pending: bool = False) -> Any:
    """The panel of one instance."""
    return InstanceView(state.current_app(), iid, pending=pending)


@magics_class
class RomancyMagics(Magics):
    """The magics ``%load_ext romancy_nb`` registers."""

    @magic_arguments()
    @argument("--name", "-n", help="workflow name (default: the function's name)")
    @argument(
        "--event-handler",
        action="store_true",
        help="let a CloudEvent of this name start the workflow",
    )
    @argument(
        "--start",
        nargs="?",
        const="{}",
        metavar="JSON",
        help="start an instance at once: a JSON object of keyword arguments (or an array "
        "of positional ones) and show its panel",
    )
    @argument("--id", dest="instance_id", help="instance id for --start (idempotency key)")
    @argument(
        "--on-divergence",
        choices=("error", "rewind"),
        help="when an edit no longer matches a run's history: stop it (error) or keep the "
        "matched steps and re-run from the first diverging one (rewind); default: the app's",
    )
    @cell_magic
    def workflow(self, line: str, cell: str) -> Any:
        """Define (or redefine) a workflow: the cell is an ``async def``, registered as is.

        Running the cell again registers the new code; instances started with the old code
        go on from their history (a changed step is reported as a determinism violation).
        """
        options = parse_argstring(self.workflow, line)
        previous = registry.find_workflow(options.name or cells.function_name(cell))
        wf = cells.define_workflow(
            self.shell,
            cell,
            name=options.name,
            event_handler=options.event_handler,
            on_divergence=options.on_divergence,
        )
        if previous is not None and previous.code_version != wf.code_version:
            _note_new_version(wf, previous.code_version)
        if options.start is None:
            return None
        args, kwargs = call_arguments(_json_arg(options.start, "--start"))
        iid = state.start_instance(wf, args, kwargs, options.instance_id)
        display(show_instance(iid, pending=True))
        return None

    @magic_arguments()
    @argument("--name", "-n", help="activity name (default: the function's name)")
    @argument("--retry", type=int, metavar="ATTEMPTS", help="at most this many attempts")
    @argument("--retry-interval", type=float, metavar="SECONDS", help="fixed delay between")
    @argument("--timeout", type=float, metavar="SECONDS", help="fail an attempt after this")
    @argument(
        "--no-transactional",
        dest="transactional",
        action="store_false",
        help="no ctx.session (the step is recorded on its own)",
    )
    @argument(
        "--compensation-of",
        metavar="ACTIVITY",
        help="this function undoes ACTIVITY (saga); it gets the same arguments",
    )
    @cell_magic
    def activity(self, line: str, cell: str) -> Any:
        """Define (or redefine) an activity: the cell is a ``def`` or ``async def``."""
        options = parse_argstring(self.activity, line)
        cells.define_activity(
            self.shell,
            cell,
            name=options.name,
            retry=cells.retry_policy(options.retry, options.retry_interval),
            timeout=options.timeout,
            transactional=options.transactional,
            compensation_of=options.compensation_of,
        )
        return None

    @magic_arguments()
    @argument("--out", "-o", metavar="VAR", help="also store the result in this variable")
    @cell_magic
    def sql(self, line: str, cell: str) -> Any:
        """Run DuckDB SQL over the store's tables and the namespace's DataFrames."""
        from romancy_nb.notebook.sql import run_sql

        options = parse_argstring(self.sql, line)
        frame = run_sql(cell, state.current_app(), self.shell.user_ns)
        if options.out:
            self.shell.user_ns[options.out] = frame
        return frame

    @line_magic
    def romancy(self, line: str) -> Any:
        """``%romancy list|show ID|panel WORKFLOW|history ID|replay ID|cancel ID|event TYPE JSON|
        rewind ID STEP|rollback ID STEP|fork ID|retry ID|compare A B|serve [--port N|--stop]|
        config``"""
        options = _romancy_parser().parse_args(_split(line))
        try:
            if options.command == "config":  # before current_app(): it creates the file
                return self._config(options.db)
            app = state.current_app()
            if options.command == "list":
                if not options.all:
                    return views.instance_summary(
                        options.workflow, options.status, options.limit, app=app
                    )
                frame = views.instances(options.workflow, options.status, app=app)
                return frame.head(options.limit)
            if options.command == "show":
                app.get_instance(options.instance_id)
                return show_instance(options.instance_id)
            if options.command == "panel":
                return panel(options.workflow, app)
            if options.command == "history":
                if not options.all:
                    return views.history_summary(options.instance_id, app=app)
                app.get_instance(options.instance_id)
                return views.history(options.instance_id, app=app)
            if options.command == "replay":
                return self._replay(options.instance_id)
            if options.command == "cancel":
                return self._cancel(options.instance_id, options.reason)
            if options.command in _TIME_TRAVEL:
                return travel.run(options)
            if options.command == "serve":
                return self._serve(options)
            return self._event(options.type, options.data, options.source)
        except (RomancyError, ValueError) as error:
            raise UsageError(str(error)) from None

    def _cancel(self, iid: str, reason: str) -> Any:
        app = state.current_app()
        app.get_instance(iid)
        handle = display(f"{iid}: cancelling…", display_id=True)

        def done(status: Any, error: BaseException | None) -> None:
            text = f"{iid}: {status}" if error is None else f"{iid}: cancel failed: {error}"
            if handle is not None:
                handle.update(text)

        ran, status = aio.run_or_schedule(app.cancel(iid, reason), done)
        if ran:
            done(status, None)
            return status
        return None

    def _replay(self, iid: str) -> Any:
        app = state.current_app()
        app.get_instance(iid)
        handle = display(f"{iid}: replaying…", display_id=True)

        def done(report: Any, error: BaseException | None) -> None:
            if handle is None:
                return
            if error is not None:
                handle.update(f"{iid}: replay failed: {error}")
            else:
                handle.update(HTML(debug.report_html(report)))

        ran, report = aio.run_or_schedule(app.replay(iid), done)
        if ran:
            if handle is not None:
                handle.update(HTML(debug.report_html(report)))
            return report
        return None

    def _event(self, event_type: str, data_text: str, source: str) -> Any:
        app = state.current_app()
        data = _json_arg(data_text, "data")
        # Checked here, so data that does not fit an event-handler workflow raises at once.
        prepared = app.prepare_event(event_type, data, source=source)
        waiting = _waiting_for(app, event_type)  # read before: the event ends these waits
        handle = display(Pretty(f"sending event {event_type!r}…"), display_id=True)

        def done(receipt: Any, error: BaseException | None) -> None:
            if handle is None:
                return
            if error is not None:
                handle.update(Pretty(f"event {event_type!r} not sent: {error}"))
                return
            if waiting:
                shown = ", ".join(waiting[:_NAMED])
                more = f" and {len(waiting) - _NAMED} more" if len(waiting) > _NAMED else ""
                whom = f"waking {shown}{more}, which waited for it"
            else:
                whom = "no instance was waiting for it"
            if receipt.instance_id is not None:
                whom = f"started {receipt.instance_id} (event handler {event_type!r}); {whom}"
            handle.update(
                Pretty(f"sent event {event_type!r} (id {receipt.id}, source {source}): {whom}")
            )

        ran, receipt = aio.run_or_schedule(app.deliver_event(prepared), done)
        if ran:
            done(receipt, None)
            return receipt.id
        return None

    def _serve(self, options: Any) -> str | None:
        """Start the ingress and return its URL; serving already says where, and changes
        nothing (re-running a notebook's cells must not fail on its own server)."""
        if options.stop:
            return _stop_serving()
        running = serving.current()
        if running is not None:
            print(f"already serving CloudEvents on {running.url} (%romancy serve --stop first)")
            return running.url
        app = state.current_app()
        started = serving.start(app, options.host, options.port, options.token, options.max_body)
        handlers = sorted(wf.name for wf in app.registry.workflows() if wf.event_handler)
        print(
            f"serving CloudEvents on {started.url} (POST /, GET /health/ready) for "
            f"{display_url(app.url)}; event handlers: {', '.join(handlers) or 'none'}; "
            f"{'bearer token required' if options.token else 'no token'}"
        )
        return started.url

    def _config(self, db: str | None) -> Any:
        if db is None:
            return {"db": display_url(state.bound_db())}
        if serving.current() is not None:  # it serves the app being replaced
            _stop_serving()
        previous = state.set_app(state.new_app(db))
        if previous is not None:
            state.close_app(previous)
        state.open_app(state.current_app())
        return {"db": display_url(state.current_app().url)}


def _stop_serving() -> None:
    """Stop the kernel's ingress, if it runs; say so when it has stopped."""
    running = serving.current()
    task = serving.stop()
    if running is None or task is None:
        print("not serving")
        return
    handle = display(Pretty(f"stopping the ingress on {running.url}…"), display_id=True)

    def stopped(_: asyncio.Task[None]) -> None:
        if handle is not None:
            handle.update(Pretty(f"stopped serving on {running.url}"))

    task.add_done_callback(stopped)


_NAMED = 10
"""At most this many waiting instances are named after ``%romancy event``."""


def _waiting_for(app: Any, event_type: str) -> list[str]:
    """The instances waiting for an event of ``event_type`` now (one indexed read)."""
    found = app.store.read_table("waits", {"channel": event_type, "kind": "wait_event"})
    if found is None:
        return []
    column = found.columns.index("instance_id")
    return sorted({row[column] for row in found.rows})


def _split(line: str) -> list[str]:
    from IPython.utils.process import arg_split

    return arg_split(line, posix=True)
