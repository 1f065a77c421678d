"""The app the fleet tests' workers serve: ``romancy-nb worker --app tests.crash.fleet_worker:app``.

Its database is ``$ROMANCY_DB`` (the worker's default ``--db`` too). The tests tune the
settings that the CLI has no option for through the environment: sweeps every
``$FLEET_SWEEP_INTERVAL`` seconds (default 0.2, so a dead worker's instances move within a
tick), ``$FLEET_LEASE_SECONDS`` (default 2) and ``$FLEET_NO_WATCH=1`` for a worker that
hears of other processes' changes only through its sweeps.
"""

from __future__ import annotations

import os

import romancy_nb as rn
from tests.crash.fleet_flows import registry

app = rn.App(
    os.environ["ROMANCY_DB"],
    registry=registry,
    sweep_interval=float(os.environ.get("FLEET_SWEEP_INTERVAL", "0.2")),
    lease_seconds=float(os.environ.get("FLEET_LEASE_SECONDS", "2")),
    watch_interval=None if os.environ.get("FLEET_NO_WATCH") else 0.002,
)
