"""The benchmark's origin: one uvloop process serving source, sink and echo on 127.0.0.1.

A client sends one command line, then:

* ``SOURCE <n>\\n``: the origin sends n bytes and closes;
* ``TRICKLE <n>\\n``: the same, one segment every 20 ms (a paced stream: a video, a
  slow API), 580 kbit/s;
* ``SINK <n>\\n``: the client sends n bytes, the origin answers ``OK\\n``;
* ``TSINK <n>\\n``: the same, but the answer is ``OK <json>\\n``, the bytes received in
  each 10 ms window (``{window: bytes}``, windows of time.monotonic() x 100);
* ``ECHO\\n``: everything is echoed back;
* ``GET ...``: plain HTTP/1.1, keep-alive: every request head is answered with 1 KiB
  (``Connection: close`` in a request closes after its answer).

Usage: ``python benchmarks/origin.py [HOST] [ACCEPTS_FILE]`` prints the port it listens
on (HOST defaults to 127.0.0.1), then serves until stdin closes; with ACCEPTS_FILE it
writes there, as JSON, the time.monotonic() of every accepted connection.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time

CHUNK = memoryview(bytes(1 << 20))
TRICKLE_SEGMENT = 1448  # one Ethernet TCP segment with timestamps ...
TRICKLE_INTERVAL_S = 0.02  # ... every 20 ms
HTTP_REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 1024\r\n\r\n" + b"h" * 1024
ACCEPTED: list[float] = []


class OriginProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport
        self.head = b""
        self.mode = ""
        self.remaining = 0
        self.paused = False
        self.windows: dict[int, int] | None = None  # TSINK: bytes per 10 ms window

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        ACCEPTED.append(time.monotonic())
        self.transport = transport  # type: ignore[assignment]
        self.transport.set_write_buffer_limits(high=4 << 20)

    def _http(self, data: bytes) -> None:
        self.head += data
        while (end := self.head.find(b"\r\n\r\n")) >= 0:
            request, self.head = self.head[:end], self.head[end + 4 :]
            self.transport.write(HTTP_REPLY)
            if b"\nconnection: close" in request.lower():
                self.transport.close()
                return

    def data_received(self, data: bytes) -> None:
        if self.mode == "HTTP":
            self._http(data)
        elif self.mode == "SINK":
            self._sink(len(data))
        elif self.mode == "ECHO":
            self.transport.write(data)
        elif not self.mode and not self.head and data.startswith(b"GET "):
            self.mode = "HTTP"
            self._http(data)
        elif not self.mode:
            self.head += data
            line, sep, rest = self.head.partition(b"\n")
            if not sep:
                return
            command, _, arg = line.decode().partition(" ")
            self.mode = command
            self.remaining = int(arg or 0)
            if command == "SOURCE":
                self._source()
            elif command == "TRICKLE":
                self._trickle()
            elif command in ("SINK", "TSINK"):
                self.mode = "SINK"
                if command == "TSINK":
                    self.windows = {}
                self._sink(len(rest))
            elif command == "ECHO" and rest:
                self.transport.write(rest)

    def _sink(self, n: int) -> None:
        self.remaining -= n
        if self.windows is not None and n:
            window = int(time.monotonic() * 100)
            self.windows[window] = self.windows.get(window, 0) + n
        if self.remaining <= 0 and self.mode == "SINK":
            self.mode = "DONE"
            if self.windows is None:
                self.transport.write(b"OK\n")
            else:
                self.transport.write(b"OK " + json.dumps(self.windows).encode() + b"\n")

    def _source(self) -> None:
        while self.remaining > 0 and not self.paused:
            chunk = CHUNK[: min(self.remaining, len(CHUNK))]
            self.remaining -= len(chunk)
            self.transport.write(chunk)
        if self.remaining <= 0:
            self.transport.close()

    def _trickle(self) -> None:
        if self.transport.is_closing():
            return
        chunk = CHUNK[: min(self.remaining, TRICKLE_SEGMENT)]
        self.remaining -= len(chunk)
        self.transport.write(chunk)
        if self.remaining <= 0:
            self.transport.close()
        else:
            asyncio.get_running_loop().call_later(TRICKLE_INTERVAL_S, self._trickle)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.mode == "SOURCE":
            self._source()


async def main() -> None:
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1", 0))
    sock.listen(4096)
    server = await loop.create_server(OriginProtocol, sock=sock, backlog=4096)
    print(sock.getsockname()[1], flush=True)
    await loop.run_in_executor(None, sys.stdin.read)
    server.close()


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
    if len(sys.argv) > 2:
        with open(sys.argv[2], "w") as f:
            json.dump(ACCEPTED, f)
