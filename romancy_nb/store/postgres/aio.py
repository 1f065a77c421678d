"""Store calls sent from the engine's event loop, without a thread: the per-step
statement, and the calls of a wake-up (``publish`` from outside a workflow,
``message_wakeups``, ``wake``: the last two are conversations, written once for a thread
and for the loop, ``conversation.py``).

The engine calls a store whose calls cross the network from the threads of its gate
(``engine/gate.py``), so the loop never waits on the network. For the one call every
durable step makes — ``record_step``, one statement — that hand-off costs as much as the
round trip itself on a small machine: the gate's thread is woken to send the statement,
then the loop is woken by the thread with the answer (≈ 0.3 ms each on two idle vCPUs),
on top of the wake-up the answer itself causes. Here the loop sends the statements on
connections of its own and waits for the answers in its selector, like for any socket
(``pipeline.py``): one wake-up, as a blocking client has.

:meth:`LoopCalls.call` is what the gate asks for (see ``StoreGate.call``): the coroutine
function to use for a store method on the loop, or None. The connections are few
(``max_size``), each used by one call at a time and kept for the next, newest first (so
the statements prepared on it stay in use); with none free, the call is handed back
(``ON_A_THREAD``) and the gate makes it from a thread, as it would without this. Errors
are the store's (``translate.py``): a lost connection is dropped, and the gate retries a
transient error as it retries any other.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import psycopg

from romancy_nb.store.postgres.conversation import on_the_loop
from romancy_nb.store.postgres.pipeline import LoopConnection, one_statement
from romancy_nb.store.postgres.sql import RECORD_STEP
from romancy_nb.store.postgres.translate import is_connection_loss, translate
from romancy_nb.store.postgres.waiting import (
    PUBLISH,
    message_wakeups_conversation,
    publish_args,
    wake_conversation,
)
from romancy_nb.store.protocol import (
    ON_A_THREAD,
    MessageRecord,
    OutboxEvent,
    StepRecord,
    WokenRun,
)


class LoopCalls:
    """A few async connections for the calls worth making on the loop (see the module)."""

    def __init__(self, url: str, connect_kwargs: dict[str, Any], where: str, max_size: int) -> None:
        self._url = url
        self._kwargs = connect_kwargs
        self._where = where
        self._max_size = max_size
        self._idle: list[LoopConnection] = []
        self._open = 0
        self._closed = False
        self._calls: dict[str, Callable[..., Awaitable[Any]]] = {
            "record_step": self.record_step,
            "message_wakeups": self.message_wakeups,
            "wake": self.wake,
            "publish": self.publish,
        }

    def call(self, name: str) -> Callable[..., Awaitable[Any]] | None:
        """The coroutine function that makes the store method ``name`` on the loop, or
        None: the method is made from a thread."""
        return self._calls.get(name)

    async def record_step(
        self, step: StepRecord, owner: str, events: Sequence[OutboxEvent] = ()
    ) -> Any:
        """As ``PostgresStore.record_step`` (the step with its outbox events is a
        transaction of several statements: left to the store's method)."""
        if events:
            return ON_A_THREAD

        values = (*step, step.instance_id, owner)

        async def statement(on: LoopConnection) -> bool:
            return (await one_statement(on, RECORD_STEP, values)).command_tuples == 1

        return await self._on_a_connection(statement)

    async def message_wakeups(
        self, after_id: int, workflows: Sequence[str], channel: str | None = None
    ) -> Any:
        """As ``PostgresStore.message_wakeups``: the first store call of every wake-up by
        another process's message."""
        return await self._on_a_connection(
            lambda on: on_the_loop(on, message_wakeups_conversation(after_id, workflows, channel))
        )

    async def wake(self, instance_id: str, step_id: str, owner: str, now: float) -> Any:
        """As ``PostgresStore.wake``: ending the wait that a message or a timer answers."""

        def conversation(on: LoopConnection) -> Awaitable[WokenRun | None]:
            return on_the_loop(on, wake_conversation(instance_id, step_id, owner, now))

        return await self._on_a_connection(conversation)

    async def publish(
        self, message: MessageRecord, step: StepRecord | None = None, owner: str | None = None
    ) -> Any:
        """As ``PostgresStore.publish`` from outside a workflow (one statement): what
        ``send_event`` makes (a workflow's publish, with its step, is left to the store)."""
        if step is not None:
            return ON_A_THREAD

        async def statement(on: LoopConnection) -> int:
            result = await one_statement(on, PUBLISH, publish_args(message))
            return int(result.get_value(0, 0) or 0) if result.ntuples else 0

        return await self._on_a_connection(statement)

    # connections

    async def _on_a_connection(self, work: Callable[[LoopConnection], Awaitable[Any]]) -> Any:
        """``work`` on a free connection (given back after), or ``ON_A_THREAD`` if none is
        free. A store error is translated; a call cancelled in flight leaves the
        connection's state unknown, so it is closed."""
        connection = await self._take()
        if connection is None:
            return ON_A_THREAD
        try:
            result = await work(connection)
        except psycopg.Error as error:
            self._drop(connection, error)
            raise translate(error, self._where) from error
        except BaseException:
            self._discard(connection)
            raise
        self._give_back(connection)
        return result

    async def _take(self) -> LoopConnection | None:
        if self._closed:
            return None
        if self._idle:
            return self._idle.pop()
        if self._open >= self._max_size:
            return None
        self._open += 1
        try:
            connection = await psycopg.AsyncConnection.connect(
                self._url, autocommit=True, **self._kwargs
            )
            return LoopConnection(connection)
        except psycopg.Error as error:
            self._open -= 1
            raise translate(error, self._where) from error
        except BaseException:
            self._open -= 1
            raise

    def _give_back(self, on: LoopConnection) -> None:
        connection = on.connection
        idle = connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        if self._closed or connection.closed or connection.broken or not idle:
            self._discard(on)
        else:
            self._idle.append(on)

    def _drop(self, on: LoopConnection, error: psycopg.Error) -> None:
        """After an error: keep a connection that only reported a bad statement; after a
        lost connection the idle ones most likely died with it too."""
        if is_connection_loss(error) or on.connection.broken or on.connection.closed:
            self._discard(on)
            for idle in self._idle:
                self._discard(idle, idle=True)
            self._idle.clear()
        else:
            self._give_back(on)

    def _discard(self, on: LoopConnection, *, idle: bool = False) -> None:
        self._open -= 1
        if not idle and on in self._idle:
            self._idle.remove(on)
        _close_now(on)

    def close(self) -> None:
        """Close the idle connections (from any thread; one in use closes when it ends)."""
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            self._open -= 1
            _close_now(connection)


def _close_now(on: LoopConnection) -> None:
    """Close without a loop: libpq's ``finish`` closes the socket at once (an async
    connection's ``close()`` is a coroutine, and the loop may be gone)."""
    on.connection.pgconn.finish()


__all__ = ["LoopCalls"]
