"""Leader election on SQLite: a lease per role in the ``leaders`` table.

One statement takes or renews a role (an upsert whose update applies only when the row is
ours or expired), so two processes asking at once never both win: SQLite runs the two
statements one after the other.
"""

from __future__ import annotations

from romancy_nb.store.sqlite.connections import Connections

_LEAD = (
    "INSERT INTO leaders (role, holder, expires_at) VALUES (?, ?, ?) "
    "ON CONFLICT (role) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at "
    "WHERE leaders.holder = excluded.holder OR leaders.expires_at < ?"
)


class Leaders:
    """``lead`` / ``resign`` / ``leader`` of :class:`~romancy_nb.store.sqlite.store.SqliteStore`."""

    def __init__(self, connections: Connections) -> None:
        self._c = connections

    def lead(self, role: str, worker_id: str, now: float, ttl: float) -> bool:
        return self._c.write(_LEAD, (role, worker_id, now + ttl, now)) == 1

    def resign(self, role: str, worker_id: str) -> None:
        self._c.write("DELETE FROM leaders WHERE role = ? AND holder = ?", (role, worker_id))

    def leader(self, role: str) -> tuple[str, float] | None:
        rows = self._c.rows("SELECT holder, expires_at FROM leaders WHERE role = ?", (role,))
        return (rows[0][0], rows[0][1]) if rows else None
