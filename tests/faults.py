"""A fault-injecting proxy around the real store, for faults that cannot be produced for real.

A lock timeout at one exact engine write, or a store error right after a wake-up
committed, cannot be timed from outside; :class:`FaultyStore` makes them happen on demand.
Everything else is the real store: the proxy forwards every attribute to it, and a call
that is not armed runs the real SQL. It also records each call (and what it raised, be it
injected or real), so a test can check that the fault it armed was really met.

    store = open_faulty(store_url)
    store.fail("finish_instance", DatabaseLockedError, times=3)
    async with rn.App(store, sweep_interval=0.05) as app: ...

``after=True`` lets the call go through (its transaction commits) and raises afterwards:
the caller cannot know that its write landed. Session methods (``ctx.session``'s commit and
step record) are armed as ``"session.commit"`` / ``"session.record_step"``.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import romancy_nb as rn
from romancy_nb.store import Store, open_store

Arguments = dict[str, Any]
"""A call's arguments bound to the store method's parameter names."""


@dataclass
class Fault:
    """The next ``times`` calls of ``method`` (those ``when`` accepts) raise ``error``."""

    method: str
    error: type[BaseException]
    times: int
    after: bool
    when: Callable[[Arguments], bool] | None
    hits: int = 0

    def matches(self, method: str, arguments: Callable[[], Arguments]) -> bool:
        if method != self.method or self.hits >= self.times:
            return False
        return self.when is None or self.when(arguments())


@dataclass(frozen=True)
class Call:
    """One call that reached the proxy; ``error`` is what it raised (injected or real)."""

    method: str
    arguments: Arguments
    thread: int
    error: BaseException | None
    injected: bool


class _Recorder:
    """The faults and the call log shared by a store proxy and the sessions it opens."""

    def __init__(self) -> None:
        self.faults: list[Fault] = []
        self.calls: list[Call] = []
        self.lock = threading.Lock()

    def invoke(self, method: str, fn: Callable[..., Any], args: Any, kwargs: Any) -> Any:
        def arguments() -> Arguments:
            return _bind(fn, args, kwargs)

        with self.lock:
            fault = next((f for f in self.faults if f.matches(method, arguments)), None)
            if fault is not None:
                fault.hits += 1
        if fault is not None and not fault.after:
            self._raise(method, arguments(), fault)
        try:
            result = fn(*args, **kwargs)
        except BaseException as error:
            self._log(Call(method, arguments(), threading.get_ident(), error, False))
            raise
        if fault is not None:  # the call went through (committed): fail afterwards
            self._raise(method, arguments(), fault)
        self._log(Call(method, arguments(), threading.get_ident(), None, False))
        return result

    def _raise(self, method: str, arguments: Arguments, fault: Fault) -> None:
        when = "after it committed" if fault.after else "instead of running"
        error = fault.error(f"injected fault #{fault.hits} in {method} ({when})")
        self._log(Call(method, arguments, threading.get_ident(), error, True))
        raise error

    def _log(self, call: Call) -> None:
        with self.lock:
            self.calls.append(call)


_SIGNATURES: dict[Any, inspect.Signature] = {}


def _bind(fn: Callable[..., Any], args: Any, kwargs: Any) -> Arguments:
    key = getattr(fn, "__func__", fn)
    signature = _SIGNATURES.get(key)
    if signature is None:
        signature = _SIGNATURES[key] = inspect.signature(fn)
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError:  # the caller got the call wrong: the real method will say so
        return {"args": args, "kwargs": kwargs}
    bound.apply_defaults()
    return dict(bound.arguments)


class _Forwarding:
    """Forwards attributes to ``_inner``; its public methods go through the recorder."""

    _inner: Any
    _recorder: _Recorder
    _prefix: str

    def __getattr__(self, name: str) -> Any:
        if name in ("_inner", "_recorder", "_prefix"):  # not set yet: never recurse
            raise AttributeError(name)
        value = getattr(self._inner, name)
        if name.startswith("_") or not callable(value) or isinstance(value, type):
            return value
        method = self._prefix + name
        recorder = self._recorder

        def call(*args: Any, **kwargs: Any) -> Any:
            result = recorder.invoke(method, value, args, kwargs)
            if name == "open_session":
                return FaultySession(result, recorder)
            return result

        return call


class FaultySession(_Forwarding):
    """The session of a transactional activity, with its methods armable as ``session.*``."""

    def __init__(self, inner: Any, recorder: _Recorder) -> None:
        self._inner = inner
        self._recorder = recorder
        self._prefix = "session."

    @property
    def connection(self) -> Any:
        return self._inner.connection


class FaultyStore(_Forwarding):
    """The real store behind a proxy that injects armed faults and records every call."""

    def __init__(self, inner: Store) -> None:
        self._inner = inner
        self._recorder = _Recorder()
        self._prefix = ""
        self.url = inner.url

    @property
    def inner(self) -> Store:
        return self._inner

    def __repr__(self) -> str:
        # Never a bare path: an App that cannot take a Store object must fail loudly on
        # this text (its folder does not exist), not open the same file behind our back.
        return f"FaultyStore({self.url!r})"

    def fail(
        self,
        method: str,
        error: type[BaseException],
        *,
        times: int = 1,
        after: bool = False,
        when: Callable[[Arguments], bool] | None = None,
    ) -> Fault:
        """Arm a fault; returns it, so the test can check ``fault.hits`` afterwards."""
        target = self._inner
        name = method
        if method.startswith("session."):
            target, name = _SessionMethods, method.removeprefix("session.")
        if not callable(getattr(target, name, None)):
            raise AttributeError(f"the store has no method {method!r} to arm a fault on")
        fault = Fault(method, error, times, after, when)
        with self._recorder.lock:
            self._recorder.faults.append(fault)
        return fault

    def calls(self, method: str | None = None) -> list[Call]:
        """Every call so far (of ``method``), oldest first."""
        with self._recorder.lock:
            return [c for c in self._recorder.calls if method is None or c.method == method]

    def real_errors(self, method: str | None = None) -> list[BaseException]:
        """Errors the real store raised (not injected ones): proof a real fault was met."""
        return [c.error for c in self.calls(method) if c.error is not None and not c.injected]


class _SessionMethods:
    """The methods a ``Session`` has (see ``romancy_nb.store.protocol.Session``)."""

    def record_step(self) -> None: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...


def open_faulty(url: str | Path, **options: Any) -> FaultyStore:
    """The real store for ``url``, opened as an ``App`` opens it, behind a proxy."""
    return FaultyStore(open_store(url, wait_for_locks=False, **options))


# checks the fault tests share


def assert_completed_without_compensation(app: rn.App, instance_id: str) -> None:
    """The instance ended ``completed``, holds no lease and never unwound a saga."""
    record = app.store.get_instance(instance_id)
    assert record is not None
    assert (record.status, record.lock_owner) == ("completed", None), record
    unwound = [
        s.step_id
        for s in app.get_history(instance_id)
        if s.kind == "compensation" or s.step_id.startswith("compensate:")
    ]
    assert unwound == [], f"an infrastructure fault ran compensations: {unwound}"


__all__ = [
    "Arguments",
    "Call",
    "Fault",
    "FaultySession",
    "FaultyStore",
    "assert_completed_without_compensation",
    "open_faulty",
]


INSTANCE_TABLES = (
    "workflow_instances",
    "workflow_history",
    "workflow_history_archive",
    "workflow_runs_archive",
    "waits",
    "channel_subscriptions",
    "group_members",
    "step_attempts",
)
"""Every table that holds rows of an instance (keyed by ``instance_id``)."""

Dump = dict[str, list[tuple[Any, ...]]]
"""An instance's rows by table (see :func:`dump`)."""


def dump(store: Store, instance_id: str) -> Dump:
    """The instance's rows in every table, sorted: equal dumps are equal states."""
    out: Dump = {}
    for table in INSTANCE_TABLES:
        found = store.read_table(table, {"instance_id": instance_id})
        assert found is not None, f"the store has no table {table!r}"
        out[table] = sorted(found.rows, key=repr)
    return out
