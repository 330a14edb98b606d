"""uvicorn's httptools protocol with two changes: the bytes a response writes within one event-loop
turn leave in one socket write, and a request's line and headers are bounded (431 past `MAX_HEADER_BYTES`,
naming the header that crossed it; httptools itself sets no bound).

uvicorn writes a response's status line and headers as soon as the app sends
`http.response.start`, and the body as a second write. For a small ranking response each write is a
system call that also wakes the client, and on a loaded two-core machine that doubled wake-up was
the largest single cost of a request on the server's event loop. Ranking sends its start and body
messages in the same turn, so they are coalesced; streaming responses are unaffected (each later
turn flushes on its own)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEADER_BYTES = 32 * 1024  # the request line and every header together (nginx's default is the same)


class _HeadersTooLarge(Exception):
    """Raised from a parser callback to stop parsing a request already answered with 431."""


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
    _header_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]

    def on_message_begin(self) -> None:
        self._header_bytes = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._count(len(url), "the request line")
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value), name.decode("latin-1").lower())
        super().on_header(name, value)

    def _count(self, size: int, where: str) -> None:
        self._header_bytes += size
        if self._header_bytes > MAX_HEADER_BYTES:
            body = orjson.dumps({"error": f"request headers exceed {MAX_HEADER_BYTES} bytes at {where}",
                                 "field": where})
            self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
                                 b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body))
            self.transport.close()
            raise _HeadersTooLarge  # httptools stops; what uvicorn writes after it, on a closed transport, is dropped
