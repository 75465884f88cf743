"""`dfd serve`: the HTTP service and its web page (Starlette on uvicorn).

One job per module: :mod:`.settings` (what a server is started with, passed to each worker
process), :mod:`.uploads` (a multipart upload streamed into a private temporary folder, refused
past its size), :mod:`.worker` (the model, loaded once per worker, and the bounded queue of work),
:mod:`.access_log` (one JSON line per request), :mod:`.app` (the routes), :mod:`.server` (uvicorn),
and ``static/`` (the page). docs/serve.md describes the service.
"""
