"""A scripted HTTP/1.1 origin that misbehaves on purpose, for the pool-isolation tests
and the attack run.

It reads requests as a naive server does (a head up to the blank line, then as many body
bytes as its Content-Length says, none without one), so that whatever fyntr forwards is
read the way it would be by a real origin. For each request it asks ``answer(request)``
for its writes: ``(delay_s, bytes)`` pairs, written in order after their delays. Every
request seen is recorded with its connection's number, so a test can tell which bytes
reached which connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

Writes = list[tuple[float, bytes]]


@dataclass(frozen=True)
class Request:
    connection: int
    line: bytes  # the request line
    headers: dict[bytes, bytes]  # lower-case names; the last of a repeated field
    body: bytes

    @property
    def path(self) -> bytes:
        return self.line.split(b" ")[1]


@dataclass
class FaultyOrigin:
    answer: Callable[[Request], Writes]
    port: int = 0
    connections: int = 0
    requests: list[Request] = field(default_factory=list)

    def paths(self) -> list[bytes]:
        return [r.path for r in self.requests]


def response(body: bytes, *extra: bytes, status: bytes = b"200 OK") -> bytes:
    """A complete response framed by Content-Length; ``extra`` header lines as given."""
    fields = b"".join(line + b"\r\n" for line in extra)
    return b"HTTP/1.1 %s\r\nContent-Length: %d\r\n%s\r\n%s" % (status, len(body), fields, body)


async def _serve(
    state: FaultyOrigin, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    state.connections += 1
    number = state.connections
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return
        line, *lines = head[:-4].split(b"\r\n")
        headers = {}
        for text in lines:
            name, _, value = text.partition(b":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
        request = Request(number, line, headers, body)
        state.requests.append(request)
        for delay, data in state.answer(request):
            if delay:
                await asyncio.sleep(delay)
            writer.write(data)
        await writer.drain()


@contextlib.asynccontextmanager
async def faulty_origin(answer: Callable[[Request], Writes]) -> AsyncIterator[FaultyOrigin]:
    state = FaultyOrigin(answer)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await _serve(state, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
