"""While the upload's auto rate is in force, a routed upstream socket keeps at most
AUTORATE_KERNEL_UNSENT_BYTES unsent, plus the one write that crossed the bound, and no
write is larger than that (net/relay/pump.Pump.watch_unsent):
the rest waits in fyntr's queue, within the shaper's reach, and goes on once the socket
has sent (docs/zero-configuration.md)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from fyntr.limits import (
    AUTORATE_KERNEL_UNSENT_BYTES,
    AUTORATE_UNSENT_BYTES,
    KIB,
    QUANTUM_DEFAULT_BYTES,
    QUANTUM_MIN_BYTES,
)
from fyntr.net.kernel.sockopt import UNSENT_READABLE, limit_unsent, unsent_bytes
from fyntr.net.relay.pump import Lane, Pump
from tests.support.net import until

pytestmark = pytest.mark.skipif(not UNSENT_READABLE, reason="SIOCOUTQNSD is Linux's")

TOTAL = 1024 * KIB
CHUNK = 64 * KIB
# 3 Mbit/s: a DRR turn writes a packet's worth (QUANTUM_MIN_BYTES), and such small writes
# fill the socket's last segment buffer past TCP_NOTSENT_LOWAT, as on a slow uplink.
RATE = 375_000
WRITE = QUANTUM_MIN_BYTES


def bounded_pump() -> Pump:
    """An upload pump under the auto rate (net/watch/autorate.py)."""
    pump = Pump(asyncio.get_running_loop(), RATE)
    pump.watches_unsent = True
    return pump


def pattern(size: int) -> bytes:
    return bytes(i % 251 for i in range(size))


class Source(asyncio.Protocol):
    """Pushes what it reads into its lane, as a tunnel's client end does."""

    lane: Lane

    def data_received(self, data: bytes) -> None:
        self.lane.push(data)


class Destination(asyncio.Protocol):
    """Tells its lane when the transport's write buffer crosses its marks, as a tunnel's
    upstream end does (net/relay/tunnel.py)."""

    lane: Lane

    def pause_writing(self) -> None:
        self.lane.dst_paused_writing()

    def resume_writing(self) -> None:
        self.lane.dst_resumed_writing()


@asynccontextmanager
async def lane_to_stalled_receiver(
    pump: Pump, routed: bool
) -> AsyncIterator[tuple[Lane, socket.socket, socket.socket]]:
    """A lane from a real source transport to a real destination transport whose peer
    (returned, reading nothing yet) has a small receive window, so that what the lane
    writes stays in the sending socket; and the source's peer, to send through it."""
    loop = asyncio.get_running_loop()
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        dst, end = await loop.create_connection(Destination, *listener.getsockname())
        receiver, _ = listener.accept()
    near, far = socket.socketpair()
    src, start = await loop.create_connection(Source, sock=near)
    limit_unsent(dst, AUTORATE_UNSENT_BYTES)  # as the upload sampler does to a routed dial
    lane = end.lane = start.lane = Lane(pump, src, dst, lambda: False, routed=routed)
    try:
        yield lane, receiver, far
    finally:
        for transport in (src, dst):
            transport.close()
        receiver.close()
        far.close()
        pump.close()


async def receive(receiver: socket.socket, size: int, slow: asyncio.Event | None = None) -> bytes:
    """Read ``size`` bytes; while ``slow`` is set, a packet's worth every 10 ms (a link
    slower than the rate)."""
    loop = asyncio.get_running_loop()
    receiver.setblocking(False)
    got = bytearray()
    while len(got) < size:
        paced = slow is not None and slow.is_set()
        if paced:
            await asyncio.sleep(0.01)
        data = await asyncio.wait_for(loop.sock_recv(receiver, 1500 if paced else 1 << 16), 10)
        assert data, "the connection ended early"
        got += data
    return bytes(got)


def beyond_the_shaper(lane: Lane) -> int:
    """What the lane has written that the socket has not sent: out of the rate's reach."""
    return unsent_bytes(lane.unsent_fd) + lane.dst.get_write_buffer_size()


@pytest.mark.parametrize("chunk", [QUANTUM_DEFAULT_BYTES, CHUNK])
async def test_a_routed_socket_that_sends_slowly_holds_little_and_gets_every_byte(
    chunk: int,
) -> None:
    """The socket sends at 150 KB/s, the rate allows 375: what waits beyond the shaper
    stays within the bound plus one write of at most the bound, the rest in fyntr's
    queue. Reads of a quantum went out whole while the bucket had tokens, and a lone
    flow's turn as large as the bucket's burst: 16-20 KiB a socket (fibre profile: 40
    sockets held 0.5-0.8 MB, 17 ms of the router's queue kept for 0.5 s after a cut)."""
    pump = bounded_pump()
    data = pattern(TOTAL)
    async with lane_to_stalled_receiver(pump, routed=True) as (lane, receiver, _):
        assert lane.write_max == AUTORATE_KERNEL_UNSENT_BYTES
        for start in range(0, TOTAL, chunk):
            lane.push(data[start : start + chunk])
        slow = asyncio.Event()
        slow.set()
        reading = asyncio.create_task(receive(receiver, TOTAL, slow))
        held = []
        for _ in range(100):
            await asyncio.sleep(0.005)
            held.append(beyond_the_shaper(lane))
        assert 0 < max(held) <= 2 * AUTORATE_KERNEL_UNSENT_BYTES
        assert lane.queued >= TOTAL - 256 * KIB  # the rest waits in fyntr
        slow.clear()
        assert await reading == data  # every byte, in order, once the socket sends
        # and the source is read again: a lane parked by its last write, its queue empty,
        # must resume it when it goes on (else the upload stalls until the idle timeout)
        await until(lambda: not lane.kernel_full and not lane.queued and not lane.src_paused)


async def test_a_source_paused_while_its_socket_sends_is_read_again() -> None:
    """The client sends faster than the socket: the lane pauses reading it, and its
    writes park it on the socket until the queue is empty. Going on with nothing queued,
    it must read the client again, or the upload stalls until the idle timeout."""
    loop = asyncio.get_running_loop()
    pump = bounded_pump()
    data = pattern(TOTAL // 2)  # twice the high mark
    async with lane_to_stalled_receiver(pump, routed=True) as (lane, receiver, far):
        far.setblocking(False)
        sending = asyncio.create_task(loop.sock_sendall(far, data))
        slow = asyncio.Event()
        slow.set()
        reading = asyncio.create_task(receive(receiver, len(data), slow))
        await until(lambda: lane.src_paused)
        assert await reading == data
        await sending


async def test_loopback_is_not_watched() -> None:
    async with lane_to_stalled_receiver(bounded_pump(), routed=False) as (lane, _, _):
        assert lane.unsent_fd == -1


async def test_a_lane_parked_on_its_socket_goes_on_once_no_rate_is_in_force() -> None:
    """Once no rate is in force the bound is lifted: a lane parked on its socket goes on
    at once, and is not parked again."""
    pump = bounded_pump()
    async with lane_to_stalled_receiver(pump, routed=True) as (lane, receiver, _):
        for _ in range(TOTAL // CHUNK):
            lane.push(pattern(CHUNK))
        await until(lambda: lane.kernel_full)
        pump.set_rate(None)
        assert not lane.kernel_full
        await receive(receiver, TOTAL)  # the transport's marks alone hold it back now
        await until(lambda: not lane.queued and not lane.parked)
        assert not lane.kernel_full
