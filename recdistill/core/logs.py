"""Logging set-up: one JSON object per line (python-json-logger; the servers' default, for log shippers)
or human-readable (rich) on a terminal.

Whatever the format, a log call on the request path costs little: records go through a queue to a
listener thread, which formats and writes them (a rich traceback takes milliseconds to render, and
must never run on an event loop). Tracebacks are rate-limited: past `tracebacks_per_minute`, an error
is logged without its traceback, and the next traceback that is logged says how many were left out.
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
import threading
import time
from typing import IO

from pythonjsonlogger.json import JsonFormatter
from rich.console import Console
from rich.logging import RichHandler

# Logs and progress bars go to stderr: stdout is for a command's results (JSON, tables).
STDERR = Console(stderr=True)
_listener: logging.handlers.QueueListener | None = None


class TracebackRateLimit(logging.Filter):
    """At most `per_minute` records keep their traceback; the others keep their message."""

    def __init__(self, per_minute: int) -> None:
        super().__init__()
        self.per_minute = per_minute
        self._window_start = 0.0
        self._in_window = 0
        self.suppressed = 0
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:  # noqa: A003
        if not record.exc_info:
            return True
        with self._lock:
            now = time.monotonic()
            if now - self._window_start >= 60:
                self._window_start, self._in_window = now, 0
            self._in_window += 1
            if self._in_window > self.per_minute:
                self.suppressed += 1
                record.exc_info, record.exc_text = None, None
                record.traceback_suppressed = True
            elif self.suppressed:
                record.tracebacks_suppressed_before = self.suppressed
                self.suppressed = 0
        return True


def json_formatter() -> logging.Formatter:
    return JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s",
                         rename_fields={"levelname": "level", "name": "logger", "asctime": "time"})


def configure_logging(level: int = logging.INFO, json_lines: bool = False, tracebacks_per_minute: int = 10,
                      stream: IO[str] | None = None) -> None:
    """Route every log record through a queue to one output handler on a listener thread (JSON lines go
    to `stream`, default stderr)."""
    global _listener
    if json_lines:
        output: logging.Handler = logging.StreamHandler(stream)
        output.setFormatter(json_formatter())
    else:
        output = RichHandler(console=STDERR, show_path=False, rich_tracebacks=True)
        output.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    if _listener is not None:
        _listener.stop()
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    handler = _QueueHandler(records)
    handler.addFilter(TracebackRateLimit(tracebacks_per_minute))
    _listener = logging.handlers.QueueListener(records, output, respect_handler_level=False)
    _listener.start()
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # One line per HTTP call of the operator client would drown everything else.
    logging.getLogger("httpx").setLevel(max(level, logging.WARNING))


class _QueueHandler(logging.handlers.QueueHandler):
    """Hands the record over as it is (exception info included), without formatting it on the caller's
    thread; the output handler on the listener thread formats it once."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # Make the message final now (its arguments may change later), keep exc_info for the output.
        record.msg, record.args = record.getMessage(), None
        return record


@atexit.register
def _flush_at_exit() -> None:
    if _listener is not None:
        _listener.stop()
