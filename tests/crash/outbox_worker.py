"""The app the outbox SIGKILL test's workers serve: ``romancy-nb worker --app
tests.crash.outbox_worker:app``, on ``$ROMANCY_DB``, relaying the outbox to
``$OUTBOX_RECEIVER`` (the test's receiver) over HTTP. Short leases and sweeps, so a killed
worker's instances and its ``outbox`` leadership move within a tick; the relayer retries
every 20 ms for as long as the test can run."""

from __future__ import annotations

import os

import romancy_nb as rn
import tests.crash.outbox_flows  # noqa: F401  (their definitions, for the app to serve)

app = rn.App(
    os.environ["ROMANCY_DB"],
    broker_url=os.environ["OUTBOX_RECEIVER"],
    outbox_interval=0.02,
    outbox_retry=rn.RetryPolicy.fixed(100_000, 0.02),
    sweep_interval=0.2,
    lease_seconds=2,
)
