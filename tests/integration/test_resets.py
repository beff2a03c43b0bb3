"""A reset on one side of a tunnel reaches the other side as a reset, on both engines
(transports and splice), while the other peer is still sending: a FIN there would pass a
truncated stream off as complete."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import struct

from fyntr.limits import SPLICE_AFTER_BYTES
from tests.support.faulty_origin import stream
from tests.support.net import connect_via, http_port, loopback_settings, origin, proxy, until

TUNNELS = 10
STREAM_BYTES = 20 * 2**20
RST = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s


def reset(writer: asyncio.StreamWriter) -> None:
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RST)
    writer.transport.abort()


async def trickle(writer: asyncio.StreamWriter) -> None:
    """Keep sending, slowly enough that nothing unread piles up in the proxy's socket (so
    that the proxy's close would be a FIN unless it resets on purpose)."""
    try:
        while True:
            writer.write(bytes(1024))
            await writer.drain()
            await asyncio.sleep(0.005)
    except ConnectionError:
        pass


async def outcome(reader: asyncio.StreamReader) -> str:
    try:
        while await reader.read(1 << 16):
            pass
    except ConnectionError:  # ECONNRESET, or EPIPE on the writer's side of a reset
        return "reset"
    return "eof"


async def test_an_origin_reset_mid_stream_reaches_the_client_as_a_reset() -> None:
    """Origins send a random prefix (some spliced, some not yet) and then reset."""

    async def prefix_then_reset(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(os.urandom(random.randrange(SPLICE_AFTER_BYTES // 2, STREAM_BYTES)))
        await writer.drain()
        reset(writer)

    async with origin(prefix_then_reset) as o, proxy(loopback_settings(o.port)) as server:

        async def one() -> str:
            reader, writer, _ = await connect_via(http_port(server), f"127.0.0.1:{o.port}")
            sender = asyncio.ensure_future(trickle(writer))
            try:
                return await asyncio.wait_for(outcome(reader), 20)
            finally:
                sender.cancel()
                writer.close()

        results = await asyncio.gather(*(one() for _ in range(TUNNELS)))
        assert results == ["reset"] * TUNNELS
        await until(lambda: not server.tunnels)
        assert server.admission.active == 0


async def test_a_client_reset_mid_stream_reaches_the_origin_as_a_reset() -> None:
    origin_saw: list[str] = []

    async def stream_and_listen(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sender = asyncio.ensure_future(trickle(writer))
        origin_saw.append(await outcome(reader))
        sender.cancel()

    async with origin(stream_and_listen) as o, proxy(loopback_settings(o.port)) as server:

        async def one(spliced: bool) -> None:
            _reader, writer, _ = await connect_via(http_port(server), f"127.0.0.1:{o.port}")
            if spliced:
                writer.write(bytes(2 * SPLICE_AFTER_BYTES))
                await writer.drain()
            await asyncio.sleep(0.1)
            reset(writer)

        await asyncio.gather(*(one(spliced=n % 2 == 0) for n in range(TUNNELS)))
        await until(lambda: len(origin_saw) == TUNNELS, timeout=10)
        assert origin_saw == ["reset"] * TUNNELS
        await until(lambda: not server.tunnels)


async def test_an_origin_reset_while_both_ways_stream_reaches_the_client() -> None:
    """Both peers stream 20 MB at once in 64 KiB writes with short random pauses, and
    the origin resets after a random part of its download: the client, still uploading,
    sees the reset (or at least the end of the download) and no tunnel is left behind."""

    async def stream_then_reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        drain = asyncio.ensure_future(outcome(reader))
        with contextlib.suppress(ConnectionError):
            await stream(writer, random.randrange(SPLICE_AFTER_BYTES // 2, STREAM_BYTES))
        reset(writer)
        drain.cancel()

    async with origin(stream_then_reset) as o, proxy(loopback_settings(o.port)) as server:

        async def one() -> str:
            reader, writer, _ = await connect_via(http_port(server), f"127.0.0.1:{o.port}")

            async def upload() -> None:
                with contextlib.suppress(ConnectionError):
                    await stream(writer, STREAM_BYTES)
                    writer.write_eof()

            sender = asyncio.ensure_future(upload())
            try:
                return await asyncio.wait_for(outcome(reader), 40)
            finally:
                sender.cancel()
                writer.close()

        results = await asyncio.gather(*(one() for _ in range(TUNNELS)))
        assert set(results) <= {"reset", "eof"}, results
        await until(lambda: not server.tunnels)
        assert server.admission.active == 0
