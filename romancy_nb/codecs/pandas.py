"""pandas DataFrames as a tagged JSON table that keeps every column's dtype.

Recognised by class name and module, so pandas is imported only when a DataFrame is really
stored or read back.
"""

from __future__ import annotations

import io
from typing import Any

from romancy_nb.engine.codec import Codec


def _is_dataframe(cls: type) -> bool:
    return cls.__name__ == "DataFrame" and str(getattr(cls, "__module__", "")).startswith("pandas")


def _encode(frame: Any) -> dict[str, Any]:
    # orient="table" keeps the index and a schema; the dtypes list restores what the
    # schema cannot say (categorical, nullable Int64, timezone-aware datetimes...).
    return {
        "table": frame.to_json(orient="table", date_unit="ns"),
        "dtypes": [str(dtype) for dtype in frame.dtypes],
    }


def _decode(fields: dict[str, Any]) -> Any:
    import pandas as pd

    frame = pd.read_json(io.StringIO(fields["table"]), orient="table")
    for column, dtype in zip(frame.columns, fields["dtypes"], strict=True):
        if str(frame[column].dtype) != dtype:
            frame[column] = frame[column].astype(dtype)
    return frame


DATAFRAME = Codec("pandas.DataFrame", _is_dataframe, _encode, _decode)
"""The codec for ``pandas.DataFrame`` (tag ``pandas.DataFrame``)."""
