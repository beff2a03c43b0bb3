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
