"""The coalescing HTTP protocol: writes made in one event-loop turn leave in one socket write,
nothing is lost on close, and responses streamed over several turns still arrive whole."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.responses import StreamingResponse
from starlette.routing import Route

from recdistill.core.processes import free_port
from student_server.http_protocol import CoalescingHttpToolsProtocol, _CoalescingTransport


class _CountingTransport:
    """A real transport that records each write it is asked to make."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        self.transport.write(data)

    def __getattr__(self, name: str) -> object:
        return getattr(self.transport, name)


async def _connected_pair() -> tuple[asyncio.StreamWriter, asyncio.StreamReader, asyncio.StreamWriter,
                                    asyncio.Server]:
    """(server side's writer, client side's reader and writer, the server): both writers must stay
    referenced, a collected StreamWriter closes its transport."""
    accepted: asyncio.Future[asyncio.StreamWriter] = asyncio.get_running_loop().create_future()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set_result(writer)

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    reader, client_writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
    return await accepted, reader, client_writer, server


async def test_writes_of_one_turn_leave_in_one_write_and_close_flushes() -> None:
    writer, reader, client_writer, server = await _connected_pair()
    counting = _CountingTransport(writer.transport)  # type: ignore[arg-type]
    coalescing = _CoalescingTransport(counting, asyncio.get_running_loop())  # type: ignore[arg-type]
    coalescing.write(b"HTTP/1.1 200 OK\r\n\r\n")
    coalescing.write(b"body")
    assert counting.writes == []
    await asyncio.sleep(0)
    assert counting.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
    coalescing.write(b"last words")
    coalescing.close()
    assert counting.writes[-1] == b"last words"
    assert await reader.read() == b"HTTP/1.1 200 OK\r\n\r\nbodylast words"
    client_writer.close()
    server.close()


@pytest.mark.integration
async def test_streamed_and_closing_responses_arrive_whole() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(3):
            await asyncio.sleep(0.01)
            yield f"chunk-{i};".encode()

    async def stream(request: object) -> StreamingResponse:
        return StreamingResponse(chunks())

    port = free_port()
    app = Starlette(routes=[Route("/stream", stream)])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           http=CoalescingHttpToolsProtocol))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(3):  # keep-alive: several responses on one connection
                assert (await client.get("/stream")).text == "chunk-0;chunk-1;chunk-2;"
            closing = await client.get("/stream", headers={"connection": "close"})
            assert closing.text == "chunk-0;chunk-1;chunk-2;"
    finally:
        server.should_exit = True
        await task


def test_uvicorn_is_pinned_below_the_next_minor_release() -> None:
    """`CoalescingHttpToolsProtocol` subclasses a non-public uvicorn class: the dependency is bounded above,
    and the installed uvicorn (the one these tests exercised) lies inside the bound."""
    import tomllib
    from importlib.metadata import version

    from packaging.requirements import Requirement

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    (requirement,) = [Requirement(r) for r in pyproject["project"]["dependencies"] if r.startswith("uvicorn")]
    assert any(spec.operator == "<" for spec in requirement.specifier), "uvicorn needs an upper bound"
    assert requirement.specifier.contains(version("uvicorn"))
