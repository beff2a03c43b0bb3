"""Who may use fyntr (``--client-allow``): a client outside the ranges is refused by its
own protocol (HTTP 403 naming the reason, SOCKS5 REP 0x02), counted, and never dialled
for. Here every client is 127.0.0.1, so a range without it refuses them; the default
ranges beyond loopback are tested across network namespaces
(tests/integration/test_clients_netns.py)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from fyntr.errors import Rep
from fyntr.wire.socks5 import NO_AUTH_REPLY, failure_reply
from tests.support.net import (
    OK,
    connect_via,
    echo,
    exchange,
    http_port,
    loopback_settings,
    origin,
    proxy,
    until,
)


async def test_an_http_client_outside_the_ranges_gets_a_403_naming_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="fyntr")
    async with origin(echo) as o:
        settings = loopback_settings(o.port, client_allow=("10.0.0.0/8",))
        async with proxy(settings) as server:
            reply = await exchange(
                http_port(server), f"CONNECT 127.0.0.1:{o.port} HTTP/1.1\r\n\r\n".encode()
            )
            assert server.metrics.rejections["client_denied"] == 1
            assert server.admission.active == server.admission.pending == 0
    assert reply.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert b"127.0.0.1" in reply and b"10.0.0.0/8" in reply and b"--client-allow" in reply
    assert o.connections == 0
    assert "may not use this proxy" in caplog.text


async def test_a_socks5_client_outside_the_ranges_gets_rep_0x02() -> None:
    async with origin(echo) as o:
        settings = loopback_settings(o.port, socks5_port=0, client_allow=("192.168.0.0/16",))
        async with proxy(settings) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.addresses[1][1])
            writer.write(b"\x05\x01\x00")
            assert await reader.readexactly(2) == NO_AUTH_REPLY
            writer.write(b"\x05\x01\x00\x01\x7f\x00\x00\x01" + o.port.to_bytes(2, "big"))
            assert await reader.readexactly(10) == failure_reply(Rep.NOT_ALLOWED)
            writer.close()
    assert o.connections == 0


async def test_a_client_inside_the_ranges_is_served() -> None:
    async with origin(echo) as o:
        settings = loopback_settings(o.port, client_allow=("10.0.0.0/8", "127.0.0.0/8"))
        async with proxy(settings) as server:
            _reader, writer, head = await connect_via(http_port(server), f"127.0.0.1:{o.port}")
            writer.close()
    assert head == OK


async def open_tunnel(
    source: str, proxy_port: int, port: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port, local_addr=(source, 0))
    writer.write(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode())
    return reader, writer, await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)


async def test_max_connections_per_client_refuses_one_address_not_the_others() -> None:
    async with origin(echo) as o:
        settings = loopback_settings(o.port, max_connections_per_client=2)
        async with proxy(settings) as server:
            port = http_port(server)
            opened = [await open_tunnel("127.0.0.2", port, o.port) for _ in range(2)]
            assert [head for _r, _w, head in opened] == [OK, OK]
            opened.append(await open_tunnel("127.0.0.2", port, o.port))
            assert opened[-1][2] == b"HTTP/1.1 503 Service Unavailable\r\n\r\n"
            assert server.metrics.rejections["max_connections_per_client"] == 1
            opened.append(await open_tunnel("127.0.0.3", port, o.port))  # another device
            assert opened[-1][2] == OK
            opened[0][1].close()  # one of its tunnels ends: its slot comes back
            await until(lambda: server.gate.per_client["127.0.0.2"] == 1)
            opened.append(await open_tunnel("127.0.0.2", port, o.port))
            assert opened[-1][2] == OK
            for _reader, writer, _head in opened:
                writer.close()
            await until(lambda: not server.gate.per_client)  # nothing left behind
