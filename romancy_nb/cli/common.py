"""What every command shares: the database option, module imports, exit codes, errors.

Exit codes mean something to scripts: 0 ok, 1 a runtime or workflow error, 2 a usage error
(typer's own), 3 something named does not exist (an instance id, a database file).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
import typer.core
from rich.console import Console
from rich.text import Text

import romancy_nb as rn
from romancy_nb.store import is_server_url

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3

DEFAULT_DB = "romancy.db"
DB_ENV = "ROMANCY_DB"
DEBUG_ENV = "ROMANCY_DEBUG"
"""Set to 1 to let an unexpected error show its traceback instead of a one-line summary."""

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class GlobalOptions:
    """Options given before the command name (``romancy-nb --db x.db list``)."""

    db: str | None = None
    imports: list[str] = field(default_factory=list)


class CliError(Exception):
    """An error the CLI reports in one line and turns into an exit code."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


class _FlagsTakeNoValue:
    """Help that shows no value placeholder on a flag.

    typer's rich help prints a type for every option, flags included (``--json <bool>``,
    ``--help <bool>``), as if they took a value. An empty metavar prints nothing there; the
    help option is made per command, so it is fixed where the parameters are listed.
    """

    def get_params(self, ctx: Any) -> list[Any]:
        params: list[Any] = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if isinstance(param, typer.core.TyperOption) and param.is_flag:
                param.metavar = param.metavar or ""
        return params


class Command(_FlagsTakeNoValue, typer.core.TyperCommand):
    """Every ``romancy-nb`` command (``app.command(name, cls=Command)``)."""


class Group(_FlagsTakeNoValue, typer.core.TyperGroup):
    """The ``romancy-nb`` command group itself (``typer.Typer(cls=Group)``)."""


PIPE_WIDTH = 200
"""Line width when stdout is not a terminal: piped tables stay one row per line."""


def stdout() -> Console:
    # Built per call, not at import: CliRunner swaps sys.stdout for each invocation.
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = PIPE_WIDTH
    return console


def stderr() -> Console:
    return Console(stderr=True, highlight=False)


def global_options(ctx: typer.Context) -> GlobalOptions:
    obj = ctx.find_object(GlobalOptions)
    return obj or GlobalOptions(db=os.environ.get(DB_ENV) or None)


def resolve_db(ctx: typer.Context, db: str | None) -> str:
    """The command's ``--db``, else the global ``--db`` / ``$ROMANCY_DB``, else romancy.db."""
    return db or global_options(ctx).db or DEFAULT_DB


def import_modules(names: list[str], option: str = "--import") -> None:
    """Import user modules (``pkg.flows`` or ``path/to/flows.py``) so their workflows register.

    The current folder is put on ``sys.path`` first, as ``python -m`` does, so a module
    beside the database is found without installing it.
    """
    if names and "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in names:
        if name.endswith(".py") or os.sep in name:
            _import_file(Path(name), option)
            continue
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name and name.startswith(error.name):
                raise CliError(
                    f"{option} {name}: no module named {error.name!r} (run from the folder "
                    "that holds it, or give a path to the .py file)",
                    EXIT_USAGE,
                ) from None
            raise


def _import_file(path: Path, option: str) -> None:
    if not path.is_file():
        raise CliError(f"{option} {path}: no such file", EXIT_USAGE)
    name = path.stem
    loaded = sys.modules.get(name)
    if loaded is not None and Path(getattr(loaded, "__file__", "") or "").resolve() == (
        path.resolve()
    ):
        return
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise CliError(f"{option} {path}: not an importable Python file", EXIT_USAGE)
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs, so pydantic and dataclasses can resolve its own names.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise


@contextmanager
def open_app(db: str, *, must_exist: bool = True, **settings: Any) -> Iterator[rn.App]:
    """An :class:`~romancy_nb.App` on ``db`` for management calls; its store closed after.

    Read commands refuse a missing file rather than create an empty database where a typo
    in ``--db`` pointed. ``settings`` are ``App`` keyword arguments.
    """
    if (
        must_exist
        and db != ":memory:"
        and not is_server_url(db)
        and not Path(db).expanduser().exists()
    ):
        raise CliError(f"no database at {db} (give --db PATH or set {DB_ENV})", EXIT_NOT_FOUND)
    app = rn.App(db, **settings)
    try:
        yield app
    finally:
        # Management calls reopen the store without opening the app, and App.close() only
        # closes what open() started, so close the store itself (closing twice is harmless).
        app.store.close()


def instance_not_found(instance_id: str, db: str) -> CliError:
    return CliError(f"no instance {instance_id!r} in {db}", EXIT_NOT_FOUND)


def handle_errors(fn: F) -> F:
    """Turn errors into a readable line on stderr and a meaningful exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.TyperException, typer.Exit, typer.Abort):
            raise  # usage errors and exits: typer prints them and exits with its own codes
        except CliError as error:
            fail(str(error), error.code)
        except rn.WorkflowNotFound as error:
            fail(str(error), EXIT_NOT_FOUND)
        except rn.RomancyError as error:
            fail(f"{type(error).__name__}: {error}", EXIT_ERROR)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except Exception as error:
            if os.environ.get(DEBUG_ENV):
                raise
            fail(
                f"unexpected {type(error).__name__}: {error}\n"
                f"(set {DEBUG_ENV}=1 to see the traceback)",
                EXIT_ERROR,
            )

    return wrapper  # type: ignore[return-value]


def fail(message: str, code: int) -> NoReturn:
    """Print ``error: message`` to stderr and exit with ``code``."""
    stderr().print(Text("error: ", style="bold red") + Text(message))
    raise typer.Exit(code)
