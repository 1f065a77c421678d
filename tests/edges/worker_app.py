"""``--app tests.edges.worker_app:app`` for tests/edges/test_cli_worker.py: an ``rn.App``
of ``worker_flows`` on ``$ROMANCY_DB``; ``not_an_app`` is there to be refused."""

from __future__ import annotations

import os

import romancy_nb as rn
import tests.edges.worker_flows  # noqa: F401  (their definitions, for the app to serve)

app = rn.App(os.environ["ROMANCY_DB"], sweep_interval=0.2)

not_an_app = "a str"
