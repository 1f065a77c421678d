"""Errors as stored JSON, and back.

A failed step or workflow is stored with its class path, message, traceback and, for
romancy_nb's own errors, their fields. Rebuilding gives the same class again where it can be
imported (so ``except TerminalError`` works the same in replay as in the first run), and
:class:`~romancy_nb.errors.WorkflowFailed` naming the original class where it cannot.
"""

from __future__ import annotations

import importlib
import json
import traceback
from typing import Any

from romancy_nb.errors import AttemptError, RetryExhaustedError, RomancyError, WorkflowFailed


def class_path(error: BaseException) -> str:
    cls = type(error)
    return f"{cls.__module__}.{cls.__qualname__}"


def error_to_json(error: BaseException) -> str:
    """JSON text describing ``error`` (fields of our own errors included)."""
    fields: dict[str, Any] = {}
    if isinstance(error, RomancyError):
        fields = {k: _plain(v) for k, v in error._fields.items()}
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


def _find_class(path: str) -> type[BaseException] | None:
    module_name, _, qualname = path.rpartition(".")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError, ValueError):
        return None
    return obj if isinstance(obj, type) and issubclass(obj, BaseException) else None


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
