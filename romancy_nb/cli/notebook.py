"""``romancy-nb run`` and ``romancy-nb worker --notebook``: notebooks without JupyterLab.

``run`` executes a notebook top to bottom in a fresh kernel with nbclient, papermill-style:
``-p key=value`` values go into a cell inserted after the cell tagged ``parameters`` (or at
the top), tagged ``injected-parameters``. A progress bar follows the cells; a failing cell
is reported with its number, its first lines and the error, and the exit code is 1.

``worker --notebook`` serves a notebook's instances after its kernel is gone: it runs the
notebook's *definition* cells in this process (``%%activity`` / ``%%workflow`` cells, with
any ``--start`` removed, and the plain code cells they need), then keeps the default app
open: waiting instances resume when their timer fires or their event arrives, and
interrupted ones resume at once. Skipped: cells with top-level ``await``, line magics
other than ``%load_ext``, other cell magics, and cells tagged ``skip-worker``.

The notebook layer is reached the way a user reaches it, through ``%load_ext romancy_nb``
in an IPython shell, so this edge does not import it.
"""

from __future__ import annotations

import ast
import json
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3

app = typer.Typer(
    name="romancy-nb",
    help="Run notebooks headless, and serve their workflows.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def _fail(message: str, code: int) -> typer.Exit:
    _console(stderr=True).print(f"error: {message}", markup=False)
    return typer.Exit(code)


def _load(path: Path) -> Any:
    import nbformat

    if not path.exists():
        raise _fail(f"no notebook at {path}", EXIT_NOT_FOUND)
    try:
        return nbformat.read(path, as_version=4)
    except Exception as error:
        raise _fail(f"{path} is not a readable notebook: {error}", EXIT_USAGE) from None


# parameters


def parse_parameters(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; a value is read as JSON when it parses (``3``, ``true``,
    ``[1, 2]``), else kept as a string."""
    parameters: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise _fail(f"-p {pair!r}: write -p name=value with a Python identifier", EXIT_USAGE)
        try:
            parameters[key] = json.loads(text)
        except ValueError:
            parameters[key] = text
    return parameters


def inject_parameters(notebook: Any, parameters: dict[str, Any]) -> None:
    """Insert the parameters cell after the ``parameters``-tagged cell (or first)."""
    import nbformat

    if not parameters:
        return
    lines = ["# Parameters (injected by romancy-nb run)"]
    lines += [f"{key} = {value!r}" for key, value in parameters.items()]
    cell = nbformat.v4.new_code_cell("\n".join(lines))
    cell.metadata["tags"] = ["injected-parameters"]
    position = 0
    for index, existing in enumerate(notebook.cells):
        if "parameters" in existing.get("metadata", {}).get("tags", []):
            position = index + 1
            break
    notebook.cells.insert(position, cell)


def _first_lines(source: str, count: int = 3) -> str:
    lines = source.strip().splitlines()
    text = "\n".join("    " + line for line in lines[:count])
    return text + ("\n    …" if len(lines) > count else "")


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@app.command("run")
def run_command(
    notebook: Annotated[Path, typer.Argument(help="The .ipynb file to execute.")],
    parameter: Annotated[
        list[str] | None,
        typer.Option("--parameter", "-p", metavar="KEY=VALUE", help="A parameter; repeatable."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the executed notebook (with outputs) here."),
    ] = None,
    kernel: Annotated[
        str | None, typer.Option("--kernel", "-k", help="Kernel name (default: the notebook's).")
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds one cell may run (0: no limit).")
    ] = 0,
) -> None:
    """Execute NOTEBOOK in a fresh kernel, in its own folder, like papermill."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = _load(notebook)
    inject_parameters(nb, parse_parameters(parameter or []))
    code_cells = [cell for cell in nb.cells if cell.cell_type == "code"]
    options: dict[str, Any] = {
        "timeout": timeout or None,
        "resources": {"metadata": {"path": str(notebook.resolve().parent)}},
    }
    if kernel:
        options["kernel_name"] = kernel
    client = NotebookClient(nb, **options)
    failed: dict[str, Any] = {}
    console = _console(stderr=True)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task(notebook.name, total=len(code_cells))

        def executed(cell: Any, cell_index: int, execute_reply: Any) -> None:
            progress.advance(task)

        def errored(cell: Any, cell_index: int, execute_reply: Any) -> None:
            failed.update(cell=cell, index=cell_index, reply=execute_reply)

        client.on_cell_executed = executed
        client.on_cell_error = errored
        try:
            client.execute()
        except CellExecutionError:
            pass
        except Exception as error:  # no such kernel, a dead kernel, a cell timeout...
            if output is not None:
                _write(nb, output)
            raise _fail(f"{notebook}: {type(error).__name__}: {error}", EXIT_ERROR) from None
    if output is not None:
        _write(nb, output)
    if failed:
        content = failed["reply"]["content"]
        cell = failed["cell"]
        number = code_cells.index(cell) + 1 if cell in code_cells else failed["index"] + 1
        trace = _ANSI.sub("", "\n".join(content.get("traceback", [])[-6:]))
        console.print(
            f"FAILED {notebook}: code cell {number} of {len(code_cells)} raised "
            f"{content.get('ename')}: {content.get('evalue')}\n{_first_lines(cell.source)}\n"
            f"{trace}",
            markup=False,
        )
        if output is not None:
            console.print(f"the executed notebook, outputs included: {output}", markup=False)
        raise typer.Exit(EXIT_ERROR)
    _console().print(f"ok: {notebook} ({len(code_cells)} code cells)", markup=False)


def _write(nb: Any, path: Path) -> None:
    import nbformat

    nbformat.write(nb, path)


# worker


def _has_top_level_await(source: str) -> bool:
    try:
        compile(source, "<cell>", "exec", dont_inherit=True)
    except SyntaxError:
        try:
            compile(
                source, "<cell>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
            )
        except SyntaxError:
            return False
        return True
    return False


_START = re.compile(r"\s--start(?:\s+(?:'[^']*'|\"[^\"]*\"|(?!-)\S+))?|\s--id\s+\S+")


def definition_cells(notebook: Any) -> list[str]:
    """The sources a worker runs: see the module docstring for the rule."""
    sources: list[str] = []
    for cell in notebook.cells:
        if cell.cell_type != "code" or "skip-worker" in cell.metadata.get("tags", []):
            continue
        source = cell.source.strip()
        if not source:
            continue
        first, _, body = source.partition("\n")
        if first.startswith("%%"):
            if first.split()[0] in ("%%workflow", "%%activity"):
                sources.append(_START.sub("", first) + "\n" + body)
            continue
        magics = [line for line in source.splitlines() if line.lstrip().startswith("%")]
        if any(not line.lstrip().startswith("%load_ext") for line in magics):
            continue
        # The worker loads the extension itself: drop %load_ext lines.
        code = "\n".join(
            line for line in source.splitlines() if not line.lstrip().startswith("%")
        ).strip()
        if code and not _has_top_level_await(code):
            sources.append(code)
    return sources


@app.command("worker")
def worker_command(
    notebook: Annotated[
        Path, typer.Option("--notebook", "-n", help="The notebook whose workflows to serve.")
    ],
    db: Annotated[
        str | None,
        typer.Option("--db", metavar="PATH", help="Database (default: romancy.db beside it)."),
    ] = None,
    duration: Annotated[
        float, typer.Option("--duration", help="Stop after this many seconds (0: run on).")
    ] = 0,
) -> None:
    """Load NOTEBOOK's definitions and serve its instances until stopped (Ctrl-C, SIGTERM)."""
    from IPython.core.interactiveshell import InteractiveShell

    nb = _load(notebook)
    folder = notebook.resolve().parent
    os.environ["ROMANCY_DB"] = str(Path(db).resolve()) if db else str(folder / "romancy.db")
    os.chdir(folder)
    sys.path.insert(0, str(folder))
    shell = InteractiveShell.instance()
    console = _console()
    for source in ["%load_ext romancy_nb", *definition_cells(nb)]:
        result = shell.run_cell(source, silent=True)
        if not result.success:
            error = result.error_before_exec or result.error_in_exec
            raise _fail(
                f"{notebook}: a definition cell failed: {type(error).__name__}: {error}\n"
                f"{_first_lines(source)}",
                EXIT_ERROR,
            )
    shell.run_cell("import romancy_nb as _rn\n_romancy_app = _rn.current_app()", silent=True)
    served = shell.user_ns["_romancy_app"]
    names = sorted(wf.name for wf in served.registry.workflows())
    console.print(
        f"serving {', '.join(names) or 'no workflows'} from {notebook} on {served.url}",
        markup=False,
    )
    from IPython.core.async_helpers import get_asyncio_loop

    loop = get_asyncio_loop()
    stop = loop.create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    if duration:
        loop.call_later(duration, lambda: stop.done() or stop.set_result(None))
    started = time.monotonic()
    loop.run_until_complete(stop)
    loop.run_until_complete(served.close())
    console.print(f"stopped after {time.monotonic() - started:.1f} s", markup=False)


if __name__ == "__main__":
    app(prog_name="romancy-nb")
