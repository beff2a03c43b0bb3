"""A scripted HTTP/1.1 origin that misbehaves on purpose, the faults it plays, and a
random byte stream, for the pool-isolation and reset tests and the attack run.

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
import os
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from tests.support.net import origin

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
        await _serve(state, reader, writer)

    async with origin(handler) as served:
        state.port = served.port
        yield state


INNER = response(b"STOLEN")  # a whole response, hidden where no response may be
# (the method asked, the origin's answer to it, and what the origin sends after it on the
# same connection): the answer ends as its framing says; what follows must reach no one.
FAULTS: dict[str, tuple[bytes, bytes, bytes]] = {
    "cut_mid_head": (b"GET", response(b"A-OK"), b"HTTP/1.1 200 OK\r\nX-P: "),
    "short_length": (b"GET", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK", INNER),
    "extra_response": (b"GET", response(b"A"), INNER),
    "head_body": (b"HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(INNER), INNER),
    "body_after_204": (b"GET", b"HTTP/1.1 204 No Content\r\n\r\n", INNER),
    "after_chunked": (
        b"GET",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nA\r\n0\r\n\r\n",
        INNER,
    ),
}
# Completes a head cut short 300 ms later: a response for whoever asks next.
CUT_HEAD_TAIL = b"stolen\r\nContent-Length: 6\r\n\r\nSTOLEN"


def fault_writes(fault: str, delay: float) -> Writes:
    """The origin's writes for ``fault``: what follows the answer at once or ``delay``
    seconds late, and a cut head's completion 300 ms after that."""
    _method, first, rest = FAULTS[fault]
    writes: Writes = [(0, first), (delay, rest)] if delay else [(0, first + rest)]
    if rest.endswith(b": "):
        writes.append((0.3, CUT_HEAD_TAIL))
    return writes


async def stream(writer: asyncio.StreamWriter, total: int) -> None:
    """``total`` random bytes in 64 KiB writes, each after a pause of up to 2 ms."""
    sent = 0
    while sent < total:
        size = min(1 << 16, total - sent)
        writer.write(os.urandom(size))
        await writer.drain()
        sent += size
        await asyncio.sleep(random.uniform(0, 0.002))
