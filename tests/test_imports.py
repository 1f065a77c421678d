"""The package's import graph has no cycles, not even through function-level imports.

grimp (import-linter's graph builder) sees every import, including those inside functions;
imports under ``TYPE_CHECKING`` are left out: they exist only for the type checker, which
resolves them lazily, and the Protocols of ``romancy_nb.engine.runtime`` name the types
whose modules import them back.
"""

from __future__ import annotations

import grimp


def test_no_module_imports_itself_back() -> None:
    graph = grimp.build_graph("romancy_nb", exclude_type_checking_imports=True)
    cycles = set()
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in graph.modules:
                continue
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back:
                cycles.add(" -> ".join((module, *back)))
    assert sorted(cycles) == []
