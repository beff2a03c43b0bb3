"""The benchmark's origin: one uvloop process serving source, sink and echo on 127.0.0.1.

A client sends one command line, then:

* ``SOURCE <n>\\n``: the origin sends n bytes and closes;
* ``TRICKLE <n>\\n``: the same, one segment every 20 ms (a paced stream: a video, a
  slow API), 580 kbit/s;
* ``SINK <n>\\n``: the client sends n bytes, the origin answers ``OK\\n``;
* ``TSINK <n>\\n``: the same, but the answer is ``OK <json>\\n``, the bytes received in
  each 10 ms window (``{window: bytes}``, windows of time.monotonic() x 100). These
  connections are read by one thread that takes at most 16 KiB from each in turn
  (``FairSink``): the loop reads up to 256 KiB a socket and reads a socket again while
  its reads fill, so with 200 uploads it was the loop's order of reads that the windows
  showed (Jain while competing 0.68-0.78 for a direct connection; 0.98-0.99 this way);
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
import os
import select
import socket
import sys
import threading
import time

CHUNK = memoryview(bytes(1 << 20))
TRICKLE_SEGMENT = 1448  # one Ethernet TCP segment with timestamps ...
TRICKLE_INTERVAL_S = 0.02  # ... every 20 ms
HTTP_REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 1024\r\n\r\n" + b"h" * 1024
ACCEPTED: list[float] = []
FAIR_READ = 16 * 1024  # bytes a TSINK connection gives per turn
FAIR_SINK: FairSink


class FairSink(threading.Thread):
    """Reads every TSINK connection in turn, at most FAIR_READ bytes a turn, from a
    duplicate of its descriptor while the loop's transport stays paused; the loop
    writes the answer and closes."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(daemon=True)
        self.loop = loop
        self.poll = select.epoll()
        self.sinks: dict[int, OriginProtocol] = {}

    def add(self, protocol: OriginProtocol) -> None:
        protocol.transport.pause_reading()
        fd = os.dup(protocol.transport.get_extra_info("socket").fileno())
        self.sinks[fd] = protocol
        self.poll.register(fd, select.EPOLLIN)

    def run(self) -> None:
        while True:
            for fd, _events in self.poll.poll():
                protocol = self.sinks[fd]
                try:
                    data = os.read(fd, FAIR_READ)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                protocol.count(len(data))
                if protocol.remaining <= 0 or not data:
                    # Forget it before closing: the loop's next dup() may reuse the number.
                    del self.sinks[fd]
                    self.poll.unregister(fd)
                    os.close(fd)
                    self.loop.call_soon_threadsafe(protocol.answer)


READ_BUFFER = memoryview(bytearray(256 * 1024))  # the loop's reads, one at a time


class OriginProtocol(asyncio.BufferedProtocol):
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

    def get_buffer(self, sizehint: int) -> memoryview:
        """Until the command line is known, a read takes at most what FairSink takes in
        a turn: a TSINK upload's first read would otherwise be up to 256 KiB, taken by
        the loop while it accepts the burst's later connections (with tunnels coming up
        over 100 ms through a proxy, windows in which the new flows got every byte)."""
        return READ_BUFFER if self.mode else READ_BUFFER[:FAIR_READ]

    def buffer_updated(self, nbytes: int) -> None:
        if self.mode in ("SINK", "TSINK"):  # only the count matters
            self.data_received(READ_BUFFER[:nbytes])
        else:  # the buffer is reused by the next read: keep a copy
            self.data_received(bytes(READ_BUFFER[:nbytes]))

    def _http(self, data: bytes) -> None:
        self.head += data
        while (end := self.head.find(b"\r\n\r\n")) >= 0:
            request, self.head = self.head[:end], self.head[end + 4 :]
            self.transport.write(HTTP_REPLY)
            if b"\nconnection: close" in request.lower():
                self.transport.close()
                return

    def data_received(self, data: bytes | memoryview) -> None:
        if self.mode == "HTTP":
            self._http(data)
        elif self.mode == "SINK":
            self._sink(len(data))
        elif self.mode == "TSINK":  # read before pause_reading took hold
            self.count(len(data))
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
            elif command == "SINK":
                self._sink(len(rest))
            elif command == "TSINK":
                self.windows = {}
                self.count(len(rest))
                if self.remaining > 0:
                    FAIR_SINK.add(self)
                else:
                    self.answer()
            elif command == "ECHO" and rest:
                self.transport.write(rest)

    def _sink(self, n: int) -> None:
        self.remaining -= n
        if self.remaining <= 0 and self.mode == "SINK":
            self.mode = "DONE"
            self.transport.write(b"OK\n")

    def count(self, n: int) -> None:
        """TSINK: ``n`` bytes in now (the fair sink's thread, or the loop before it)."""
        self.remaining -= n
        if self.windows is not None and n:
            window = int(time.monotonic() * 100)
            self.windows[window] = self.windows.get(window, 0) + n

    def answer(self) -> None:
        self.mode = "DONE"
        self.transport.write(b"OK " + json.dumps(self.windows).encode() + b"\n")
        self.transport.resume_reading()  # the client's EOF ends the connection, as SINK's

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
    global FAIR_SINK
    loop = asyncio.get_running_loop()
    FAIR_SINK = FairSink(loop)
    FAIR_SINK.start()
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
