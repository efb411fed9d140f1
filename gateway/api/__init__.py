"""The HTTP API, Prometheus metrics and web dashboard, served from the gateway process.

Modules, one job each (``docs/api.md`` is the user guide):

* :mod:`~gateway.api.service` — the gateway :data:`~gateway.app.Service`: binds the
  socket, runs uvicorn on the gateway's own event loop, stops with it.
* :mod:`~gateway.api.app` — builds the Starlette application (routes, error handlers).
* :mod:`~gateway.api.handlers` — the endpoints.
* :mod:`~gateway.api.guard` — bearer token, per-client rate limit, request size,
  security headers (one pure ASGI middleware).
* :mod:`~gateway.api.state` — what the endpoints share (gateway view, rate meter).
* :mod:`~gateway.api.params` — request parameters and the opaque page cursor.
* :mod:`~gateway.api.prometheus` — the ``/metrics`` text format.
* :mod:`~gateway.api.openapi` — the hand-written OpenAPI 3.1 document.
* :mod:`~gateway.api.connections` — who holds the connections and which one gives
  way (per-client and total caps).
* :mod:`~gateway.api._uvicorn_adapter` — uvicorn's h11 protocol with those caps, a
  request-header timeout and a send timeout (the only use of uvicorn internals).
* :mod:`~gateway.api.bind` — the Host allow-list and socket binding.

The endpoints read the database only through the read side of the store
(:class:`gateway.storage.base.ReadStore`): worker threads and a per-query deadline, so
a heavy query never blocks ingestion.

Importing this package imports nothing heavy; the web stack is loaded only when the
API is enabled.
"""
