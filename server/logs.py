"""Process-wide logging set-up: level and format (plain text or one JSON object per line).

``GATEWAY_LOG_FORMAT=json`` gives log collectors (Loki, Elasticsearch, CloudWatch) one JSON
object per line with ``time``, ``level``, ``logger``, ``message`` and, for access-log lines,
the ``http`` fields (method, route template, status, duration, bytes, client, request id).
Uvicorn's own loggers go through the same handler.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

LEVELS = ("debug", "info", "warning", "error", "critical")
FORMATS = ("plain", "json")
PLAIN = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        http = getattr(record, "http", None)
        if isinstance(http, dict):
            out["http"] = http
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def configure(level: str, fmt: str = "plain") -> None:
    """Root handler on stderr in the given format; replaces earlier handlers (idempotent)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(PLAIN))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
