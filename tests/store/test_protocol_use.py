"""The notebook layer and the CLI use the store only through the ``Store`` protocol.

So a second backend (PostgreSQL) serves them unchanged: no backend-only extras
(``read_table`` outside the protocol, ``.connection``, ``table_counts``) and no ``hasattr``
/ ``getattr`` probing of what a store happens to have.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from romancy_nb.store import Store, open_store

PACKAGE = Path(__file__).resolve().parents[2] / "romancy_nb"
CALLERS = sorted([*(PACKAGE / "notebook").rglob("*.py"), *(PACKAGE / "cli").rglob("*.py")])
MEMBERS = {name for name in vars(Store) if not name.startswith("_")} | set(Store.__annotations__)


def _store_uses(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, member) of every ``<something>.store.<member>`` in the tree."""
    return [
        (node.lineno, node.attr)
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "store"
    ]


def _probes(tree: ast.AST) -> list[tuple[int, str]]:
    """``hasattr(x.store, ...)`` / ``getattr(x.store, ...)`` calls."""
    return [
        (node.lineno, ast.unparse(node))
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("hasattr", "getattr")
        and node.args
        and "store" in ast.unparse(node.args[0])
    ]


@pytest.mark.parametrize("module", CALLERS, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_callers_use_only_protocol_members(module: Path) -> None:
    tree = ast.parse(module.read_text("utf-8"))
    outside = [(line, name) for line, name in _store_uses(tree) if name not in MEMBERS]
    assert outside == [], f"{module.name}: store members outside the Store protocol: {outside}"
    assert _probes(tree) == [], f"{module.name}: probes the store instead of the protocol"


def test_the_sqlite_store_answers_what_the_callers_need(tmp_path: Path) -> None:
    from romancy_nb.store.protocol import TableRows, WaitSpec

    store = open_store(tmp_path / "p.db")
    try:
        store.migrate()
        assert isinstance(store, Store)
        found = store.read_table("waits", {"instance_id": "nobody"})
        assert isinstance(found, TableRows) and found.rows == []
        assert "fire_at" in found.columns
        assert store.read_table("no_such_table") is None
        with pytest.raises(ValueError, match="no column"):
            store.read_table("waits", {"nope": 1})
        assert store.load_waits("nobody") == []
        assert WaitSpec._fields == ("step_id", "kind", "name", "input", "channel", "fire_at")
    finally:
        store.close()
