"""One structured access-log line per request: a JSON object on the ``dfd.serve.access`` logger.

Keys: ``time`` (UTC, ISO 8601), ``client``, ``method``, ``path``, ``status``, ``bytes_in`` (body
bytes read), ``bytes_out`` (body bytes sent), ``seconds``, and ``verdict``, ``probability`` and
``error`` when the route set them on ``request.state`` (POST /v1/predict and /v1/report do).
A request that fails without an answer is logged with status 500.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timezone

ACCESS_LOGGER = "dfd.serve.access"
STATE_KEYS = ("verdict", "probability", "error")


class AccessLog:
    """ASGI middleware: counts the bytes in and out of each HTTP request and logs one line at its end."""

    def __init__(self, app, logger: logging.Logger | None = None):
        self.app = app
        self.log = logger or logging.getLogger(ACCESS_LOGGER)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state = scope.setdefault("state", {})
        start = time.perf_counter()
        seen = {"status": None, "in": 0, "out": 0}

        async def counting_receive():
            message = await receive()
            if message["type"] == "http.request":
                seen["in"] += len(message.get("body", b""))
            return message

        async def counting_send(message):
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
            elif message["type"] == "http.response.body":
                seen["out"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            client = scope.get("client")
            line = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                    "client": client[0] if client else None, "method": scope.get("method"),
                    "path": scope.get("path"), "status": seen["status"] or 500, "bytes_in": seen["in"],
                    "bytes_out": seen["out"], "seconds": round(time.perf_counter() - start, 4)}
            line.update({k: state[k] for k in STATE_KEYS if state.get(k) is not None})
            self.log.info(json.dumps(line))
