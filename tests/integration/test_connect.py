"""HTTP CONNECT end to end through real sockets on 127.0.0.1 (docs/differences.md)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import os
import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fyntr.config import Timeouts
from fyntr.errors import STATUS_LINES, Status
from fyntr.limits import HIGH_WATERMARK_BYTES, LINGER_S
from fyntr.net.out.dialer import tcp_connect
from fyntr.net.relay.tunnel import Tunnel
from tests.support.net import (
    OK,
    FakeClock,
    connect_via,
    cross_deadline,
    curl,
    echo,
    exchange,
    hello_https,
    http_port,
    loopback_settings,
    make_tls,
    origin,
    proxy,
    until,
)


async def test_curl_fetches_https_through_fyntr(tmp_path: Path) -> None:
    tls = make_tls(tmp_path)
    async with (
        origin(hello_https, ssl_ctx=tls.server_ctx) as o,
        proxy(loopback_settings(o.port)) as server,
    ):
        out = await curl(
            "--cacert",
            str(tls.ca_file),
            f"https://localhost:{o.port}/",
            https_proxy=f"http://127.0.0.1:{http_port(server)}",
        )
        assert out == b"hello through fyntr\n"
        assert o.connections == 1
        await until(lambda: not server.tunnels)
        assert server.admission.active == 0 and server.admission.pending == 0


async def test_64_mib_each_way_byte_exact() -> None:
    size = 64 * 1024 * 1024
    async with origin(echo) as o, proxy(loopback_settings(o.port)) as server:
        reader, writer, head = await connect_via(http_port(server), f"127.0.0.1:{o.port}")
        assert head == OK
        block = hashlib.sha256(b"seed").digest() * 2048  # 64 KiB, not all the same byte
        sent = hashlib.sha256()

        async def send() -> None:
            for i in range(size // len(block)):
                chunk = bytes([i & 0xFF]) + block[1:]
                sent.update(chunk)
                writer.write(chunk)
                await writer.drain()
            writer.write_eof()

        received = hashlib.sha256()
        count = 0

        async def receive() -> None:
            nonlocal count
            while data := await reader.read(1 << 18):
                received.update(data)
                count += len(data)

        await asyncio.gather(send(), receive())
        assert count == size
        assert received.digest() == sent.digest()
        writer.close()
        await until(lambda: not server.tunnels)


@pytest.mark.parametrize("spliced", [False, True], ids=["transports", "spliced"])
async def test_half_close_delivers_queued_data_before_the_fin(spliced: bool) -> None:
    """The client sends 32 MiB and EOF while the origin is not reading yet: everything
    held in the proxy is delivered before the FIN, and the reply still comes back; on
    the loop's transports (DRR queue) and spliced (the pipes)."""
    gate = asyncio.Event()
    got = bytearray()

    async def slow_sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await gate.wait()
        while data := await reader.read(1 << 16):
            got.extend(data)
        writer.write(b"received %d" % len(got))
        await writer.drain()
        writer.write_eof()

    def held_back() -> bool:
        if not server.tunnels:
            return False
        [tunnel] = server.tunnels
        assert isinstance(tunnel, Tunnel)
        if spliced:
            return tunnel.splice is not None and not tunnel.splice.up.reading
        return tunnel.up.src_paused

    payload = os.urandom(32 * 1024 * 1024)
    # Unshaped: under the auto rate a tunnel whose origin stalls is not spliced (what
    # waits stays in the shaper's reach), and this test is of the two engines.
    async with origin(slow_sink) as o, proxy(loopback_settings(o.port, upload_rate=0)) as server:
        if not spliced:
            server.splicer = None
        elif server.splicer is None:
            pytest.skip("no splice() here")
        reader, writer, head = await connect_via(http_port(server), f"127.0.0.1:{o.port}")
        assert head == OK
        writer.write(payload)
        writer.write_eof()
        await until(held_back)
        gate.set()
        reply = await asyncio.wait_for(reader.read(), 10)
        assert reply == b"received %d" % len(payload)
        assert bytes(got) == payload
        writer.close()
        await until(lambda: not server.tunnels)


async def test_early_data_after_the_connect_head_is_forwarded() -> None:
    async with origin(echo) as o, proxy(loopback_settings(o.port)) as server:
        reader, writer, head = await connect_via(
            http_port(server), f"127.0.0.1:{o.port}", early=b"\x16\x03\x01early-hello"
        )
        assert head == OK
        assert await asyncio.wait_for(reader.readexactly(14), 5) == b"\x16\x03\x01early-hello"
        writer.close()


async def test_connect_data_and_fin_in_one_go() -> None:
    async with origin(echo) as o, proxy(loopback_settings(o.port)) as server:
        request = f"CONNECT 127.0.0.1:{o.port} HTTP/1.1\r\n\r\nping".encode()
        reply = await exchange(http_port(server), request, eof=True)
        assert reply == OK + b"ping"


async def test_upstream_speaks_first_and_closes() -> None:
    async def banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 ready\r\n")
        await writer.drain()

    async with origin(banner) as o, proxy(loopback_settings(o.port)) as server:
        reply = await exchange(
            http_port(server), f"CONNECT 127.0.0.1:{o.port} HTTP/1.1\r\n\r\n".encode()
        )
        assert reply == OK + b"220 ready\r\n"
        await until(lambda: not server.tunnels)


async def test_503_at_the_cap_counts_pending_handshakes() -> None:
    async with origin(echo) as o, proxy(loopback_settings(o.port, max_connections=1)) as server:
        port = http_port(server)
        _idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
        await until(lambda: server.admission.pending == 1)
        # The reply comes before anything is read: the client has not even sent a byte.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), 5) == STATUS_LINES[Status.SERVICE_UNAVAILABLE]
        writer.close()
        # A CONNECT for a denied target at the cap still gets 503, not 403.
        reply = await exchange(port, b"CONNECT 10.0.0.1:443 HTTP/1.1\r\n\r\n")
        assert reply == STATUS_LINES[Status.SERVICE_UNAVAILABLE]
        idle_writer.close()
        await until(lambda: server.admission.pending == 0)
        reply = await exchange(
            port, f"CONNECT 127.0.0.1:{o.port} HTTP/1.1\r\n\r\nx".encode(), eof=True
        )
        assert reply == OK + b"x"
        assert server.metrics.rejections["max_connections"] == 2


async def test_a_503_at_the_cap_lingers_no_longer_than_linger_s() -> None:
    """A client refused at the cap that never closes must not hold its socket: after
    LINGER_S the proxy closes it, and the client's next bytes meet a reset."""
    clock = FakeClock()
    settings = loopback_settings(max_connections=1)
    async with proxy(settings, clock=clock) as server:
        port = http_port(server)
        _idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
        await until(lambda: server.admission.pending == 1)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), 5) == STATUS_LINES[Status.SERVICE_UNAVAILABLE]
        writer.write(b"drained while lingering")
        await writer.drain()
        clock.advance(LINGER_S + 0.1)  # not the idle client's 30 s request-line deadline
        server.sweep()

        async def reset() -> None:
            while True:
                writer.write(b"x")
                await writer.drain()
                await asyncio.sleep(0.01)

        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reset(), 5)
        assert len(server.handshakes) == 1  # the idle client still waits
        idle_writer.close()


async def test_a_client_that_half_closed_before_its_error_reply_frees_its_slot_at_once() -> None:
    """The linger drains a client that is still sending; once its FIN is in, there is
    nothing to drain. A client looping connect, bad request, FIN must not fill the cap."""
    cap = 5
    async with origin(echo) as o, proxy(loopback_settings(o.port, max_connections=cap)) as server:
        port = http_port(server)
        for _ in range(4 * cap):
            reply = await exchange(port, b"CONNECT", eof=True)  # an incomplete request line
            assert reply == STATUS_LINES[Status.BAD_REQUEST]
        # No sleep past LINGER_S: the slots must be free already.
        await until(lambda: not server.handshakes, timeout=0.5)
        _reader, writer, head = await connect_via(port, f"127.0.0.1:{o.port}")
        assert head == OK
        writer.close()
        assert "max_connections" not in server.metrics.rejections


async def test_idle_timeout_closes_a_silent_tunnel_in_virtual_time() -> None:
    clock = FakeClock()
    async with (
        origin(echo) as o,
        proxy(loopback_settings(o.port, idle_timeout_s=300), clock=clock) as server,
    ):
        reader, writer, head = await connect_via(http_port(server), f"127.0.0.1:{o.port}")
        assert head == OK
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
        server.sweep()  # sees the activity
        clock.advance(299)
        server.sweep()
        assert len(server.tunnels) == 1
        writer.write(b"pong")  # activity in either direction refreshes it
        assert await reader.readexactly(4) == b"pong"
        clock.advance(2)
        server.sweep()
        clock.advance(299)
        server.sweep()
        assert len(server.tunnels) == 1
        clock.advance(1)
        server.sweep()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        await until(lambda: not server.tunnels)
        assert server.admission.active == 0
        writer.close()


async def test_request_line_and_header_timeouts_in_virtual_time() -> None:
    clock = FakeClock()
    async with proxy(loopback_settings(), clock=clock) as server:
        port = http_port(server)
        r1, w1 = await asyncio.open_connection("127.0.0.1", port)  # says nothing
        r2, w2 = await asyncio.open_connection("127.0.0.1", port)
        w2.write(b"CONNECT example.com:443 HTTP/1.1\r\nHost: x\r\n")  # no blank line
        await until(lambda: len(server.handshakes) == 2)
        await cross_deadline(server, clock, 30, waiting=2)
        timeout = STATUS_LINES[Status.REQUEST_TIMEOUT]
        assert await asyncio.wait_for(r1.read(), 5) == timeout
        assert await asyncio.wait_for(r2.read(), 5) == timeout
        w1.close()
        w2.close()
        await until(lambda: server.admission.pending == 0)


async def test_a_socks5_greeting_on_the_http_port_is_answered_at_once() -> None:
    """``ALL_PROXY=socks5h://`` pointed at the HTTP port: a 400 at once, not a 408 after
    the request line's 30 s."""
    async with proxy(loopback_settings()) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", http_port(server))
        writer.write(b"\x05\x01\x00")
        assert await asyncio.wait_for(reader.read(), 5) == STATUS_LINES[Status.BAD_REQUEST]
        writer.close()


async def test_headers_get_their_own_30_seconds() -> None:
    clock = FakeClock()
    async with proxy(loopback_settings(), clock=clock) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", http_port(server))
        await until(lambda: len(server.handshakes) == 1)
        clock.advance(20)
        writer.write(b"CONNECT example.com:443 HTTP/1.1\r\n")
        await until(lambda: next(iter(server.handshakes)).machine.target is not None)
        clock.advance(20)  # 40 s since accept, 20 s into the headers
        server.sweep()
        assert len(server.handshakes) == 1
        clock.advance(10.1)
        server.sweep()
        assert await asyncio.wait_for(reader.read(), 5) == STATUS_LINES[Status.REQUEST_TIMEOUT]
        writer.close()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", Status.METHOD_NOT_ALLOWED),
        (b"CONNECT a.com:443 HTTP/2\r\n\r\n", Status.VERSION_NOT_SUPPORTED),
        (b"CONNECT example.invalid..:443 HTTP/1.1\r\n\r\n", Status.BAD_REQUEST),
        (b"CONNECT " + b"a" * 8200 + b":443 HTTP/1.1\r\n\r\n", Status.URI_TOO_LONG),
        (b"CONNECT a.com:443 HTTP/1.1\r\n" + b"H: v\r\n" * 101 + b"\r\n", Status.HEADERS_TOO_LARGE),
        (b"CONNECT 127.0.0.1:22 HTTP/1.1\r\n\r\n", Status.FORBIDDEN),
        (b"CONNECT 10.0.0.1:443 HTTP/1.1\r\n\r\n", Status.FORBIDDEN),
        (b"CONNECT name.invalid:443 HTTP/1.1\r\n\r\n", Status.BAD_GATEWAY),
    ],
)
async def test_error_statuses_on_the_wire(request_bytes: bytes, status: Status) -> None:
    async with proxy(loopback_settings(default_allow_port=True)) as server:
        assert await exchange(http_port(server), request_bytes) == STATUS_LINES[status]


async def test_eof_before_the_head_is_400() -> None:
    async with proxy(loopback_settings()) as server:
        reply = await exchange(http_port(server), b"CONNECT a.com:443 HTTP/1.1\r\n", eof=True)
        assert reply == STATUS_LINES[Status.BAD_REQUEST]
        assert await exchange(http_port(server), b"", eof=True) == STATUS_LINES[Status.BAD_REQUEST]


async def test_502_when_every_dial_fails_after_three_rounds() -> None:
    import socket

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    async with proxy(loopback_settings(port)) as server:
        reply = await exchange(
            http_port(server), f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode()
        )
        assert reply == STATUS_LINES[Status.BAD_GATEWAY]
        assert server.metrics.dial_failures == 1


async def test_dns_timeout_is_502() -> None:
    from fyntr.net.out.dialer import Dialer

    async def never(name: str, port: int) -> list[object]:
        await asyncio.sleep(3600)
        return []

    settings = loopback_settings(timeouts=Timeouts(dns_s=0.05))
    dialer = Dialer(settings.timeouts, resolver=never)  # type: ignore[arg-type]
    async with proxy(settings, dialer=dialer) as server:
        reply = await exchange(http_port(server), b"CONNECT slow.example:443 HTTP/1.1\r\n\r\n")
        assert reply == STATUS_LINES[Status.BAD_GATEWAY]


@contextlib.contextmanager
def descriptors_left(free: int) -> Iterator[None]:
    """Lower this process's soft FD limit and take every descriptor under it but
    ``free``: the next socket() after those fails with a real EMFILE."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    taken: list[int] = []
    highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 32, hard))
    try:
        with contextlib.suppress(OSError):
            while True:
                taken.append(os.dup(0))
        for _ in range(free):
            os.close(taken.pop())
        yield
    finally:
        for fd in taken:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_out_of_descriptors_on_dial_is_503_at_once_naming_the_limit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A local EMFILE is no network failure: no retry rounds (up to 6.6 s), a 503 now."""
    async with origin(echo) as o, proxy(loopback_settings(o.port)) as server:
        client = socket.socket()
        client.setblocking(False)
        with descriptors_left(free=1):  # for the accepted socket, none for the dial
            await asyncio.get_running_loop().sock_connect(client, ("127.0.0.1", http_port(server)))
            reader, writer = await asyncio.open_connection(sock=client)
            writer.write(f"CONNECT 127.0.0.1:{o.port} HTTP/1.1\r\n\r\n".encode())
            started = time.monotonic()
            reply = await asyncio.wait_for(reader.read(), 5)
        assert reply == STATUS_LINES[Status.SERVICE_UNAVAILABLE]
        assert time.monotonic() - started < 1.0
        writer.close()
        assert server.metrics.rejections["fd_limit"] == 1
        assert o.connections == 0
        assert any("soft FD limit" in r.getMessage() for r in caplog.records)


async def test_a_failed_write_tears_the_tunnel_down() -> None:
    """The client vanishes with a RST while the origin streams to it: the write to the
    client fails, the tunnel closes both sides and frees its slot (docs/differences.md)."""
    import socket
    import struct

    closed = asyncio.Event()

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                writer.write(bytes(64 * 1024))
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            closed.set()

    async with origin(endless) as o, proxy(loopback_settings(o.port)) as server:
        _reader, writer, head = await connect_via(http_port(server), f"127.0.0.1:{o.port}")
        assert head == OK
        await until(lambda: len(server.tunnels) == 1)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # RST: the proxy's next write to the client fails
        await until(lambda: not server.tunnels)
        assert server.admission.active == 0
        await asyncio.wait_for(closed.wait(), 5)  # the upstream side was closed too


async def test_tcp_nodelay_on_both_sockets() -> None:
    import socket

    async with origin(echo) as o, proxy(loopback_settings(o.port)) as server:
        _reader, writer, head = await connect_via(http_port(server), f"127.0.0.1:{o.port}")
        assert head == OK
        [tunnel] = server.tunnels
        assert isinstance(tunnel, Tunnel)
        for transport in (tunnel.client, tunnel.upstream):
            sock = transport.get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        writer.close()


async def test_closed_tunnels_leave_no_reference_cycles() -> None:
    """Reference counting frees a finished tunnel at once: no garbage for the cyclic
    collector, whose passes cost CPU on every set-up."""
    import gc

    async with origin(echo) as o, proxy(loopback_settings(o.port)) as server:
        gc.collect()
        gc.disable()
        try:
            for _ in range(10):
                reader, writer, head = await connect_via(http_port(server), f"127.0.0.1:{o.port}")
                assert head == OK
                writer.write(b"x")
                assert await reader.readexactly(1) == b"x"
                writer.close()
                await writer.wait_closed()
            await until(lambda: not server.tunnels)
            gc.set_debug(gc.DEBUG_SAVEALL)
            gc.collect()
            ours = [x for x in gc.garbage if type(x).__module__.startswith("fyntr")]
            assert ours == []
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()


async def _origin_closes_at_once(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """The origin hangs up as soon as it accepts (its FIN crosses the client's)."""


async def _origin_resets_at_once(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    import socket
    import struct

    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _origin_drains(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()


@pytest.mark.parametrize(
    ("handler", "client_resets"),
    [(_origin_closes_at_once, False), (_origin_drains, True), (_origin_resets_at_once, False)],
    ids=["crossing_fins", "client_fin_then_rst", "origin_rst"],
)
async def test_closes_that_race_leave_no_tunnel_and_no_slot_behind(
    handler: Any, client_resets: bool
) -> None:
    """Each end's FIN or RST arriving while the other end's FIN is still being passed
    on, 300 times: every tunnel and every slot is freed, and the proxy still relays.
    (A relay that closes a transport whose write_eof is still pending can crash uvloop
    0.23 with a double free; fyntr must not.)"""
    import socket
    import struct

    async def one(port: int, target: str) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"CONNECT {target} HTTP/1.1\r\n\r\n".encode() + b"x" * 100)
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write_eof()
            if client_resets:
                await asyncio.sleep(0)
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except (OSError, asyncio.IncompleteReadError):
            # A reset passed on by the proxy: ECONNRESET, or ENOTCONN from write_eof on
            # the standard loop
            pass
        finally:
            writer.close()

    async with (
        origin(handler) as o,
        origin(echo) as e,
        # The test's origin, on this one loop, overflows its accept queue now and then:
        # a real lost SYN, which connect auto leaves alone on loopback.
        proxy(loopback_settings(o.port, e.port)) as server,
    ):
        target = f"127.0.0.1:{o.port}"
        for _ in range(6):
            await asyncio.gather(*(one(http_port(server), target) for _ in range(50)))
        await until(lambda: not server.tunnels and not server.handshakes)
        assert (server.admission.active, server.admission.pending) == (0, 0)
        assert server.metrics.accepted == 300
        reader, writer, head = await connect_via(http_port(server), f"127.0.0.1:{e.port}")
        assert head == OK
        writer.write(b"still relaying")
        assert await reader.readexactly(14) == b"still relaying"
        writer.close()


async def test_an_upstream_that_talks_first_is_held_to_one_read_until_the_tunnel() -> None:
    """Between the dial and the 200 the upstream socket is not read: on uvloop, which
    reads after connection_made whatever it asked, at most one read waits."""

    async def talker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(bytes(4 << 20))
        await writer.drain()
        await reader.read()

    async with origin(talker) as o:
        loop = asyncio.get_running_loop()
        transport, pending = await tcp_connect(loop, ipaddress.ip_address("127.0.0.1"), o.port)
        await asyncio.sleep(0.3)  # the origin's 4 MiB have long arrived
        held = sum(map(len, pending.early))
        assert held <= HIGH_WATERMARK_BYTES
        assert not transport.is_reading()
        transport.close()
