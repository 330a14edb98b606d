"""Child services (Triton, the student server, reference servers): start, wait until ready, and always
stop them (SIGTERM, then SIGKILL), also when the caller fails or is interrupted."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def child_process(command: list[str], is_ready: Callable[[], bool], what: str, ready_timeout_s: float = 120.0,
                  log_path: Path | None = None, env: dict[str, str] | None = None,
                  stop_timeout_s: float = 60.0, niceness: int = 0) -> Iterator[subprocess.Popen]:
    """Run `command` until the block exits; `is_ready` is polled (its exceptions mean "not yet").
    `niceness` > 0 runs it at a lower CPU priority (`nice -n`), e.g. background work beside serving."""
    log = log_path.open("w") if log_path else subprocess.DEVNULL
    where = f"; see {log_path}" if log_path else ""
    if niceness:
        command = ["nice", "-n", str(niceness), *command]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=os.environ | (env or {}))
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{what} exited with {process.returncode} before it was ready{where}")
            try:
                if is_ready():
                    break
            except Exception:  # noqa: BLE001, S110 - not listening yet
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not ready after {ready_timeout_s}s{where}")
            time.sleep(0.2)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=stop_timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if log_path:
            log.close()  # type: ignore[union-attr]


def lower_priority(niceness: int) -> None:
    """Lower this process's CPU priority by `niceness`, every thread it has now included (on Linux the nice
    value is per thread; threads started later inherit it from the thread that starts them)."""
    tasks = Path("/proc/self/task")
    if not tasks.is_dir():
        os.nice(niceness)
        return
    for task in tasks.iterdir():
        try:
            tid = int(task.name)
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + niceness))
        except (ProcessLookupError, ValueError):
            continue  # a thread that ended meanwhile
