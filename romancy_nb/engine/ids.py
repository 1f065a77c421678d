"""Instance ids a user passes in: refused at the call when the store could not keep them.

An id is a key the user will type again (``app.get_instance``, ``romancy-nb get ID``), so it
must be a non-empty ``str`` that the store can encode as UTF-8 and a shell can pass as an
argument. Without this check ``instance_id=123`` was stored as ``"123"``, ``""`` silently
became a UUID, and a lone surrogate surfaced as a raw ``UnicodeEncodeError`` from deep
inside the store.
"""

from __future__ import annotations

from romancy_nb.engine.codec import InvalidArgumentsError


def instance_id_problem(value: object) -> str | None:
    """What keeps ``value`` from being an instance id (a short phrase), or None if nothing."""
    if not isinstance(value, str):
        return f"must be a str, not {type(value).__name__}"
    if not value:
        return "must not be empty"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        return (
            f"has a lone surrogate ({value[error.start]!r} at {error.start}), "
            "which UTF-8 cannot encode"
        )
    if "\x00" in value:  # valid in SQLite, but no shell can pass it to `romancy-nb get`
        return "contains a NUL character"
    return None


def validate_instance_id(value: object) -> str:
    """``value`` if it can be an instance id; else an :class:`InvalidArgumentsError` saying why.

    ``None`` is not handled here: callers that accept it generate a UUID for it. The error's
    ``problem`` field is the reason alone, for callers (the CLI) that phrase their own.
    """
    problem = instance_id_problem(value)
    if problem is None and isinstance(value, str):
        return value
    hint = "; pass None to get a generated UUID" if not value or not isinstance(value, str) else ""
    raise InvalidArgumentsError(
        f"instance_id {value!r} {problem}{hint}", instance_id=repr(value), problem=problem
    )
