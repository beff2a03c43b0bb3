"""DRR scheduling and shaping through real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator, Sequence

from fyntr.net.relay.tunnel import Tunnel
from fyntr.net.server import Server
from tests.support.net import (
    OK,
    connect_via,
    echo,
    fyntr_process,
    http_port,
    loopback_settings,
    origin,
    proxy,
    until,
)


async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Reads ``<n>\\n`` then n bytes, answers OK."""
    size = int(await reader.readline())
    await reader.readexactly(size)
    writer.write(b"OK\n")
    await writer.drain()


def jain(values: Sequence[float]) -> float:
    return sum(values) ** 2 / (len(values) * sum(v * v for v in values))


async def upload(port: int, origin_port: int, size: int) -> tuple[float, float]:
    reader, writer, head = await connect_via(port, f"127.0.0.1:{origin_port}")
    try:
        assert head == OK
        start = time.monotonic()
        writer.write(b"%d\n" % size)
        block = bytes(32 * 1024)
        for _ in range(size // len(block)):
            writer.write(block)
            await writer.drain()
        assert await reader.readline() == b"OK\n"
        return start, time.monotonic()
    finally:
        writer.close()


async def test_shaped_uploads_share_the_rate_fairly() -> None:
    """50 uploads with --upload-rate: halfway through, Jain's index of the bytes each has
    had through the scheduler >= 0.95 (read from the lanes, not from a wall clock the
    machine's load would skew), and the aggregate within 10% of the rate."""
    rate = 20_000_000
    size = 1024 * 1024
    async with (
        origin(sink) as o,
        proxy(loopback_settings(o.port, upload_rate=rate, max_connections=0)) as server,
    ):
        flows = [asyncio.ensure_future(upload(http_port(server), o.port, size)) for _ in range(50)]
        await until(lambda: sum(t.up.nbytes for t in server.tunnels) >= 25 * size, timeout=20)
        shares = [t.up.nbytes - t.up.held() for t in server.tunnels]  # written out
        results = await asyncio.gather(*flows)
        first = min(start for start, _ in results)
        last = max(end for _, end in results)
        aggregate = 50 * size / (last - first)
        assert len(shares) == 50 and jain(shares) >= 0.95, shares
        assert abs(aggregate - rate) / rate <= 0.10, aggregate


@contextlib.asynccontextmanager
async def behind_bulk_uploads(
    rate: int, flows: int, size: int, settle_s: float
) -> AsyncIterator[tuple[Server, asyncio.StreamReader, asyncio.StreamWriter]]:
    """fyntr at ``rate`` with ``flows`` bulk uploads of ``size`` under way for
    ``settle_s``, and a fresh tunnel to an echo origin beside them."""
    async with (
        origin(sink) as bulk_origin,
        origin(echo) as echo_origin,
        proxy(
            loopback_settings(
                bulk_origin.port, echo_origin.port, upload_rate=rate, max_connections=0
            )
        ) as server,
    ):
        port = http_port(server)
        bulk = [asyncio.ensure_future(upload(port, bulk_origin.port, size)) for _ in range(flows)]
        await asyncio.sleep(settle_s)
        reader, writer, head = await connect_via(port, f"127.0.0.1:{echo_origin.port}")
        assert head == OK
        try:
            yield server, reader, writer
        finally:
            writer.close()
            for task in bulk:
                task.cancel()
            await asyncio.gather(*bulk, return_exceptions=True)


async def round_trip(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, size: int
) -> float:
    started = time.monotonic()
    writer.write(b"q" * size)
    assert await asyncio.wait_for(reader.readexactly(size), 5) == b"q" * size
    return time.monotonic() - started


async def test_small_flow_is_not_stuck_behind_bulk_uploads() -> None:
    rate = 4_000_000
    # After 0.5 s the shaper's queues are full: 20 x 256 KiB of backlog.
    async with behind_bulk_uploads(rate, 20, 8 * 1024 * 1024, 0.5) as (server, reader, writer):
        queued = server.pumps[0].queued_bytes
        assert queued > 2_000_000, queued  # > 0.5 s of backlog at the rate
        elapsed = await round_trip(reader, writer, 200)  # a small API call
        # FIFO behind the backlog would take queued / rate (> 0.5 s); DRR serves the new
        # sparse flow within a few quanta of the bucket.
        assert elapsed < 0.1 * queued / rate, (elapsed, queued / rate)


async def test_at_a_low_rate_a_small_flow_waits_for_its_own_tokens_not_a_quantums() -> None:
    """At 256 kbit/s (auto's floor while a queue drains) a quantum's tokens take 0.5 s;
    a 64-byte request needs 2 ms of them and must not wait for the whole quantum."""
    async with behind_bulk_uploads(32_000, 2, 1 << 20, 0.3) as (server, reader, writer):
        assert server.pumps[0].queued_bytes > 0  # the bulk flows hold the bucket empty
        worst = max([await round_trip(reader, writer, 64) for _ in range(5)])
        assert worst < 0.1, worst  # a quantum's wait: up to 0.5 s


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_a_stalled_receiver_leaves_memory_flat() -> None:
    """The origin never reads: the sender is paused and fyntr holds at most its
    watermarks, so its RSS does not grow with what the client tries to send."""
    stalled = asyncio.Event()

    async def never_reads(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.transport.pause_reading()  # type: ignore[attr-defined]
        await stalled.wait()

    async with origin(never_reads) as o:
        with fyntr_process(
            "--port", "0", "--allow-cidr", "127.0.0.0/8", "--allow-port", str(o.port)
        ) as proc:
            sock = socket.create_connection(("127.0.0.1", proc.ports[0]))
            sock.sendall(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n" % o.port)
            assert sock.recv(100) == OK
            sock.setblocking(False)
            block = os.urandom(1 << 20)

            async def push(seconds: float) -> int:
                sent = 0
                deadline = time.monotonic() + seconds
                while time.monotonic() < deadline:
                    try:
                        sent += sock.send(block)
                    except BlockingIOError:
                        await asyncio.sleep(0.01)
                return sent

            first = await push(1.0)  # fills the kernel buffers and fyntr's watermarks
            before = rss_kib(proc.proc.pid)
            more = await push(1.5)
            after = rss_kib(proc.proc.pid)
            assert first > 0
            assert more < 1 << 20, "the sender must be paused by backpressure"
            assert after - before < 2048, (before, after)
            sock.close()
            stalled.set()


async def test_shaped_flow_survives_its_destination_pausing_with_an_empty_queue() -> None:
    """With a rate set, the budget lets chunks straight through; the destination then
    pauses (its reader is late) and resumes with nothing queued. The flow must go on:
    a lane left parked would never be scheduled again."""
    size = 48 * 1024 * 1024

    async def late_sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        count = int(await reader.readline())
        await asyncio.sleep(0.3)  # fyntr's write buffer to us fills up meanwhile
        await reader.readexactly(count)
        writer.write(b"OK\n")
        await writer.drain()

    async with (
        origin(late_sink) as o,
        proxy(loopback_settings(o.port, upload_rate=200_000_000)) as server,
    ):
        # upload() returns once the origin has every byte: a lane left parked never would.
        start, end = await asyncio.wait_for(upload(http_port(server), o.port, size), 20)
        assert end - start >= 0.5 * size / 200_000_000  # and the rate was in force


async def test_each_client_gets_its_share_whatever_its_flows() -> None:
    """Two devices of a house (127.0.0.2 with 10 uploads, 127.0.0.3 with one) under one
    rate: the rounds are over clients first, so the one flow gets about half of what the
    scheduler writes out, not an eleventh (docs/house.md)."""
    rate = 8_000_000
    size = 8 * 1024 * 1024

    async def upload_from(address: str, port: int, origin_port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(address, 0))
        target = f"127.0.0.1:{origin_port}"
        writer.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        try:
            assert await reader.readuntil(b"\r\n\r\n") == OK
            writer.write(b"%d\n" % size)
            block = bytes(32 * 1024)
            for _ in range(size // len(block)):
                writer.write(block)
                await writer.drain()
        finally:
            writer.close()

    async with (
        origin(sink) as o,
        proxy(loopback_settings(o.port, upload_rate=rate, max_connections=0)) as server,
    ):
        port = http_port(server)
        flows = [upload_from("127.0.0.2", port, o.port) for _ in range(10)]
        flows.append(upload_from("127.0.0.3", port, o.port))
        tasks = [asyncio.ensure_future(f) for f in flows]
        try:
            await until(lambda: len(server.tunnels) == 11, timeout=10)

            def written() -> dict[str, int]:
                out = {"127.0.0.2": 0, "127.0.0.3": 0}
                for t in server.tunnels:
                    assert isinstance(t, Tunnel)
                    peer = t.client.get_extra_info("peername")[0]
                    out[peer] += t.up.nbytes - t.up.held()
                return out

            before = written()
            await until(lambda: sum(written().values()) - sum(before.values()) >= rate, 20)
            after = written()
            device_b = after["127.0.0.3"] - before["127.0.0.3"]
            total = sum(after.values()) - sum(before.values())
            assert 0.4 <= device_b / total <= 0.6, (device_b, total)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
