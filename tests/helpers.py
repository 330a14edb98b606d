"""Helpers for tests that start real servers on free localhost ports."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable


def free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def wait_until(ready: Callable[[], bool], timeout_s: float, process: subprocess.Popen | None = None,
               what: str = "server") -> None:
    """Poll `ready` until it returns True; fail early if `process` exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            raise RuntimeError(f"{what} exited with {process.returncode} before it was ready:\n{output[-4000:]}")
        try:
            if ready():
                return
        except Exception:  # noqa: BLE001, S110 - not up yet
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{what} not ready after {timeout_s}s")
