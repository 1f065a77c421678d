"""A bounded wait for a status, for cells that must act on an instance at the right moment.

A cell that sends an event must wait until the instance waits for it (an event sent before
is not delivered). A plain ``while status != ...`` loop hangs for ever when the instance is
already past that point — a notebook run a second time finds its fixed-id instances
completed — so :func:`wait_until` ends: with the instance's info, with an error at once
when the instance ended in another status, or with a ``TimeoutError`` naming both.
"""

from __future__ import annotations

import asyncio

from romancy_nb.engine import App, InstanceInfo
from romancy_nb.errors import InvalidWorkflowState
from romancy_nb.notebook.state import current_app
from romancy_nb.store.protocol import ACTIVE_STATUSES, FINAL_STATUSES, WAITING_STATUSES

STATUSES = (*ACTIVE_STATUSES, *WAITING_STATUSES, *FINAL_STATUSES)


async def wait_until(
    instance_id: str, *statuses: str, timeout: float = 30.0, app: App | None = None
) -> InstanceInfo:
    """Wait until the instance has one of ``statuses`` and return its info.

    Raises :class:`~romancy_nb.InvalidWorkflowState` as soon as the instance has ended
    (completed, failed, cancelled) in a status not asked for, and ``TimeoutError`` after
    ``timeout`` seconds; the event loop (the kernel) stays free meanwhile.
    """
    unknown = [status for status in statuses if status not in STATUSES]
    if not statuses or unknown:
        raise ValueError(
            f"wait_until needs statuses among {', '.join(STATUSES)}"
            + (f"; unknown: {', '.join(unknown)}" if unknown else "")
        )
    app = app or current_app()
    wanted = " or ".join(statuses)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = 0.005
    while True:
        info = app.get_instance(instance_id)
        if info.status in statuses:
            return info
        if info.status in FINAL_STATUSES:
            raise InvalidWorkflowState(
                f"instance {instance_id!r} is {info.status}: it will never be {wanted}",
                instance_id=instance_id,
                status=info.status,
            )
        left = deadline - loop.time()
        if left <= 0:
            raise TimeoutError(
                f"instance {instance_id!r} is still {info.status} after {timeout:g} s "
                f"(waited for {wanted})"
            )
        await asyncio.sleep(min(delay, left))
        delay = min(delay * 2, 0.1)
