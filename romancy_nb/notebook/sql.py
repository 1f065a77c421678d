"""``%%sql``: DuckDB over the store's tables and the DataFrames of the user namespace.

Only the tables a query names are loaded. Store tables are registered under their own names
(``workflow_instances``, ``workflow_history``, ``waits``, ``channel_messages``, ...) and
under the view names ``instances``, ``history``, ``timers``, ``messages``; JSON columns stay
JSON text, so DuckDB's ``json_extract`` / ``->>`` work on them. A DataFrame variable of the
namespace is visible under its variable name (it wins over a store table of the same name).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from romancy_nb.notebook import views

if TYPE_CHECKING:
    import pandas as pd

    from romancy_nb.engine import App

VIEW_TABLES = {
    "instances": "workflow_instances",
    "history": "workflow_history",
    "timers": "waits",
    "messages": "channel_messages",
}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def run_sql(query: str, app: App, namespace: dict[str, Any] | None = None) -> pd.DataFrame:
    """Run ``query`` with DuckDB and return the result as a DataFrame."""
    import duckdb
    import pandas as pd

    names = set(_IDENTIFIER.findall(query))
    connection = duckdb.connect()
    try:
        for name in sorted(names):
            value = (namespace or {}).get(name)
            if isinstance(value, pd.DataFrame):
                connection.register(name, value)
                continue
            frame = views.read(app, VIEW_TABLES.get(name, name), decode_json=False)
            if frame is not None:
                connection.register(name, frame)
        return connection.execute(query).df()
    finally:
        connection.close()
