"""``App.open`` called again while it is opening opens the app once.

It happens in a notebook: ``%romancy config --db URL`` schedules the app's open on the
kernel's loop, and the next cell's ``await app.start(...)`` opens it too while the first
open still waits on the store (migrations, registration).
"""

from __future__ import annotations

import asyncio

import romancy_nb as rn
from romancy_nb.store import open_store


async def test_two_opens_at_once_register_one_worker(store_url: str) -> None:
    app = rn.App(store_url)
    try:
        await asyncio.gather(app.open(), app.open())
        store = open_store(store_url)
        try:
            assert [w.worker_id for w in store.list_workers()] == [app.worker_id]
        finally:
            store.close()
    finally:
        await app.close()
