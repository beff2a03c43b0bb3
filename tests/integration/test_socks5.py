"""SOCKS5 end to end: real clients, every REP code on a real socket."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import re
import socket
import ssl
from pathlib import Path

import pytest

from fyntr.config import Timeouts
from fyntr.errors import Rep
from fyntr.net.out.dialer import Dialer, UpstreamPending
from fyntr.wire.socks5 import NO_AUTH_REPLY, NO_METHOD_REPLY, failure_reply
from fyntr.wire.target import IPAddress
from tests.support.net import (
    FakeClock,
    cross_deadline,
    curl,
    echo,
    hello_https,
    local_names_only,
    loopback_settings,
    make_tls,
    origin,
    proxy,
    until,
)

GREETING = b"\x05\x01\x00"


def socks_port(server: object) -> int:
    return server.addresses[1][1]  # type: ignore[attr-defined, no-any-return]


def request_ipv4(ip: str, port: int, cmd: int = 1) -> bytes:
    # VER CMD RSV ATYP=IPv4 ADDR PORT
    return bytes([5, cmd, 0, 1]) + ipaddress.IPv4Address(ip).packed + port.to_bytes(2, "big")


def request_domain(name: bytes, port: int) -> bytes:
    return b"\x05\x01\x00\x03" + bytes([len(name)]) + name + port.to_bytes(2, "big")


async def socks_exchange(port: int, data: bytes, expect: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    try:
        return await asyncio.wait_for(reader.readexactly(expect), 10)
    finally:
        writer.close()


async def test_curl_socks5_hostname_and_socks5(tmp_path: Path) -> None:
    tls = make_tls(tmp_path)
    async with (
        origin(hello_https, ssl_ctx=tls.server_ctx) as o,
        proxy(loopback_settings(o.port, socks5_port=0, allow_domains=("localhost",))) as server,
    ):
        for flag in ("--socks5-hostname", "--socks5"):
            out = await curl(
                flag,
                f"127.0.0.1:{socks_port(server)}",
                "--cacert",
                str(tls.ca_file),
                f"https://localhost:{o.port}/",
            )
            assert out == b"hello through fyntr\n"
        assert o.connections == 2


async def test_python_socks_client(tmp_path: Path) -> None:
    from python_socks.async_.asyncio import Proxy

    tls = make_tls(tmp_path)
    async with (
        origin(hello_https, ssl_ctx=tls.server_ctx) as o,
        proxy(loopback_settings(o.port, socks5_port=0)) as server,
    ):
        client = Proxy.from_url(f"socks5://127.0.0.1:{socks_port(server)}", rdns=True)
        sock = await client.connect(dest_host="localhost", dest_port=o.port)
        ctx = ssl.create_default_context(cafile=str(tls.ca_file))
        reader, writer = await asyncio.open_connection(
            sock=sock, ssl=ctx, server_hostname="localhost"
        )
        writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert (await reader.read()).endswith(b"hello through fyntr\n")
        writer.close()


async def test_success_reply_carries_the_bound_address_and_relays() -> None:
    async with origin(echo) as o, proxy(loopback_settings(o.port, socks5_port=0)) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", socks_port(server))
        writer.write(GREETING + request_ipv4("127.0.0.1", o.port) + b"early ping")
        assert await reader.readexactly(2) == NO_AUTH_REPLY
        reply = await reader.readexactly(10)
        assert reply[:4] == b"\x05\x00\x00\x01"
        bound = (str(ipaddress.IPv4Address(reply[4:8])), int.from_bytes(reply[8:10], "big"))
        await until(lambda: len(o.peers) == 1)
        assert bound == o.peers[0]  # what the origin sees is the proxy's outbound socket
        assert await reader.readexactly(10) == b"early ping"  # docs/differences.md: not dropped
        writer.write(b"pong")
        assert await reader.readexactly(4) == b"pong"
        writer.close()


async def test_socks5_slot_is_released_for_the_next_connection() -> None:
    async with (
        origin(echo) as o,
        proxy(loopback_settings(o.port, socks5_port=0, max_connections=1)) as server,
    ):
        for _ in range(2):
            reader, writer = await asyncio.open_connection("127.0.0.1", socks_port(server))
            writer.write(GREETING + request_ipv4("127.0.0.1", o.port))
            assert (await reader.readexactly(12))[2:4] == b"\x05\x00"
            writer.write(b"x")
            assert await reader.readexactly(1) == b"x"
            writer.close()
            await until(lambda: not server.tunnels and server.admission.pending == 0)


async def test_over_capacity_is_closed_without_a_byte() -> None:
    async with (
        origin(echo) as o,
        proxy(loopback_settings(o.port, socks5_port=0, max_connections=1)) as server,
    ):
        _r, w = await asyncio.open_connection("127.0.0.1", socks_port(server))
        await until(lambda: server.admission.pending == 1)
        reader, writer = await asyncio.open_connection("127.0.0.1", socks_port(server))
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        w.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def unreachable(
    loop: asyncio.AbstractEventLoop, ip: IPAddress, port: int
) -> tuple[asyncio.Transport, UpstreamPending]:
    raise OSError(errno.ENETUNREACH, "Network is unreachable")


@pytest.mark.parametrize(
    ("case", "rep"),
    [
        ("bad_version", Rep.GENERAL_FAILURE),
        ("bad_rsv", Rep.GENERAL_FAILURE),
        ("policy_port", Rep.NOT_ALLOWED),
        ("policy_cidr", Rep.NOT_ALLOWED),
        ("threat", Rep.NOT_ALLOWED),
        ("unreachable", Rep.NETWORK_UNREACHABLE),
        ("dns", Rep.HOST_UNREACHABLE),
        ("refused", Rep.CONNECTION_REFUSED),
        ("bind", Rep.COMMAND_NOT_SUPPORTED),
        ("atyp", Rep.ADDRESS_TYPE_NOT_SUPPORTED),
        ("numeric", Rep.ADDRESS_TYPE_NOT_SUPPORTED),
    ],
)
async def test_every_rep_code_on_a_real_socket(case: str, rep: Rep, tmp_path: Path) -> None:
    port = closed_port()
    feed = tmp_path / "feed.txt"
    feed.write_text("||blocked.test^\n")
    settings = loopback_settings(
        port,
        socks5_port=0,
        threat_feed_files=(str(feed),),
        threat_action=__import__("fyntr.policy.threat", fromlist=["x"]).ThreatAction.BLOCK,
        allow_ports=(port, 80),
    )
    connector = unreachable if case == "unreachable" else None
    dialer = (
        Dialer(Timeouts(dial_backoff_s=0.01), resolver=local_names_only, connector=connector)
        if connector is not None
        else Dialer(Timeouts(dial_backoff_s=0.01), resolver=local_names_only)
    )
    requests = {
        "bad_version": b"\x04\x01\x00\x01",
        "bad_rsv": b"\x05\x01\x07\x01",
        "policy_port": request_ipv4("127.0.0.1", 22),
        "policy_cidr": request_ipv4("10.0.0.1", port),
        "threat": request_domain(b"api.blocked.test", port),
        "unreachable": request_ipv4("127.0.0.1", port),
        "dns": request_domain(b"no-such-name.test", port),
        "refused": request_ipv4("127.0.0.1", port),
        "bind": request_ipv4("127.0.0.1", port, cmd=2),
        "atyp": b"\x05\x01\x00\x09",
        "numeric": request_domain(b"0x7f000001", port),
    }
    async with proxy(settings, dialer=dialer) as server:
        got = await socks_exchange(socks_port(server), GREETING + requests[case], 12)
    assert got == NO_AUTH_REPLY + failure_reply(rep)


def request_ipv6(ip: str, port: int) -> bytes:
    # VER CMD RSV ATYP=IPv6 ADDR PORT
    return b"\x05\x01\x00\x04" + ipaddress.IPv6Address(ip).packed + port.to_bytes(2, "big")


@pytest.mark.parametrize(
    "address", ["64:ff9b::7f00:1", "2002:7f00:1::", "::ffff:0:7f00:1", "fec0::1"]
)
async def test_ipv6_that_embeds_a_denied_ipv4_is_not_allowed(address: str) -> None:
    """NAT64, 6to4 and IPv4-translated spellings of 127.0.0.1, and site-local: 0x02
    without a connection attempt (the built-in list, no --allow-cidr)."""
    async with (
        origin(echo) as o,
        proxy(loopback_settings(o.port, socks5_port=0, allow_cidrs=())) as server,
    ):
        got = await socks_exchange(socks_port(server), GREETING + request_ipv6(address, o.port), 12)
        assert got == NO_AUTH_REPLY + failure_reply(Rep.NOT_ALLOWED)
        assert server.metrics.dial_failures == 0
        assert o.connections == 0


async def test_general_failure_when_the_connect_rate_budget_runs_out() -> None:
    async with (
        origin(echo) as o,
        proxy(
            loopback_settings(
                o.port, socks5_port=0, connect_rate=0.001, timeouts=Timeouts(handshake_budget_s=0.3)
            )
        ) as server,
    ):
        first = await socks_exchange(
            socks_port(server), GREETING + request_ipv4("127.0.0.1", o.port), 12
        )
        assert first[2:4] == b"\x05\x00"
        got = await socks_exchange(
            socks_port(server), GREETING + request_ipv4("127.0.0.1", o.port), 12
        )
        assert got == NO_AUTH_REPLY + failure_reply(Rep.GENERAL_FAILURE)


async def test_no_acceptable_method() -> None:
    async with proxy(loopback_settings(socks5_port=0)) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", socks_port(server))
        writer.write(b"\x05\x01\x02")  # username/password only
        assert await asyncio.wait_for(reader.read(), 5) == NO_METHOD_REPLY
        writer.close()


async def test_an_empty_connection_is_logged_at_info_and_frees_its_slot(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A connection that closes before a byte is the client's business (a port scan, a
    health check), not an error of the proxy's."""
    caplog.set_level(logging.INFO, logger="fyntr")
    async with proxy(loopback_settings(socks5_port=0, max_connections=1)) as server:
        for _ in range(5):  # at a cap of 1: each must be gone before the next arrives
            reader, writer = await asyncio.open_connection("127.0.0.1", socks_port(server))
            writer.write_eof()
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
            await until(lambda: not server.handshakes, timeout=0.5)
        lines = [r for r in caplog.records if "EOF while waiting for SOCKS5" in r.getMessage()]
        assert len(lines) == 5
        assert {r.levelno for r in lines} == {logging.INFO}
        assert "max_connections" not in server.metrics.rejections


async def test_greeting_timeout_closes_without_a_reply() -> None:
    clock = FakeClock()
    async with proxy(loopback_settings(socks5_port=0), clock=clock) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", socks_port(server))
        writer.write(b"\x05")  # half a greeting header
        await until(lambda: len(server.handshakes) == 1)
        await cross_deadline(server, clock, 30, waiting=1)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()


async def test_both_listeners_are_served_during_a_flood(caplog: pytest.LogCaptureFixture) -> None:
    """Neither listener starves the other: with 200 HTTP connections and 20 SOCKS5 ones
    queued at once, each turn of the loop accepts a batch from each listener, so every
    SOCKS5 connection is accepted (numbered) before the last HTTP one."""
    caplog.set_level(logging.INFO, logger="fyntr")
    async with (
        origin(echo) as o,
        proxy(loopback_settings(o.port, socks5_port=0, max_connections=0)) as server,
    ):
        http = server.addresses[0][1]
        flood = [asyncio.open_connection("127.0.0.1", http) for _ in range(200)]
        socks = [
            socks_exchange(socks_port(server), GREETING + request_ipv4("127.0.0.1", o.port), 12)
            for _ in range(20)
        ]
        results = await asyncio.gather(*flood, *socks)
        for reply in results[200:]:
            assert isinstance(reply, bytes) and reply[2:4] == b"\x05\x00"
        for pair in results[:200]:
            assert isinstance(pair, tuple)
            pair[1].close()
    accepted = {
        kind: [int(m) for m in re.findall(rf"flow(\d+): new {kind} connection", caplog.text)]
        for kind in ("HTTP CONNECT", "SOCKS5")
    }
    assert len(accepted["HTTP CONNECT"]) == 200 and len(accepted["SOCKS5"]) == 20
    assert max(accepted["SOCKS5"]) < max(accepted["HTTP CONNECT"])
