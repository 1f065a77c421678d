"""The app of the agent crash test's workers: ``romancy-nb worker --app tests.ai.agent_worker:app``.

Its database is ``$ROMANCY_DB``; sweeps every 0.2 s and 2 s leases, so the instances of a
SIGKILLed worker move to the next worker within a few ticks.
"""

from __future__ import annotations

import os

import romancy_nb as rn
import tests.ai.agent_flows  # noqa: F401  (defines the workflows this app serves)

app = rn.App(os.environ["ROMANCY_DB"], sweep_interval=0.2, lease_seconds=2)
