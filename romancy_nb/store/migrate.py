"""A small runner for dbmate-format migrations.

Each backend keeps its migrations as ``VERSION_name.sql`` files with ``-- migrate:up`` and
``-- migrate:down`` sections, exactly as dbmate writes them, and records applied versions in
a ``schema_migrations`` table, so the same folder can also be driven by dbmate itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

_FILE = re.compile(r"^(?P<version>\d+)_(?P<name>[\w-]+)\.sql$")
_SECTION = re.compile(r"^--\s*migrate:(up|down)\b.*$", re.MULTILINE)


@dataclass(frozen=True)
class Migration:
    """One migration file split into its two directions."""

    version: str
    name: str
    up: str
    down: str


def parse(version: str, name: str, text: str) -> Migration:
    """Split a dbmate file into its up and down SQL; reject a file without ``migrate:up``."""
    parts = _SECTION.split(text)
    sections: dict[str, str] = {}
    for direction, body in zip(parts[1::2], parts[2::2], strict=True):
        sections[direction] = body.strip()
    if "up" not in sections:
        raise ValueError(f"migration {version}_{name}.sql has no '-- migrate:up' section")
    return Migration(version, name, sections["up"], sections.get("down", ""))


def load(package: str) -> list[Migration]:
    """Read every migration shipped in ``package`` (a folder inside the wheel), oldest first."""
    found = []
    for entry in resources.files(package).iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(parse(match["version"], match["name"], entry.read_text("utf-8")))
    return sorted(found, key=lambda m: m.version)


def pending(migrations: list[Migration], applied: set[str]) -> list[Migration]:
    """The migrations not yet applied, in order."""
    return [m for m in migrations if m.version not in applied]


def apply_all(
    migrations: list[Migration],
    applied: set[str],
    apply_one: Callable[[Migration], bool],
) -> list[str]:
    """Apply what is pending through the backend's ``apply_one`` (one transaction each).

    ``apply_one`` returns False when it found the migration applied already (by another
    process, while it waited for the lock): only the versions this call applied are listed.
    """
    return [m.version for m in pending(migrations, applied) if apply_one(m)]
