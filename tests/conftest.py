"""Fixtures shared by the whole suite: a fresh on-disk store per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import romancy_nb as rn

FAST_RETRY = rn.RetryPolicy.fixed(3, 0.001)
"""Three quick attempts, so retry tests do not sleep the default 1 s / 2 s / 4 s."""


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "romancy.db"


@pytest.fixture
async def app(db_path: Path) -> AsyncIterator[rn.App]:
    async with rn.App(db_path, default_retry=FAST_RETRY) as app:
        yield app
