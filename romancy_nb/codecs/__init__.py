"""Value codecs outside the engine: how classes JSON cannot hold are stored.

The engine's codec (:mod:`romancy_nb.engine.codec`) knows only JSON's own values and
``bytes``; each module here registers a :class:`~romancy_nb.engine.codec.Codec` for one
library's classes without importing that library until one of its values is really stored
or read. :func:`install` runs when ``romancy_nb`` is imported, so scripts, workers and
notebooks all read the same stored values.
"""

from __future__ import annotations

from romancy_nb.codecs import pandas
from romancy_nb.engine import codec

BUILTIN = (pandas.DATAFRAME,)
"""The codecs every romancy_nb process registers."""


def install() -> None:
    """Register the built-in codecs (once: importing romancy_nb again does not repeat it)."""
    for builtin in BUILTIN:
        if codec.for_tag(builtin.tag) is None:
            codec.register(builtin)


__all__ = ["BUILTIN", "install"]
