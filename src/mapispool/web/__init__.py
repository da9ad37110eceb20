"""The web page, the HTTP API, server-sent events and Prometheus metrics of
``mapispool serve --web`` (DESIGN §10).

Only ``config`` is light; ``server``, ``api``, ``hub`` and ``metrics`` need the optional
``mapispool[web]`` extra (starlette, uvicorn, sse-starlette, prometheus-client) and are
imported only when the page is asked for.
"""
