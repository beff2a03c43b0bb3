"""A plain HTTP/1.1 origin for the forwarding tests: keep-alive, records every request.

Paths: ``/size/N`` answers N bytes (``x``); ``/echo`` answers the request body;
``/chunked`` answers in three chunks; ``/close`` answers, then closes without saying so;
``/slow`` answers after 0.3 s; ``/index/...`` serves the files given; anything else
answers ``hello``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import h11


@dataclass
class Seen:
    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes


@dataclass
class HttpOrigin:
    port: int = 0
    connections: int = 0
    requests: list[Seen] = field(default_factory=list)
    raw: bytearray = field(default_factory=bytearray)  # every byte received
    files: dict[str, bytes] = field(default_factory=dict)

    def header(self, i: int, name: bytes) -> list[bytes]:
        return [v for n, v in self.requests[i].headers if n == name]


async def _serve(state: HttpOrigin, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    state.connections += 1
    conn = h11.Connection(h11.SERVER)
    request: h11.Request | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(65536)
            state.raw += data
            conn.receive_data(data)
            continue
        if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return
        if isinstance(event, h11.Request):
            request, body = event, bytearray()
            if (b"expect", b"100-continue") in list(event.headers):
                w.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b"")
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            assert request is not None
            state.requests.append(
                Seen(request.method, request.target, list(request.headers), bytes(body))
            )
            path = request.target.decode()
            if path == "/slow":  # answers later: exchanges overlap
                await asyncio.sleep(0.3)
            chunks: list[bytes]
            if path.startswith("/size/"):
                chunks = [b"x" * int(path[6:])]
            elif path == "/echo":
                chunks = [bytes(body)]
            elif path.startswith("/index/"):
                name = path.removeprefix("/index/")
                if name not in state.files:
                    w.write(
                        conn.send(h11.Response(status_code=404, headers=[("content-length", "0")]))
                        or b""
                    )
                    w.write(conn.send(h11.EndOfMessage()) or b"")
                    conn.start_next_cycle()
                    continue
                chunks = [state.files[name]]
            elif path == "/chunked":
                chunks = [b"one ", b"two ", b"three"]
            else:
                chunks = [b"hello"]
            framing = (
                [("transfer-encoding", "chunked")]
                if path == "/chunked"
                else [("content-length", str(sum(map(len, chunks))))]
            )
            if path.endswith("/"):
                framing.append(("content-type", "text/html"))  # pip's index pages
            w.write(conn.send(h11.Response(status_code=200, headers=framing, reason=b"OK")) or b"")
            if request.method != b"HEAD":
                for chunk in chunks:
                    w.write(conn.send(h11.Data(data=chunk)) or b"")
            w.write(conn.send(h11.EndOfMessage()) or b"")
            await w.drain()
            if path == "/close" or conn.our_state is not h11.DONE:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return


@contextlib.asynccontextmanager
async def http_origin(files: dict[str, bytes] | None = None) -> AsyncIterator[HttpOrigin]:
    state = HttpOrigin(files=files or {})

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await _serve(state, reader, writer)
        except (ConnectionError, h11.RemoteProtocolError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
