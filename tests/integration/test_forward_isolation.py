"""Nothing one plain HTTP client sends, or an origin sends in answer to it, reaches
another client through a pooled origin connection (docs/plain-http.md).

A hostile client A and a faulty origin act first; then client B, on a connection of its
own, asks the same origin and must receive its own answer, and the origin must never
see B's request inside A's.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request

import pytest

from fyntr.limits import HEADERS_MAX_BYTES, HEADERS_TIMEOUT_S, REQUEST_LINE_MAX_BYTES
from tests.support.faulty_origin import (
    FAULTS,
    INNER,
    Request,
    Writes,
    fault_writes,
    faulty_origin,
    response,
)
from tests.support.net import (
    FakeClock,
    free_port,
    fyntr_process,
    http_port,
    loopback_settings,
    proxy,
    until,
)

TOKEN = b"Bearer b-secret-token"


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One response framed by Content-Length: (status line, body)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    body = await asyncio.wait_for(reader.readexactly(length), 5)
    return head.split(b"\r\n")[0], body


async def client_b(port: int, origin: int) -> tuple[bytes, bytes]:
    """B's own GET of /private, with a token only the origin may see."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET http://127.0.0.1:%d/private HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n\r\n"
        % (origin, TOKEN)
    )
    try:
        return await read_response(reader)
    finally:
        writer.close()


def private_answer(request: Request) -> Writes:
    """What every origin here answers to B."""
    return [(0, response(b"B-OK"))] if request.path == b"/private" else []


@pytest.mark.parametrize(
    "connection",
    [b"content-length", b"Content-Length, close", b"close, TRANSFER-ENCODING", b"host"],
)
async def test_connection_naming_a_framing_field_is_refused(connection: bytes) -> None:
    """A request whose Connection field names Content-Length would reach the origin with
    its body unframed: the body, itself a request, would take B's request as its own."""
    smuggled = b"POST /steal HTTP/1.1\r\nHost: x\r\nContent-Length: 110\r\n\r\n"

    def answer(request: Request) -> Writes:
        return private_answer(request) or [(0, response(b"A"))]

    async with faulty_origin(answer) as o, proxy(loopback_settings(o.port)) as server:
        port = http_port(server)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST http://127.0.0.1:%d/x HTTP/1.1\r\nHost: x\r\nConnection: %s\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (o.port, connection, len(smuggled), smuggled)
        )
        status, _body = await read_response(reader)
        writer.close()
        assert status == b"HTTP/1.1 400 Bad Request"
        assert await client_b(port, o.port) == (b"HTTP/1.1 200 OK", b"B-OK")
        assert o.paths() == [b"/private"]  # A's request never left fyntr
        assert o.requests[0].headers[b"authorization"] == TOKEN


async def test_response_with_connection_naming_its_framing_is_a_502() -> None:
    def answer(request: Request) -> Writes:
        if request.path == b"/a":
            return [(0, response(b"STOLEN", b"Connection: content-length"))]
        return private_answer(request)

    async with faulty_origin(answer) as o, proxy(loopback_settings(o.port)) as server:
        port = http_port(server)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET http://127.0.0.1:%d/a HTTP/1.1\r\nHost: x\r\n\r\n" % o.port)
        status, body = await read_response(reader)
        writer.close()
        assert status == b"HTTP/1.1 502 Bad Gateway"
        assert b"Connection names" in body
        assert await client_b(port, o.port) == (b"HTTP/1.1 200 OK", b"B-OK")
        assert [r.connection for r in o.requests] == [1, 2]  # that connection was not kept


@pytest.mark.parametrize("delay", [0, 0.3], ids=["at once", "300 ms late"])
@pytest.mark.parametrize("fault", list(FAULTS))
async def test_bytes_after_a_response_never_reach_the_next_client(fault: str, delay: float) -> None:
    method = FAULTS[fault][0]

    def answer(request: Request) -> Writes:
        return fault_writes(fault, delay) if request.path == b"/a" else private_answer(request)

    async with faulty_origin(answer) as o, proxy(loopback_settings(o.port)) as server:
        port = http_port(server)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"%s http://127.0.0.1:%d/a HTTP/1.1\r\nHost: x\r\n\r\n" % (method, o.port))
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)  # A's answer has begun
        await asyncio.sleep(delay + 0.1)  # and what follows it has arrived
        assert await client_b(port, o.port) == (b"HTTP/1.1 200 OK", b"B-OK")
        writer.close()
        assert [r.connection for r in o.requests] == [1, 2]
        await until(lambda: len(server.pool) == 1)  # B's connection, and not A's


async def test_a_kept_connection_with_bytes_in_the_kernel_is_not_handed_out() -> None:
    """The pooled connection's stray bytes are still in the kernel, unread by the loop,
    when B's request takes it: B's request goes out on a new connection."""

    def answer(request: Request) -> Writes:
        if request.path == b"/a":
            return [(0, response(b"A")), (0.2, INNER)]
        return private_answer(request)

    async with faulty_origin(answer) as o, proxy(loopback_settings(o.port)) as server:
        port = http_port(server)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET http://127.0.0.1:%d/a HTTP/1.1\r\nHost: x\r\n\r\n" % o.port)
        assert await read_response(reader) == (b"HTTP/1.1 200 OK", b"A")
        await until(lambda: len(server.pool) == 1)
        (pooled,) = list(server.pool._idle)
        pooled.transport.pause_reading()  # the loop does not look: the kernel holds them
        await asyncio.sleep(0.4)
        assert await client_b(port, o.port) == (b"HTTP/1.1 200 OK", b"B-OK")
        assert [r.connection for r in o.requests] == [1, 2]
        writer.close()


async def test_pipelined_gets_after_a_large_read_are_all_answered() -> None:
    """700 complete GETs and the start of the next one in a single write: only a head's
    own bytes count towards its limit, never the read it arrived in."""

    def answer(_request: Request) -> Writes:
        return [(0, response(b"ok"))]

    async with faulty_origin(answer) as o, proxy(loopback_settings(o.port)) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", http_port(server))
        get = b"GET http://127.0.0.1:%d/p HTTP/1.1\r\nHost: x\r\nUser-Agent: %s\r\n\r\n" % (
            o.port,
            b"u" * 60,
        )
        assert len(get) * 700 > 2 * (REQUEST_LINE_MAX_BYTES + HEADERS_MAX_BYTES)
        writer.write(get * 700 + get[:20])
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(get[20:])
        for _ in range(701):
            assert await read_response(reader) == (b"HTTP/1.1 200 OK", b"ok")
        writer.close()


async def test_post_body_with_the_next_head_begun_in_the_same_read() -> None:
    def answer(request: Request) -> Writes:
        return [(0, response(b"%d" % len(request.body)))]

    async with faulty_origin(answer) as o, proxy(loopback_settings(o.port)) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", http_port(server))
        body = b"b" * 100_000
        get = b"GET http://127.0.0.1:%d/p HTTP/1.1\r\nHost: x\r\n\r\n" % o.port
        writer.write(
            b"POST http://127.0.0.1:%d/p HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s%s"
            % (o.port, len(body), body, get[:30])
        )
        assert await read_response(reader) == (b"HTTP/1.1 200 OK", b"100000")
        writer.write(get[30:])
        assert await read_response(reader) == (b"HTTP/1.1 200 OK", b"0")
        writer.close()


@pytest.mark.parametrize("kept", [False, True], ids=["first request", "next request"])
async def test_a_trickled_head_gets_408_after_the_header_budget(kept: bool) -> None:
    """Headers trickled after the request line, on a new or a kept connection, get the
    408 that CONNECT's handshake gives, after the same 30 s, not the 60 s keep-alive."""

    def answer(_request: Request) -> Writes:
        return [(0, response(b"ok"))]

    clock = FakeClock()
    async with (
        faulty_origin(answer) as o,
        proxy(loopback_settings(o.port), clock=clock) as server,
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", http_port(server))
        request = b"GET http://127.0.0.1:%d/p HTTP/1.1\r\nHost: x\r\n\r\n" % o.port
        if kept:
            writer.write(request)
            assert await read_response(reader) == (b"HTTP/1.1 200 OK", b"ok")
        writer.write(request[:-10])
        await until(lambda: any(r.deadline < float("inf") for r in server.tunnels))
        for _ in range(5):  # a byte now and then: activity that must not count
            clock.advance(HEADERS_TIMEOUT_S / 5 - 0.5)
            server.sweep()
            writer.write(b"X-Slow: 1\r\n")
            await asyncio.sleep(0.02)
        assert not reader.at_eof()
        clock.advance(3)
        server.sweep()
        status, body = await read_response(reader)
        assert status == b"HTTP/1.1 408 Request Timeout"
        assert b"request headers" in body
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()


async def test_idle_origin_connections_never_take_a_descriptor_below_the_cap() -> None:
    """FD limit 256 and --max-connections 96: the cap's sockets take the whole budget,
    so after plain GETs to four origins, 96 tunnels still all get their 200."""
    origins = [await asyncio.start_server(hold, "127.0.0.1", 0) for _ in range(5)]
    ports = [s.sockets[0].getsockname()[1] for s in origins]
    http = ports[:4]
    allow = [arg for p in ports for arg in ("--allow-port", str(p))]
    metrics = free_port()
    try:
        with fyntr_process(
            "--metrics-port",
            str(metrics),
            "--port",
            "0",
            "--allow-cidr",
            "127.0.0.0/8",
            "--max-connections",
            "96",
            *allow,
            nofile=256,
        ) as fyntr:
            port = fyntr.ports[0]
            fyntr.drain()

            async def get(origin: int) -> bytes:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET http://127.0.0.1:%d/ HTTP/1.1\r\nHost: x\r\n\r\n" % origin)
                try:
                    return (await read_response(reader))[0]
                finally:
                    writer.close()

            for _ in range(3):  # 288 GETs, 24 at a time to each origin: 96 at once
                statuses = await asyncio.gather(*(get(o) for o in http for _ in range(24)))
                assert set(statuses) == {b"HTTP/1.1 200 OK"}
                await until(lambda: idle(metrics))  # every slot of those clients given back
            tunnels = [await asyncio.open_connection("127.0.0.1", port) for _ in range(96)]
            for _reader, writer in tunnels:
                writer.write(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: x\r\n\r\n" % ports[4])
            heads = [await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10) for r, _ in tunnels]
            assert {h.split(b"\r\n")[0] for h in heads} == {b"HTTP/1.1 200 Connection Established"}
            for _reader, writer in tunnels:
                writer.close()
    finally:
        for server in origins:
            server.close()


def idle(metrics: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/status", timeout=5) as reply:
        status = json.loads(reply.read())
    return bool(status["active_flows"] == 0 and status["pending_handshakes"] == 0)


async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An origin that answers every GET with a small kept response, and holds tunnels."""
    try:
        while head := await reader.readuntil(b"\r\n\r\n"):
            if head.startswith(b"GET"):
                writer.write(response(b"ok"))
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()
