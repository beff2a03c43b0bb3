"""Bulk tunnels spliced in the kernel (net/relay/splice.py): whole data, half-close, resets,
idle timeout and shutdown, with no descriptor left behind; never when shaped."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import struct

import pytest

from fyntr.limits import SPLICE_AFTER_BYTES, SPLICE_MAX_TUNNELS
from fyntr.metrics import render_prometheus
from fyntr.net.front.listen import splice_capacity
from fyntr.net.relay import splice
from fyntr.net.relay.tunnel import Tunnel
from fyntr.net.server import Server
from tests.support.net import (
    OK,
    FakeClock,
    connect_via,
    echo,
    http_port,
    loopback_settings,
    origin,
    proxy,
    until,
)

BULK = 8 * SPLICE_AFTER_BYTES

pytestmark = pytest.mark.skipif(not splice.AVAILABLE, reason="no splice() on this platform")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def only_tunnel(server: Server) -> Tunnel:
    [tunnel] = server.tunnels
    assert isinstance(tunnel, Tunnel)
    return tunnel


def closed_reasons(server: Server) -> dict[str, int]:
    """How the relays that ended ended, by reason, spliced ones marked ``+spliced``."""
    reasons = dict(server.metrics.closed)
    if server.metrics.closed_spliced:
        reasons["+spliced"] = server.metrics.closed_spliced
    return reasons


async def spliced_echo(
    server: Server, origin_port: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A tunnel to an echo origin that has carried enough to be spliced."""
    reader, writer, head = await connect_via(http_port(server), f"127.0.0.1:{origin_port}")
    assert head == OK
    writer.write(bytes(2 * SPLICE_AFTER_BYTES))
    await reader.readexactly(2 * SPLICE_AFTER_BYTES)
    assert only_tunnel(server).splice is not None
    return reader, writer


async def test_a_bulk_download_is_spliced_and_arrives_whole() -> None:
    payload = os.urandom(BULK)

    async def source(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(payload)
        await writer.drain()
        writer.write_eof()
        await reader.read()

    async with origin(source) as o, proxy(loopback_settings(o.port)) as server:
        before = open_fds()
        reader, writer, head = await connect_via(http_port(server), f"127.0.0.1:{o.port}")
        assert head == OK
        got = await asyncio.wait_for(reader.read(), 10)  # to the origin's FIN
        assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
        tunnel = only_tunnel(server)
        assert tunnel.splice is not None  # handed over once 1 MiB had gone through
        assert tunnel.down.nbytes == BULK
        assert b"fyntr_spliced_flows 1.0" in render_prometheus(server.snapshot())
        writer.close()
        await until(lambda: not server.tunnels)
        assert server.snapshot().spliced_flows == 0
        assert closed_reasons(server) == {"closed": 1, "+spliced": 1}
        assert server.splicer is not None and server.splicer.active == 0
        assert server.admission.active == 0
        await until(lambda: open_fds() <= before)  # sockets and pipes all closed


async def test_a_spliced_echo_carries_both_directions_and_the_fin() -> None:
    payload = os.urandom(BULK)
    async with origin(echo) as o, proxy(loopback_settings(o.port)) as server:
        reader, writer, head = await connect_via(http_port(server), f"127.0.0.1:{o.port}")
        assert head == OK
        tunnel = only_tunnel(server)

        async def send() -> None:
            writer.write(payload)
            await writer.drain()
            writer.write_eof()  # the origin echoes to the end, then sends its FIN

        sender = asyncio.ensure_future(send())
        got = await asyncio.wait_for(reader.read(), 10)
        await sender
        assert got == payload
        assert (tunnel.up.nbytes, tunnel.down.nbytes) == (BULK, BULK)
        await until(lambda: not server.tunnels)  # both FINs passed on: the tunnel ends
        assert closed_reasons(server) == {"closed": 1, "+spliced": 1}
        writer.close()


async def test_a_reset_from_the_origin_ends_a_spliced_tunnel() -> None:
    streaming = asyncio.Event()

    async def reset_after_bulk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(bytes(2 * SPLICE_AFTER_BYTES))
        await writer.drain()
        await streaming.wait()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # RST

    async with origin(reset_after_bulk) as o, proxy(loopback_settings(o.port)) as server:
        reader, writer, head = await connect_via(http_port(server), f"127.0.0.1:{o.port}")
        assert head == OK
        await reader.readexactly(2 * SPLICE_AFTER_BYTES)
        assert only_tunnel(server).splice is not None
        streaming.set()
        with pytest.raises(ConnectionResetError):  # passed on as a reset, not a FIN
            await asyncio.wait_for(reader.read(), 5)
        await until(lambda: not server.tunnels)
        assert closed_reasons(server) == {"upstream_reset": 1, "+spliced": 1}
        assert server.admission.active == 0
        assert server.splicer is not None and server.splicer.active == 0
        writer.close()


async def test_a_spliced_tunnel_is_closed_when_idle() -> None:
    clock = FakeClock()
    async with (
        origin(echo) as o,
        proxy(loopback_settings(o.port, idle_timeout_s=300), clock=clock) as server,
    ):
        reader, writer = await spliced_echo(server, o.port)
        server.sweep()  # sees the spliced bytes as activity
        clock.advance(299)
        server.sweep()
        assert len(server.tunnels) == 1
        clock.advance(2)
        server.sweep()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        await until(lambda: not server.tunnels)
        assert closed_reasons(server) == {"idle_timeout": 1, "+spliced": 1}
        writer.close()


async def test_shutdown_closes_spliced_tunnels_and_their_pipes() -> None:
    async with origin(echo) as o:
        before = open_fds()
        async with proxy(loopback_settings(o.port)) as server:
            reader, writer = await spliced_echo(server, o.port)
        assert closed_reasons(server) == {"shutdown": 1, "+spliced": 1}
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        await until(lambda: open_fds() <= before)


async def test_a_tunnel_stays_on_the_transports_when_no_splice_can_be_had() -> None:
    """At the splice limit (or out of descriptors) a bulk tunnel goes on as it was, and
    is looked at again every SPLICE_AFTER_BYTES."""
    payload = os.urandom(BULK)
    async with origin(echo) as o, proxy(loopback_settings(o.port)) as server:
        assert server.splicer is not None
        server.splicer.capacity = 0
        reader, writer, head = await connect_via(http_port(server), f"127.0.0.1:{o.port}")
        assert head == OK
        tunnel = only_tunnel(server)
        writer.write(payload)
        assert await asyncio.wait_for(reader.readexactly(BULK), 10) == payload
        assert tunnel.splice is None
        assert tunnel.up.splice_at > BULK  # asked again, 1 MiB at a time
        server.splicer.capacity = 1
        # In 64 KiB steps, each echoed before the next: a look at a 1 MiB mark finds
        # nothing held in fyntr (with the whole payload in flight both ways, the standard
        # loop's write buffers are rarely empty at the mark, and the tunnel waits).
        step = 64 * 1024
        for offset in range(0, BULK, step):
            writer.write(payload[offset : offset + step])
            assert (
                await asyncio.wait_for(reader.readexactly(step), 10)
                == (payload[offset : offset + step])
            )
            if tunnel.splice is not None:
                break
        assert tunnel.splice is not None  # the next look found room
        writer.close()


async def test_shaped_tunnels_are_never_spliced() -> None:
    """With a rate, DRR shares it out: every byte must stay in fyntr's queues."""
    async with (
        origin(echo) as o,
        proxy(loopback_settings(o.port, upload_rate=10**9, download_rate=10**9)) as server,
    ):
        assert server.splicer is None
        reader, writer, head = await connect_via(http_port(server), f"127.0.0.1:{o.port}")
        assert head == OK
        writer.write(bytes(2 * SPLICE_AFTER_BYTES))
        await reader.readexactly(2 * SPLICE_AFTER_BYTES)
        assert only_tunnel(server).splice is None
        writer.close()


def test_splicing_only_takes_descriptors_beyond_the_caps_share() -> None:
    share = 1000 * 2 + 64  # --max-connections 1000: two sockets each, plus headroom
    assert splice_capacity(1000, share) == 0
    assert splice_capacity(1000, share + 4 * 10 + 3) == 10
    assert splice_capacity(1000, 10**6) == SPLICE_MAX_TUNNELS
    assert splice_capacity(0, 64 + 16 * 5) == 5  # unlimited cap: a quarter of the limit
    assert splice_capacity(1000, None) == 0
