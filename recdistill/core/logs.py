"""Logging set-up: human-readable (rich) on a terminal, one JSON object per line for log shippers."""

from __future__ import annotations

import json
import logging
import time

from rich.console import Console
from rich.logging import RichHandler

# Logs and progress bars go to stderr: stdout is for a command's results (JSON, tables).
STDERR = Console(stderr=True)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:  # noqa: A003
        entry = {
            "ts": round(record.created, 3),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(level: int = logging.INFO, json_lines: bool = False) -> None:
    if json_lines:
        handler: logging.Handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
    else:
        handler = RichHandler(console=STDERR, show_path=False, rich_tracebacks=True)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # One line per HTTP call of the operator client would drown everything else.
    logging.getLogger("httpx").setLevel(max(level, logging.WARNING))
