"""The store gate's dispatch for a store whose calls may block (``engine/gate.py``): a
call the store can make on the event loop is made there, any other from a thread, and a
transient error is retried either way."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import Any

from romancy_nb.engine.gate import StoreGate
from romancy_nb.errors import StoreUnavailableError
from romancy_nb.store.protocol import ON_A_THREAD, CallsOnTheLoop


class NetworkStore:
    """Records on which thread each call ran; ``record`` can go on the loop."""

    def __init__(self, loop_answers: list[Any]) -> None:
        self.loop_answers = loop_answers
        self.threads: list[str] = []

    def record(self, value: int) -> int:
        self.threads.append(threading.current_thread().name)
        return value

    def read(self, value: int) -> int:
        self.threads.append(threading.current_thread().name)
        return value

    def loop_call(self, name: str) -> Callable[..., Awaitable[Any]] | None:
        if name != "record":
            return None

        async def on_the_loop(value: int) -> Any:
            self.threads.append(threading.current_thread().name)
            answer = self.loop_answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return value if answer is None else answer

        return on_the_loop


class PlainNetworkStore:
    def __init__(self) -> None:
        self.threads: list[str] = []

    def record(self, value: int) -> int:
        self.threads.append(threading.current_thread().name)
        return value


async def test_a_call_the_store_makes_on_the_loop_is_made_there() -> None:
    store = NetworkStore([None])
    assert isinstance(store, CallsOnTheLoop)
    gate = StoreGate(inline=False, threads=2)
    assert await gate.call(store.record, 7) == 7
    assert store.threads == [threading.current_thread().name]


async def test_other_calls_and_calls_handed_back_go_to_a_thread() -> None:
    store = NetworkStore([ON_A_THREAD])
    gate = StoreGate(inline=False, threads=2)
    assert await gate.call(store.read, 1) == 1  # no loop call for it
    assert await gate.call(store.record, 2) == 2  # tried on the loop, handed back
    read_on, tried_on, recorded_on = store.threads
    assert tried_on == threading.current_thread().name
    assert read_on.startswith("romancy-store") and recorded_on.startswith("romancy-store")


async def test_a_store_without_loop_calls_is_called_from_a_thread() -> None:
    store = PlainNetworkStore()
    assert not isinstance(store, CallsOnTheLoop)
    gate = StoreGate(inline=False, threads=2)
    assert await gate.call(store.record, 3) == 3
    assert store.threads[0].startswith("romancy-store")


async def test_a_transient_error_on_the_loop_is_retried() -> None:
    store = NetworkStore([StoreUnavailableError("the server is away"), None])
    gate = StoreGate(inline=False, threads=2)
    assert await gate.call(store.record, 4) == 4
    assert store.threads == [threading.current_thread().name] * 2
