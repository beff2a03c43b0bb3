"""Parent proxies (``--upstream``, docs/parent-proxies.md) with real sockets: tinyproxy with
Basic credentials, another fyntr as a SOCKS5 parent, and the tests' own parent
(tests/support/parent.py), which records what fyntr sends it."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from fyntr.config import Timeouts
from fyntr.net.out.dialer import Dialer
from fyntr.wire.parent import parse_parent
from tests.support.net import (
    connect_via,
    echo,
    exchange,
    free_port,
    http_port,
    local_names_only,
    loopback_settings,
    origin,
    proxy,
    until,
)
from tests.support.parent import parent_proxy

OK = b"HTTP/1.1 200 Connection Established\r\n\r\n"
BAD_GATEWAY = b"HTTP/1.1 502 Bad Gateway\r\n\r\n"


class CountingResolver:
    """Every name fyntr looks up; answers only ``localhost``."""

    def __init__(self) -> None:
        self.names: list[str] = []

    async def __call__(self, name: str, port: int) -> list[Any]:
        self.names.append(name)
        return await local_names_only(name, port)


def via(*parents: str, **kwargs: Any) -> Any:
    """Settings for a fyntr whose parents are ``parents``, and a resolver that counts."""
    resolver = CountingResolver()
    settings = loopback_settings(
        upstreams=tuple(parse_parent(p) for p in parents), allow_ports=(), **kwargs
    )
    dialer = Dialer(settings.timeouts, resolver=resolver)
    return settings, dialer, resolver


async def origin_test_names(name: str, port: int) -> list[Any]:
    """A resolver for which: ``origin.test`` is this machine (tests/support/parent.py)."""
    return await local_names_only("localhost" if name == "origin.test" else name, port)


async def roundtrip(port: int, target: str) -> bytes:
    reader, writer, head = await connect_via(port, target)
    try:
        assert head == OK, head
        writer.write(b"ping through the parent")
        return await reader.readexactly(23)
    finally:
        writer.close()


async def test_connect_goes_to_the_parent_by_name_with_its_credentials() -> None:
    async with origin(echo) as o, parent_proxy("alice:s3cret") as p:
        settings, dialer, resolver = via(f"http://alice:s3cret@127.0.0.1:{p.port}")
        settings = replace(settings, allow_ports=(o.port,))
        async with proxy(settings, dialer=dialer) as server:
            assert await roundtrip(http_port(server), f"origin.test:{o.port}") == (
                b"ping through the parent"
            )
    head = p.heads[0].decode()
    assert head.startswith(f"CONNECT origin.test:{o.port} HTTP/1.1\r\n")
    assert "proxy-authorization: Basic YWxpY2U6czNjcmV0" in head
    assert resolver.names == []  # the parent resolves the target: no lookup, no DNS leak


async def test_a_parents_407_is_a_502_naming_it_and_its_challenge_stays(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with origin(echo) as o, parent_proxy("alice:s3cret") as p:
        settings, dialer, _ = via(f"http://alice:wrong@127.0.0.1:{p.port}")
        settings = replace(settings, allow_ports=(o.port,))
        async with proxy(settings, dialer=dialer) as server:
            reply = await exchange(
                http_port(server), f"CONNECT origin.test:{o.port} HTTP/1.1\r\n\r\n".encode()
            )
    assert reply == BAD_GATEWAY  # no Proxy-Authenticate of the parent's reaches the client
    assert o.connections == 0
    logged = caplog.text
    assert f"parent proxy http://127.0.0.1:{p.port} failed" in logged
    assert "refused the credentials" in logged
    assert "wrong" not in logged and "s3cret" not in logged


async def test_plain_http_goes_in_absolute_form_without_the_clients_credentials() -> None:
    seen: list[bytes] = []

    async def web(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi")
        await writer.drain()

    async with origin(web) as o, parent_proxy("bob:pw") as p:
        settings, dialer, resolver = via(f"http://bob:pw@127.0.0.1:{p.port}")
        settings = replace(settings, allow_ports=(o.port,))
        async with proxy(settings, dialer=dialer) as server:
            reply = await exchange(
                http_port(server),
                f"GET http://origin.test:{o.port}/x?y HTTP/1.1\r\nHost: origin.test:{o.port}\r\n"
                "Proxy-Authorization: Basic Y2xpZW50OnNlY3JldA==\r\n"
                "Connection: close\r\n\r\n".encode(),
            )
    assert reply.startswith(b"HTTP/1.1 200 OK") and reply.endswith(b"hi"), reply
    head = p.heads[0].decode()
    assert head.startswith(f"GET http://origin.test:{o.port}/x?y HTTP/1.1\r\n")
    assert "proxy-authorization: Basic Ym9iOnB3" in head
    assert "Y2xpZW50OnNlY3JldA" not in head  # the client's own never goes on
    assert resolver.names == []


@contextlib.contextmanager
def silent_listener() -> Iterator[int]:
    """A port whose SYNs go unanswered, as a dead parent behind a firewall: a listener
    with a full accept queue drops them (loopback, no namespace needed)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(2):  # the queue of listen(0) holds one; the second waits in SYN-RECV
        s = socket.socket()
        s.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            s.connect(("127.0.0.1", port))
        fillers.append(s)
    time.sleep(0.05)
    try:
        yield port
    finally:
        for s in fillers:
            s.close()
        server.close()


async def test_a_silent_parent_costs_one_attempt_then_is_skipped() -> None:
    attempt_s = 0.5
    with silent_listener() as dead:
        async with origin(echo) as o, parent_proxy() as p:
            settings, dialer, _ = via(f"http://127.0.0.1:{dead}", p.url)
            timeouts = Timeouts(dial_attempt_s=attempt_s, dial_backoff_s=0.01)
            settings = replace(settings, allow_ports=(o.port,), timeouts=timeouts)
            dialer = Dialer(timeouts, resolver=local_names_only)
            async with proxy(settings, dialer=dialer) as server:
                loop = asyncio.get_running_loop()
                started = loop.time()
                assert await roundtrip(http_port(server), f"origin.test:{o.port}")
                first = loop.time() - started
                started = loop.time()
                assert await roundtrip(http_port(server), f"origin.test:{o.port}")
                second = loop.time() - started
    assert attempt_s <= first < attempt_s + 1.0  # one attempt at the dead one, then the next
    assert second < attempt_s  # not tried again before its fail timeout
    assert p.connections == 2


async def test_no_parent_answers_fail_or_direct() -> None:
    dead = free_port()
    async with origin(echo) as o:
        settings, dialer, _ = via(f"http://127.0.0.1:{dead}")
        settings = replace(settings, allow_ports=(o.port,))
        async with proxy(settings, dialer=dialer) as server:
            reply = await exchange(
                http_port(server), f"CONNECT origin.test:{o.port} HTTP/1.1\r\n\r\n".encode()
            )
            assert reply == BAD_GATEWAY
        settings = replace(settings, upstream_fallback="direct")
        dialer = Dialer(settings.timeouts, resolver=origin_test_names)
        async with proxy(settings, dialer=dialer) as server:
            assert await roundtrip(http_port(server), f"origin.test:{o.port}")
    assert o.connections == 1


async def test_no_upstream_and_loopback_go_direct() -> None:
    async with origin(echo) as o, parent_proxy() as p:
        settings, dialer, _ = via(p.url, no_upstream=(".example",))
        settings = replace(settings, allow_ports=(o.port,))
        async with proxy(settings, dialer=dialer) as server:
            # An exception: fyntr resolves it itself (and fails: only localhost resolves).
            reply = await exchange(
                http_port(server), f"CONNECT a.b.example:{o.port} HTTP/1.1\r\n\r\n".encode()
            )
            assert reply == BAD_GATEWAY
            assert await roundtrip(http_port(server), f"localhost:{o.port}")  # loopback
            assert await roundtrip(http_port(server), f"127.0.0.1:{o.port}")
    assert p.connections == 0


async def test_the_policy_judges_the_target_never_the_parent() -> None:
    async with origin(echo) as o, parent_proxy() as p:
        # No --allow-cidr: the parent's own 127.0.0.1 is in the built-in deny list.
        settings, dialer, _ = via(p.url, allow_cidrs=())
        settings = replace(settings, allow_ports=(o.port,))
        async with proxy(settings, dialer=dialer) as server:
            assert await roundtrip(http_port(server), f"origin.test:{o.port}")
            reply = await exchange(
                http_port(server), b"CONNECT 10.1.2.3:443 HTTP/1.1\r\n\r\n"
            )  # an IP literal: private, denied by the built-in ranges, parent or not
    assert reply == b"HTTP/1.1 403 Forbidden\r\n\r\n"
    assert p.connections == 1


@contextlib.asynccontextmanager
async def tinyproxy(tmp_path: Path, user: str, password: str) -> AsyncIterator[int]:
    exe = shutil.which("tinyproxy")
    if exe is None:
        pytest.skip("tinyproxy is not installed (scripts/test.sh installs it)")
    port = free_port()
    conf = tmp_path / "tinyproxy.conf"
    conf.write_text(
        f"Port {port}\nListen 127.0.0.1\nTimeout 30\nAllow 127.0.0.1\n"
        f"BasicAuth {user} {password}\nLogLevel Warning\nMaxClients 64\n"
    )
    proc = subprocess.Popen([exe, "-d", "-c", str(conf)], stderr=subprocess.DEVNULL)
    try:
        await until(lambda: _listening(port), timeout=10)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def loopback_name() -> str:
    """A name of this machine's own that is not ``localhost`` (which fyntr never sends to
    a parent) and resolves to loopback, for a parent that resolves names itself."""
    for name in (socket.gethostname(), "ip6-localhost", "localhost.localdomain"):
        with contextlib.suppress(OSError):
            infos = socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)
            if infos and all(info[4][0] in ("127.0.0.1", "::1") for info in infos):
                return name
    pytest.skip("no name of this machine besides localhost resolves to loopback")


async def test_tinyproxy_with_basic_credentials_as_the_parent(tmp_path: Path) -> None:
    name = loopback_name()
    async with origin(echo) as o, tinyproxy(tmp_path, "carol", "pa55") as port:
        settings, dialer, resolver = via(f"http://carol:pa55@127.0.0.1:{port}")
        settings = replace(settings, allow_ports=(o.port,))
        async with proxy(settings, dialer=dialer) as server:
            assert await roundtrip(http_port(server), f"{name}:{o.port}")
        assert resolver.names == []
        settings, dialer, _ = via(f"http://carol:nope@127.0.0.1:{port}")
        settings = replace(settings, allow_ports=(o.port,))
        async with proxy(settings, dialer=dialer) as server:
            reply = await exchange(
                http_port(server), f"CONNECT {name}:{o.port} HTTP/1.1\r\n\r\n".encode()
            )
            assert reply == BAD_GATEWAY


async def test_another_fyntr_as_a_socks5_parent() -> None:
    async with origin(echo) as o:
        parent_settings = loopback_settings(o.port, socks5_port=0, socks5_bind="127.0.0.1")
        parent_dialer = Dialer(parent_settings.timeouts, resolver=origin_test_names)
        async with proxy(parent_settings, dialer=parent_dialer) as parent:
            socks_port = parent.addresses[-1][1]
            settings, dialer, resolver = via(f"socks5://127.0.0.1:{socks_port}")
            settings = replace(settings, allow_ports=(o.port,))
            async with proxy(settings, dialer=dialer) as server:
                assert await roundtrip(http_port(server), f"origin.test:{o.port}")
                await until(lambda: parent.metrics.tunnels_opened == 1)
    assert resolver.names == []


async def test_a_parents_407_to_a_plain_request_is_a_502_without_its_challenge() -> None:
    async with origin(echo) as o, parent_proxy("bob:pw") as p:
        settings, dialer, _ = via(f"http://bob:wrong@127.0.0.1:{p.port}")
        settings = replace(settings, allow_ports=(o.port,))
        async with proxy(settings, dialer=dialer) as server:
            reply = await exchange(
                http_port(server),
                f"GET http://origin.test:{o.port}/ HTTP/1.1\r\nHost: origin.test:{o.port}\r\n"
                "Connection: close\r\n\r\n".encode(),
            )
    assert reply.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert f"parent proxy http://127.0.0.1:{p.port} asks for credentials".encode() in reply
    assert b"proxy-authenticate" not in reply.lower()
    assert o.connections == 0
