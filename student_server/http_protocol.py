"""uvicorn's httptools protocol with one change: the bytes a response writes within one event-loop
turn leave in one socket write.

uvicorn writes a response's status line and headers as soon as the app sends
`http.response.start`, and the body as a second write. For a small ranking response each write is a
system call that also wakes the client, and on a loaded two-core machine that doubled wake-up was
the largest single cost of a request on the server's event loop. Ranking sends its start and body
messages in the same turn, so they are coalesced; streaming responses are unaffected (each later
turn flushes on its own)."""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _CoalescingTransport:
    """Collects writes made in the current loop turn and sends them together at its end."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def _flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
