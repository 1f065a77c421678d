"""What ``find_instances`` accepts, checked the same way for every backend.

``InstanceQuery.input_equals`` maps dot paths into the stored input (``"order.customer.id"``)
to the value expected there: a string, a number, a boolean or None. A string matches only
a string, a number any equal number (``1`` matches ``1.0``; integers beyond 64 bits match
exactly), a boolean only a boolean, None only a JSON ``null`` (not a missing key).
"""

from __future__ import annotations

from typing import Any


def split_path(dotted: Any) -> list[str]:
    """``"a.b"`` → ``["a", "b"]``; a clear error for anything that is not such a path."""
    if not isinstance(dotted, str):
        raise TypeError(
            f"find_instances keys are dot paths (str) like 'order.customer.id', not "
            f"{dotted!r} ({type(dotted).__name__})"
        )
    keys = dotted.split(".")
    if not dotted or any(not key for key in keys):
        raise ValueError(f"invalid input path {dotted!r}: use dot-separated keys like 'a.b'")
    return keys


def check_value(dotted: str, value: Any) -> None:
    """Refuse a value ``find_instances`` cannot match (a list, a dict, an object)."""
    if value is None or isinstance(value, str | int | float):  # bool is an int
        return
    raise TypeError(
        f"find_instances matches strings, numbers, booleans and None, not "
        f"{type(value).__name__} (at {dotted!r})"
    )


__all__ = ["check_value", "split_path"]
