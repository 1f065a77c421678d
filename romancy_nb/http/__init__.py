"""The HTTP edge: CloudEvents in, over an ASGI app (``app.asgi()``, ``romancy-nb serve``).

Needs the ``http`` extra (``pip install romancy-nb[http]``: cloudevents, starlette,
uvicorn). See :mod:`romancy_nb.http.ingress`.
"""

from romancy_nb.http.ingress import DEFAULT_MAX_BODY, create_app

__all__ = ["DEFAULT_MAX_BODY", "create_app"]
