"""``serve --app tests.edges.ingress_app:app``: an ``rn.App`` of ``ingress_flows`` on
``$ROMANCY_DB``, for tests/edges/test_http_serve.py."""

from __future__ import annotations

import os

import romancy_nb as rn
import tests.edges.ingress_flows  # noqa: F401  (their definitions, for the app to serve)

app = rn.App(os.environ["ROMANCY_DB"], sweep_interval=0.2)
