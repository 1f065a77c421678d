"""Instance ids a user passes in: refused at the call when the store could not keep them.

An id is a key the user will type again (``app.get_instance``, ``romancy-nb get ID``), so it
must be a non-empty ``str`` that the store can encode as UTF-8 and a shell can pass as an
argument. Without this check ``instance_id=123`` was stored as ``"123"`` (and then never
found by ``123`` again), ``""`` silently became a UUID, and a lone surrogate surfaced as a
raw ``UnicodeEncodeError`` from deep inside the store.
"""

from __future__ import annotations

from romancy_nb.engine.codec import InvalidArgumentsError


def validate_instance_id(value: object) -> str:
    """``value`` if it can be an instance id; else an :class:`InvalidArgumentsError` saying why.

    ``None`` is not handled here: callers that accept it generate a UUID for it.
    """
    if not isinstance(value, str):
        raise InvalidArgumentsError(
            f"instance_id must be a str, not {type(value).__name__} ({value!r}); "
            "pass None to get a generated UUID",
            instance_id=repr(value),
        )
    if not value:
        raise InvalidArgumentsError(
            "instance_id must not be empty; pass None to get a generated UUID",
            instance_id=value,
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InvalidArgumentsError(
            f"instance_id {value!r} cannot be stored: character {error.start} "
            f"({value[error.start]!r}) is a lone surrogate, not text UTF-8 can encode",
            instance_id=repr(value),
        ) from None
    if "\x00" in value:
        # Valid in SQLite, but no shell can pass it to `romancy-nb get`.
        raise InvalidArgumentsError(
            f"instance_id {value!r} contains a NUL character", instance_id=repr(value)
        )
    return value
