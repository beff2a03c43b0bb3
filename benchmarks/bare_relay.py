"""A yardstick for fyntr's runtime: a CONNECT relay on uvloop with nothing else in it.

No policy, no target validation, no cap, no scheduler, no logging, no timeouts: read a
request line, dial what it names, answer 200, relay both ways with the transports'
own flow control, close when both sides are done, built the textbook way
(``create_server``, ``create_connection``). What it costs per tunnel is what a proxy on
CPython and uvloop's transports costs before it does anything of its own; the benchmark
runs it as the contender ``bare-relay`` so that fyntr's own share can be read off.

Usage: ``python benchmarks/bare_relay.py PORT`` (serves 127.0.0.1:PORT until killed).
Not a proxy to use: it dials anything it is asked to.
"""

from __future__ import annotations

import asyncio
import sys

import uvloop

OK = b"HTTP/1.1 200 Connection Established\r\n\r\n"


class Half(asyncio.Protocol):
    """One socket of a tunnel: what it reads goes to ``peer``."""

    def __init__(self, peer: asyncio.Transport, done: list[int]) -> None:
        self.peer = peer
        self.done = done  # EOFs seen, shared by both halves
        self.transport: asyncio.Transport

    def data_received(self, data: bytes) -> None:
        self.peer.write(data)

    def eof_received(self) -> bool:
        self.done[0] += 1
        if self.done[0] == 2:
            self.peer.close()
            return False
        self.peer.write_eof()
        return True

    def pause_writing(self) -> None:
        self.peer.pause_reading()

    def resume_writing(self) -> None:
        self.peer.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.peer.close()


class Upstream(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.pause_reading()  # type: ignore[attr-defined]


class Head(asyncio.Protocol):
    def __init__(self, tasks: set[asyncio.Task[None]]) -> None:
        self.tasks = tasks
        self.head = b""
        self.transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.head += data
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            return
        host, _, port = self.head.split(b" ", 2)[1].rpartition(b":")
        self.transport.pause_reading()
        task = asyncio.get_running_loop().create_task(
            self.dial(host.decode(), int(port), self.head[end + 4 :])
        )
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def dial(self, host: str, port: int, early: bytes) -> None:
        loop = asyncio.get_running_loop()
        try:
            upstream, _ = await loop.create_connection(Upstream, host, port)
        except OSError:
            self.transport.close()
            return
        client = self.transport
        client.write(OK)
        done = [0]
        client.set_protocol(Half(upstream, done))
        upstream.set_protocol(Half(client, done))
        if early:
            upstream.write(early)
        client.resume_reading()
        upstream.resume_reading()


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()
    server = await loop.create_server(lambda: Head(tasks), "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))
