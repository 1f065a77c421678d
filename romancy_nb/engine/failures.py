"""Errors as stored JSON, and back.

A failed step or workflow is stored with its class path, message, traceback and, for
romancy_nb's own errors, their fields. Rebuilding gives the same class again where it is
known (so ``except TerminalError`` works the same in replay as in the first run), and
:class:`~romancy_nb.errors.WorkflowFailed` naming the original class where it is not.

A class is known when it is registered (:func:`register_error`) or defined in a module this
process has already loaded (builtins, romancy_nb's own errors, the user's modules and
notebook). The database file never decides what gets imported: a stored ``type`` naming an
unloaded module would otherwise run that module's code in whoever reads the row.
"""

from __future__ import annotations

import json
import sys
import traceback
from types import ModuleType
from typing import Any, TypeVar

from romancy_nb.errors import AttemptError, RetryExhaustedError, RomancyError, WorkflowFailed


def class_path(error: BaseException) -> str:
    return _path_of(type(error))


def _path_of(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def error_to_json(error: BaseException) -> str:
    """JSON text describing ``error`` (fields of our own errors included)."""
    fields: dict[str, Any] = {}
    if isinstance(error, RomancyError):
        fields = {k: _plain(v) for k, v in error.fields.items()}
    document = {
        "type": class_path(error),
        "message": str(error),
        "traceback": "".join(traceback.format_exception(error)),
        "fields": fields,
    }
    return json.dumps(document, default=repr)


def _plain(value: Any) -> Any:
    if isinstance(value, AttemptError):
        return {
            "attempt": value.attempt,
            "error_type": value.error_type,
            "message": value.message,
            "at": value.at,
        }
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


E = TypeVar("E", bound=type[Exception])

_registered: dict[str, type[Exception]] = {}


def register_error(cls: E) -> E:
    """Let stored errors of ``cls`` be rebuilt as ``cls`` even before its module is loaded.

    Only needed for a class whose module the reading process may not have imported when it
    asks for a result (a class in a loaded module is found without this). Usable as a
    class decorator.
    """
    if not (isinstance(cls, type) and issubclass(cls, Exception)):
        raise TypeError(f"register_error takes an Exception subclass, not {cls!r}")
    _registered[_path_of(cls)] = cls
    return cls


def _find_class(path: str) -> type[Exception] | None:
    """The class ``path`` names, if registered or defined in an already loaded module.

    Looked up in ``__dict__``s, never with ``getattr``: a module-level ``__getattr__``
    (PEP 562) could import or run code on the database's say-so. ``BaseException``s that are
    not ``Exception``s (``SystemExit``, the engine's own signals) are never rebuilt: the
    engine records only ``Exception``s, so such a ``type`` can only come from a crafted row.
    """
    if path in _registered:
        return _registered[path]
    parts = path.split(".")
    # The module is the longest loaded prefix: "pkg.mod.Outer.Inner" may be a nested class.
    for split in range(len(parts) - 1, 0, -1):
        obj: Any = sys.modules.get(".".join(parts[:split]))
        if obj is None:
            continue
        for part in parts[split:]:
            obj = vars(obj).get(part) if isinstance(obj, (ModuleType, type)) else None
        return obj if isinstance(obj, type) and issubclass(obj, Exception) else None
    return None


def error_from_json(text: str) -> BaseException:
    """The error that ``error_to_json`` stored, rebuilt as closely as possible."""
    document = json.loads(text)
    cls = _find_class(document["type"])
    message = document["message"]
    fields = document.get("fields") or {}
    error: BaseException | None = None
    if cls is RetryExhaustedError:
        attempts = [AttemptError(**a) for a in fields.get("attempts", [])]
        error = RetryExhaustedError(
            fields.get("activity", "?"), fields.get("step_id", "?"), attempts
        )
    elif cls is not None and issubclass(cls, RomancyError):
        error = RomancyError.__new__(cls)
        RomancyError.__init__(error, message, **fields)
    elif cls is not None:
        try:
            error = cls(message)
        except Exception:
            error = None
    if error is None:
        error = WorkflowFailed(
            f"{document['type']}: {message}",
            error_type=document["type"],
            traceback=document.get("traceback", ""),
        )
    error.add_note(
        f"(rebuilt from the store; original traceback:)\n{document.get('traceback', '')}"
    )
    return error


def attempt_error(attempt: int, error: BaseException, at: float) -> AttemptError:
    return AttemptError(attempt, class_path(error), str(error), at)


def attempt_from_json(attempt: int, text: str, at: float) -> AttemptError:
    """A recorded attempt's error, as the summary ``RetryExhaustedError`` lists."""
    document = json.loads(text)
    return AttemptError(attempt, document["type"], document["message"], at)
