"""A parent proxy the tests own: HTTP CONNECT and absolute-form requests, optional Basic
credentials, and a record of every request head it was sent, so that tests can assert
what fyntr puts on the wire to a parent. It reaches only 127.0.0.1, by that address or by
the name ``origin.test`` (RFC 6761's reserved .test), which nothing else resolves: a
tunnel to it that works went through the parent, by name."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

LOCAL = ("origin.test", "127.0.0.1")


@dataclass
class ParentProxy:
    port: int = 0
    heads: list[bytes] = field(default_factory=list)  # every request head, as received
    connections: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()


@contextlib.asynccontextmanager
async def parent_proxy(credentials: str | None = None) -> AsyncIterator[ParentProxy]:
    """``credentials``: "user:password" that CONNECT and requests must carry (else 407)."""
    state = ParentProxy()
    wanted = None if credentials is None else b"Basic " + base64.b64encode(credentials.encode())

    tasks: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await _serve(reader, writer)
        except asyncio.CancelledError:
            pass
        finally:
            writer.close()
            tasks.discard(task)

    async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        state.heads.append(head)
        lines = head.split(b"\r\n")
        method, target, _ = lines[0].split(b" ", 2)
        fields = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(b":") for line in lines[1:] if line)
        }
        if wanted is not None and fields.get(b"proxy-authorization") != wanted:
            writer.write(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                b'Proxy-Authenticate: Basic realm="test"\r\nContent-Length: 0\r\n\r\n'
            )
            writer.close()
            return
        authority = target if method == b"CONNECT" else target.split(b"/")[2]
        host, _, port = authority.decode().rpartition(":")
        if host not in LOCAL:
            writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", int(port or 80))
        if method == b"CONNECT":
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            up_writer.write(head)  # as received: the tests' origins read any form
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            up_writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
