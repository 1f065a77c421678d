"""``romancy-nb run`` and ``romancy-nb worker --notebook``: notebooks without JupyterLab.

``run`` executes a notebook top to bottom in a fresh kernel with nbclient, papermill-style:
``-p key=value`` values go into a cell inserted after the cell tagged ``parameters`` (or at
the top), tagged ``injected-parameters``, written by papermill's translator for the
kernel's language (so ``-p x=NaN`` becomes ``x = float('nan')``). A progress bar follows
the cells; a failing or timed-out cell is reported with its number, its first lines and the
error, and the exit code is 1. The executed notebook is always written, outputs included:
to ``-o OUT``, else beside the input as ``NB.nbconvert.ipynb`` (nbconvert's name). The
kernel talks over IPC sockets, not unencrypted loopback TCP.

``worker --notebook`` serves a notebook's instances after its kernel is gone: it runs the
notebook's *definition* cells in this process (``%%activity`` / ``%%workflow`` cells, with
any ``--start`` removed, and the plain code cells they need), then keeps the default app
open: waiting instances resume when their timer fires or their event arrives, and
interrupted ones resume at once. Skipped: cells with top-level ``await``, cells with any
IPython syntax (shell escapes ``!cmd``, help ``x?``, line magics other than ``%load_ext``,
cell magics other than the two), as IPython's own input transformer reads them, and cells
tagged ``skip-worker``. Each cell is named on stderr before it runs, or as skipped.

The notebook layer is reached the way a user reaches it, through ``%load_ext romancy_nb``
in an IPython shell, so this edge does not import it.
"""

from __future__ import annotations

import ast
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3


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


def inject_parameters(notebook: Any, parameters: dict[str, Any], kernel: str | None = None) -> None:
    """Insert the parameters cell after the ``parameters``-tagged cell (or first).

    papermill's translator writes the values, for the language of the kernel that runs
    the notebook (``kernel``, else the notebook's), so every value ``parse_parameters``
    reads (NaN and infinities included) is valid source there.
    """
    import nbformat
    from papermill.exceptions import PapermillException
    from papermill.translators import translate_parameters

    if not parameters:
        return
    spec = notebook.metadata.get("kernelspec", {})
    language = spec.get("language") or notebook.metadata.get("language_info", {}).get("name")
    try:
        source = translate_parameters(
            kernel or spec.get("name") or "python3",
            language or "python",
            parameters,
            "Parameters (injected by romancy-nb run)",
        )
    except PapermillException as error:  # no translator for this kernel's language
        raise _fail(f"-p: {error}", EXIT_USAGE) from None
    cell = nbformat.v4.new_code_cell(source.rstrip("\n"))
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


def default_output(notebook: Path) -> Path:
    """Where ``run`` writes the executed notebook without ``-o``: ``NB.nbconvert.ipynb``
    beside ``NB.ipynb``, the name ``jupyter nbconvert --execute --to notebook`` uses."""
    return notebook.with_name(f"{notebook.stem}.nbconvert.ipynb")


def kernel_config(sockets: Path) -> Any:
    """The kernel's channels over local IPC sockets in the folder ``sockets`` (an absolute
    path: the kernel runs in the notebook's folder) instead of unencrypted loopback TCP,
    which ipykernel warns about on stderr at every start. Windows has no IPC transport."""
    from traitlets.config import Config

    if sys.platform == "win32":
        return Config()
    return Config(KernelManager={"transport": "ipc", "ip": str(sockets / "kernel")})


def run_command(
    ctx: typer.Context,
    notebook: Annotated[Path, typer.Argument(help="The .ipynb file to execute.")],
    parameter: Annotated[
        list[str] | None,
        typer.Option("--parameter", "-p", metavar="KEY=VALUE", help="A parameter; repeatable."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            metavar="OUT",
            help="Write the executed notebook (with its outputs) here "
            "(default: NB.nbconvert.ipynb beside NB.ipynb, as nbconvert does).",
        ),
    ] = None,
    kernel: Annotated[
        str | None, typer.Option("--kernel", "-k", help="Kernel name (default: the notebook's).")
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds one cell may run (0: no limit).")
    ] = 0,
) -> None:
    """Execute NOTEBOOK in a fresh kernel, in its own folder, like papermill.

    The executed notebook, outputs included, is written to OUT (default:
    NB.nbconvert.ipynb beside NB.ipynb), also when a cell fails or times out; the
    failing cell is named by its number among the code cells. Exit code 1 on a failure.
    The global --db (or $ROMANCY_DB) is the kernel's $ROMANCY_DB: the notebook's default
    app opens that database.

    Example:

      romancy-nb --db runs.db run report.ipynb -p day=2026-12-01 -o out/report.ipynb
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    from romancy_nb.cli.common import DB_ENV, global_options

    db = global_options(ctx).db
    if db:  # the kernel inherits this environment; it runs in the notebook's folder
        os.environ[DB_ENV] = db if "://" in db else str(Path(db).resolve())
    nb = _load(notebook)
    out = output if output is not None else default_output(notebook)
    inject_parameters(nb, parse_parameters(parameter or []), kernel)
    code_cells = [cell for cell in nb.cells if cell.cell_type == "code"]
    options: dict[str, Any] = {
        "timeout": timeout or None,
        "resources": {"metadata": {"path": str(notebook.resolve().parent)}},
    }
    if kernel:
        options["kernel_name"] = kernel
    sockets = tempfile.TemporaryDirectory(prefix="romancy-nb-")
    options["config"] = kernel_config(Path(sockets.name))
    client = NotebookClient(nb, **options)
    running: dict[str, Any] = {}
    failed: dict[str, Any] = {}
    broken: Exception | None = None
    console = _console(stderr=True)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task(notebook.name, total=len(code_cells))

        def starting(cell: Any, cell_index: int) -> None:
            running.update(cell=cell, index=cell_index)

        def executed(cell: Any, cell_index: int, execute_reply: Any) -> None:
            progress.advance(task)

        def errored(cell: Any, cell_index: int, execute_reply: Any) -> None:
            failed.update(cell=cell, index=cell_index, reply=execute_reply)

        client.on_cell_execute = starting
        client.on_cell_executed = executed
        client.on_cell_error = errored
        try:
            client.execute()
        except CellExecutionError:
            pass
        except Exception as error:  # no such kernel, a dead kernel, a cell timeout...
            broken = error
        finally:
            sockets.cleanup()
    if broken is not None and not running:  # no cell ran: the kernel did not start
        raise _fail(f"{notebook}: {type(broken).__name__}: {broken}", EXIT_ERROR)
    _write(nb, out)

    def where(cell: Any, index: int) -> str:
        number = code_cells.index(cell) + 1 if cell in code_cells else index + 1
        return f"FAILED {notebook}: code cell {number} of {len(code_cells)}"

    if failed:
        content = failed["reply"]["content"]
        trace = _ANSI.sub("", "\n".join(content.get("traceback", [])[-6:]))
        report = (
            f"{where(failed['cell'], failed['index'])} raised "
            f"{content.get('ename')}: {content.get('evalue')}\n"
            f"{_first_lines(failed['cell'].source)}\n{trace}"
        )
    elif isinstance(broken, CellTimeoutError):
        report = (
            f"{where(running['cell'], running['index'])} timed out after {timeout:g} s "
            f"(--timeout)\n{_first_lines(running['cell'].source)}"
        )
    elif broken is not None:  # the kernel died in a cell
        report = (
            f"{where(running['cell'], running['index'])}: {type(broken).__name__}: "
            f"{broken}\n{_first_lines(running['cell'].source)}"
        )
    else:
        _console().print(
            f"ok: {notebook} ({len(code_cells)} code cells); executed notebook: {out}",
            markup=False,
        )
        return
    console.print(report, markup=False)
    console.print(f"the executed notebook, outputs included: {out}", markup=False)
    raise typer.Exit(EXIT_ERROR)


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

_SHELL_CALLS = {
    "system": "a shell escape (!)",
    "getoutput": "a shell escape (!)",
    "run_line_magic": "a line magic (%)",
    "run_cell_magic": "a cell magic (%%)",
}
"""The ``get_ipython()`` methods that IPython's input transformer turns its syntax into."""

_DEFINITION_MAGICS = (("run_cell_magic", "workflow"), ("run_cell_magic", "activity"))


class Definition(NamedTuple):
    """A code cell as the worker sees it: the source it runs, or why it leaves the cell out."""

    number: int
    """The cell's number among the notebook's code cells, 1-based (as ``run`` reports)."""
    source: str | None
    skipped: str | None = None


def _shell_calls(tree: ast.AST) -> list[tuple[ast.Call, str, str]]:
    """Each ``get_ipython().<method>(...)`` call: (call, method, magic name or command)."""
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in _SHELL_CALLS
            and isinstance(node.func.value, ast.Call)
            and isinstance(node.func.value.func, ast.Name)
            and node.func.value.func.id == "get_ipython"
        ):
            first = node.args[0] if node.args else None
            name = first.value if isinstance(first, ast.Constant) else "?"
            found.append((node, node.func.attr, str(name)))
    return found


def _top_call(statement: ast.stmt) -> tuple[str, str] | None:
    """(method, name) when ``statement`` is one bare ``get_ipython()`` call: a magic line."""
    if isinstance(statement, ast.Expr):
        calls = _shell_calls(statement)
        if len(calls) == 1 and calls[0][0] is statement.value:
            return calls[0][1], calls[0][2]
    return None


def _plan(source: str) -> tuple[str | None, str | None]:
    """(code to run, None), or (None, why the worker leaves the cell out).

    IPython's own input transformer decides what is IPython syntax (``!cmd``, ``%line``,
    ``%%cell``, ``x?``, ``x = !cmd``): it turns each into a ``get_ipython()`` call. A cell
    with any such call other than ``%%workflow`` / ``%%activity`` and ``%load_ext`` lines
    is not run, so a notebook's shell lines never run in the worker.
    """
    from IPython.core.inputtransformer2 import TransformerManager

    python = TransformerManager().transform_cell(source)
    try:
        tree = ast.parse(python)
    except SyntaxError:
        return source, None  # run it: the worker reports the error as the kernel would
    if len(tree.body) == 1 and _top_call(tree.body[0]) in _DEFINITION_MAGICS:
        first, _, body = source.partition("\n")
        return _START.sub("", first) + "\n" + body, None
    # The worker loads romancy_nb itself: %load_ext lines are dropped, not run.
    loads = [s for s in tree.body if _top_call(s) == ("run_line_magic", "load_ext")]
    loaded = {id(s.value) for s in loads if isinstance(s, ast.Expr)}
    for call, method, name in _shell_calls(tree):
        if id(call) not in loaded:
            return None, f"{_SHELL_CALLS[method]}: {name}"
    if loads:
        dropped = {n for s in loads for n in range(s.lineno, (s.end_lineno or s.lineno) + 1)}
        lines = python.splitlines()
        source = "\n".join(line for n, line in enumerate(lines, 1) if n not in dropped).strip()
        if not source:
            return None, None
    if _has_top_level_await(source):
        return None, "top-level await"
    return source, None


def definitions(notebook: Any) -> list[Definition]:
    """What the worker does with each code cell: see the module docstring for the rule."""
    found: list[Definition] = []
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    for number, cell in enumerate(code_cells, 1):
        source = cell.source.strip()
        if not source or "skip-worker" in cell.metadata.get("tags", []):
            continue
        code, skipped = _plan(source)
        if code is not None or skipped is not None:
            found.append(Definition(number, code, skipped))
    return found


def definition_cells(notebook: Any) -> list[str]:
    """The sources a worker runs, in order."""
    return [d.source for d in definitions(notebook) if d.source is not None]


def _run_definition(shell: Any, source: str, where: str) -> None:
    """Run one definition cell; any failure, ``SystemExit`` included, stops the worker."""
    result = shell.run_cell(source, silent=True)
    if not result.success:
        error = result.error_before_exec or result.error_in_exec
        raise _fail(
            f"{where} failed: {type(error).__name__}: {error}\n{_first_lines(source)}",
            EXIT_ERROR,
        )


def load_notebook_app(notebook: Path, db: str | None) -> tuple[Any, Any]:
    """Run NOTEBOOK's definition cells in an IPython shell here; (its default app, the
    shell's event loop, which that app must run on). ``db``: default romancy.db beside it."""
    from IPython.core.async_helpers import get_asyncio_loop
    from IPython.core.interactiveshell import InteractiveShell

    nb = _load(notebook)
    folder = notebook.resolve().parent
    if db is None:
        os.environ["ROMANCY_DB"] = str(folder / "romancy.db")
    elif "://" not in db:
        os.environ["ROMANCY_DB"] = str(Path(db).resolve())
    else:
        os.environ["ROMANCY_DB"] = db
    os.chdir(folder)
    sys.path.insert(0, str(folder))
    shell = InteractiveShell.instance()
    _run_definition(shell, "%load_ext romancy_nb", f"{notebook}: %load_ext romancy_nb")
    log = _console(stderr=True)
    for definition in definitions(nb):
        where = f"{notebook}, code cell {definition.number}"
        if definition.source is None:
            log.print(f"{where}: skipped, {definition.skipped}", markup=False)
            continue
        # Said before the cell runs, so a cell that ends the process (os._exit, a crash in
        # an extension) is named by the last line the worker wrote.
        log.print(f"{where}: loading", markup=False)
        _run_definition(shell, definition.source, where)
    shell.run_cell("import romancy_nb as _rn\n_romancy_app = _rn.current_app()", silent=True)
    return shell.user_ns["_romancy_app"], get_asyncio_loop()
