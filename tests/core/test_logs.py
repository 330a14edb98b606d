"""Logging never formats on the caller's thread, and tracebacks are rate-limited."""

from __future__ import annotations

import io
import json
import logging
import threading

import pytest

from recdistill.core import logs

pytestmark = pytest.mark.unit


class _Stream(io.StringIO):
    """Remembers which thread wrote each line."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: set[str] = set()
        self.lines: list[str] = []
        self.done = threading.Event()

    def write(self, text: str) -> int:
        self.threads.add(threading.current_thread().name)
        self.lines += [line for line in text.splitlines() if line]
        if '"last"' in text:
            self.done.set()
        return len(text)


def test_records_are_formatted_on_the_listener_thread_and_tracebacks_are_limited() -> None:
    stream = _Stream()
    logs.configure_logging(json_lines=True, tracebacks_per_minute=3, stream=stream)
    try:
        log = logging.getLogger("test.logs")
        for i in range(5):
            try:
                raise ValueError(f"bad input {i}")
            except ValueError:
                log.exception("request %d failed", i)
        log.info("last")
        assert stream.done.wait(10)
    finally:
        logs.configure_logging()
    assert threading.current_thread().name not in stream.threads
    lines = [json.loads(text) for text in stream.lines]
    assert [line["message"] for line in lines] == [*(f"request {i} failed" for i in range(5)), "last"]
    assert ["exc_info" in line for line in lines] == [True, True, True, False, False, False]
    assert "ValueError: bad input 0" in lines[0]["exc_info"]
    assert lines[3]["traceback_suppressed"] is True
    assert (lines[0]["level"], lines[0]["logger"]) == ("ERROR", "test.logs")
