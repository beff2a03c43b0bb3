"""A yardstick for fyntr's plain HTTP: a forwarder on uvloop and httptools with nothing
else in it, as bare_relay.py is for tunnels.

No policy, no pool shared between clients, no checks of what the origin sends, no
request bodies (the benchmark's GETs have none), no logging, no timeouts: each client
connection gets one origin connection, opened at its first request and kept while both
sides keep theirs; each request goes on in origin form, each response back as it comes
(Content-Length framing only, which benchmarks/origin.py uses). What a request costs
here is what plain HTTP on CPython, uvloop and llhttp costs before a proxy does anything
of its own; the benchmark runs it as the contender ``bare-forward`` for the plain HTTP
workloads only.

Usage: ``python benchmarks/bare_forward.py PORT`` (serves 127.0.0.1:PORT until killed).
Not a proxy to use: it forwards anywhere it is asked to.
"""

from __future__ import annotations

import asyncio
import sys
from urllib.parse import urlsplit

import httptools
import uvloop


class Origin(asyncio.Protocol):
    """The origin side of one client's connection: responses go back as they come."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.client.transport.write(data)
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        if self.client.closing:
            self.client.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.transport.close()


class Client(asyncio.Protocol):
    """One client connection: absolute-form requests in, origin-form requests out."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport
        self.origin: Origin | None = None
        self.pending: list[bytes] = []  # sent while the origin connection opens
        self.head: list[bytes] = []
        self.url = b""
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() not in (b"proxy-connection", b"connection"):
            self.head += (name, b": ", value, b"\r\n")

    def on_headers_complete(self) -> None:
        parts = urlsplit(self.url.decode())
        method = self.parser.get_method()
        self.closing = not self.parser.should_keep_alive()
        path = (parts.path or "/") + ("?" + parts.query if parts.query else "")
        request = b"".join([method, b" ", path.encode(), b" HTTP/1.1\r\n", *self.head, b"\r\n"])
        self.head, self.url = [], b""
        if self.origin is None:
            self.pending.append(request)
            if len(self.pending) == 1:
                host, port = parts.hostname, parts.port or 80
                asyncio.get_running_loop().create_task(self.open(str(host), port))
        else:
            self.origin.transport.write(request)

    async def open(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            _transport, origin = await loop.create_connection(lambda: Origin(self), host, port)
        except OSError:
            self.transport.close()
            return
        self.origin = origin
        origin.transport.write(b"".join(self.pending))
        self.pending = []

    def connection_lost(self, exc: Exception | None) -> None:
        if self.origin is not None:
            self.origin.transport.close()


async def main(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Client, "127.0.0.1", port)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))
