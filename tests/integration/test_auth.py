"""``--auth-file`` (docs/house.md, "Authentication"): users of an htpasswd file made by
the real ``htpasswd -B``; real clients (curl with ``--proxy-user``, requests with the
credentials in the proxy URL, python-socks with a user name and password). Each refusal
is the protocol's own (407 with its challenge, RFC 1929's failure), counted, never
dialled for, and no password or header value reaches the log."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import requests
from python_socks import ProxyError
from python_socks.async_.asyncio import Proxy

from fyntr.limits import AUTH_CACHE_ENTRIES, AUTH_FAILURES_TRACKED, AUTH_FREE_FAILURES
from fyntr.net.server import Server
from fyntr.wire.socks5 import NO_METHOD_REPLY
from tests.support.http_origin import http_origin
from tests.support.net import (
    OK,
    curl,
    echo,
    exchange,
    fyntr_process,
    http_port,
    loopback_settings,
    origin,
    proxy,
    run_fyntr,
    until,
)

PASSWORD = "correct horse"
WRONG = "battery staple"


@pytest.fixture
def users(tmp_path: Path) -> Path:
    """An htpasswd file as people make it: ``htpasswd -B`` (bcrypt, $2y$)."""
    exe = shutil.which("htpasswd")
    assert exe is not None, "htpasswd (apache2-utils) is installed by the test command"
    path = tmp_path / "users"
    subprocess.run([exe, "-cbB", str(path), "alice", PASSWORD], check=True, capture_output=True)
    subprocess.run([exe, "-bB", str(path), "bob", "b0b"], check=True, capture_output=True)
    path.chmod(0o600)
    return path


def basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def connect_request(port: int, credentials: str | None = None) -> bytes:
    auth = f"Proxy-Authorization: Basic {credentials}\r\n" if credentials else ""
    return f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n{auth}\r\n".encode()


async def connect_from(source: str, proxy_port: int, request: bytes) -> bytes:
    """A CONNECT from ``source`` (an address of 127.0.0.0/8): the reply's head."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port, local_addr=(source, 0))
    try:
        writer.write(request)
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def guarded(users: Path) -> AsyncIterator[tuple[Server, int]]:
    """fyntr with --auth-file and SOCKS5, and an echo origin; (server, origin port)."""
    async with origin(echo) as o:
        settings = loopback_settings(o.port, socks5_port=0, auth_file=str(users))
        async with proxy(settings) as server:
            yield server, o.port
            # No dial for a refusal: the origin sees the tunnels' connections only.
            await until(lambda: o.connections >= server.metrics.tunnels_opened)
    assert o.connections == server.metrics.tunnels_opened


def assert_no_secret(text: str) -> None:
    for secret in (PASSWORD, WRONG, basic("alice", PASSWORD), basic("alice", WRONG)):
        assert secret not in text


async def test_connect_needs_credentials_and_gets_the_challenge(
    users: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fyntr")
    async with guarded(users) as (server, port):
        reply = await exchange(http_port(server), connect_request(port))
        assert reply.startswith(b"HTTP/1.1 407 Proxy Authentication Required\r\n")
        assert b'\r\nProxy-Authenticate: Basic realm="fyntr"' in reply
        reply = await exchange(http_port(server), connect_request(port, basic("alice", WRONG)))
        assert reply.startswith(b"HTTP/1.1 407 ")
        reply = await exchange(http_port(server), connect_request(port, "not-base64!"))
        assert reply.startswith(b"HTTP/1.1 407 ")
        rejections = server.metrics.rejections
        assert rejections["auth_missing"] == rejections["auth_failed"] == 1
        assert rejections["auth_malformed"] == 1
        reader, writer = await asyncio.open_connection("127.0.0.1", http_port(server))
        writer.write(connect_request(port, basic("alice", PASSWORD)) + b"early")
        assert await reader.readuntil(b"\r\n\r\n") == OK
        assert await reader.readexactly(5) == b"early"  # what came with the request goes on
        writer.close()
        assert "wrong user name or password" in caplog.text
        assert_no_secret(caplog.text)


async def test_curl_with_proxy_user_through_connect(users: Path) -> None:
    async with (
        http_origin() as o,
        proxy(loopback_settings(o.port, auth_file=str(users))) as server,
    ):
        proxy_url = f"http://127.0.0.1:{http_port(server)}"
        out = await curl("-p", "-x", proxy_url, "--proxy-user", f"alice:{PASSWORD}",
                         f"http://127.0.0.1:{o.port}/size/5")  # fmt: skip
    assert out == b"xxxxx"
    assert not o.header(0, b"proxy-authorization")  # inside the tunnel: never seen


async def test_a_credential_is_hashed_once_while_its_verdict_is_kept(users: Path) -> None:
    async with guarded(users) as (server, port):
        assert server.auth is not None
        request = connect_request(port, basic("alice", PASSWORD))
        heads = await asyncio.gather(*(connect_from("127.0.0.1", http_port(server), request)
                                       for _ in range(20)))  # fmt: skip
        assert heads == [OK] * 20
        assert server.auth.checked == 1


async def test_socks5_user_name_and_password(users: Path) -> None:
    async with guarded(users) as (server, port):
        socks_port = server.addresses[1][1]
        url = f"socks5://alice:{PASSWORD.replace(' ', '%20')}@127.0.0.1:{socks_port}"
        sock = await Proxy.from_url(url).connect("127.0.0.1", port, timeout=5)
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
        writer.close()
        with pytest.raises(ProxyError):
            await Proxy.from_url(f"socks5://alice:x@127.0.0.1:{socks_port}").connect(
                "127.0.0.1", port, timeout=5
            )
        # RFC 1929 on the wire: a failure is 01 01, then the close.
        reply = await exchange(socks_port, b"\x05\x01\x02\x01\x05alice\x01x")
        assert reply == b"\x05\x02\x01\x01"
        # A greeting without user/password: no acceptable method.
        assert await exchange(socks_port, b"\x05\x01\x00") == NO_METHOD_REPLY
        assert server.metrics.rejections["auth_failed"] == 2
        assert server.metrics.rejections["auth_missing"] == 1


async def test_plain_http_is_checked_per_request_and_the_credentials_never_go_on(
    users: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fyntr")
    async with http_origin() as o:
        settings = loopback_settings(o.port, auth_file=str(users))
        async with proxy(settings) as server:
            port = http_port(server)
            url = f"http://127.0.0.1:{o.port}/size/100"
            with requests.Session() as session:
                session.proxies = {"http": f"http://alice:{PASSWORD}@127.0.0.1:{port}"}
                for _ in range(3):  # one kept connection
                    response = await asyncio.to_thread(session.get, url, timeout=5)
                    assert response.status_code == 200 and response.content == b"x" * 100
            denied = await asyncio.to_thread(
                requests.get, url, proxies={"http": f"http://127.0.0.1:{port}"}, timeout=5
            )
            assert denied.status_code == 407
            assert denied.headers["Proxy-Authenticate"].startswith('Basic realm="fyntr"')
            # A second request on a kept connection carries no credentials: refused.
            request = (
                f"GET {url} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Proxy-Authorization: Basic {basic('bob', 'b0b')}\r\n\r\n"
                f"GET {url} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            ).encode()
            reply = await exchange(port, request)
            assert reply.count(b"HTTP/1.1 200 OK") == 1
            assert b"HTTP/1.1 407 " in reply
            clients = {c.client for c in server.status.snapshot().clients}
    assert len(o.requests) == 4
    assert all(not o.header(i, b"proxy-authorization") for i in range(4))
    assert clients >= {"alice", "bob"}
    assert_no_secret(caplog.text)


async def test_ten_thousand_wrong_passwords_pass_none_and_starve_nobody(users: Path) -> None:
    """From one address, as fast as it can: its guesses wait out a growing back-off
    (answered without a hash check), while another address keeps being served; what
    fyntr remembers stays bounded."""
    async with guarded(users) as (server, port):
        assert server.auth is not None
        proxy_port = http_port(server)
        attempts = 10_000
        replies: list[bytes] = []

        async def guesser(start: int) -> None:
            for i in range(start, attempts, 50):
                request = connect_request(port, basic("alice", f"guess{i}"))
                replies.append(await connect_from("127.0.0.2", proxy_port, request))

        async def user() -> int:
            served = 0
            request = connect_request(port, basic("alice", PASSWORD))
            while len(replies) < attempts:
                assert await connect_from("127.0.0.3", proxy_port, request) == OK
                served += 1
            return served

        serving = asyncio.create_task(user())
        await asyncio.gather(*(guesser(i) for i in range(50)))
        served = await serving
        assert len(replies) == attempts
        assert all(reply.startswith(b"HTTP/1.1 407 ") for reply in replies)
        assert served > 0
        # One check at a time per address: the free failures, then one per wait (1 s,
        # 2 s, 4 s, 8 s: four in 15 s), and the user's one; the rest are answered unchecked.
        assert server.auth.checked <= AUTH_FREE_FAILURES + 1 + 4 + 1
        assert server.metrics.rejections["auth_backoff"] >= attempts - AUTH_FREE_FAILURES - 5
        assert len(server.auth.book) <= AUTH_CACHE_ENTRIES + AUTH_FAILURES_TRACKED


async def test_sighup_reads_the_file_again(users: Path) -> None:
    async with origin(echo) as o:
        args = ["--port", "0", "--allow-cidr", "127.0.0.0/8", "--allow-port", str(o.port)]
        with fyntr_process(*args, "--auth-file", str(users)) as proc:
            port = proc.ports[0]
            _reader, writer, head = await connect_via_auth(port, o.port, "bob", "b0b")
            assert head == OK
            exe = shutil.which("htpasswd")
            assert exe is not None
            deleting = [exe, "-D", str(users), "bob"]
            await asyncio.to_thread(subprocess.run, deleting, check=True, capture_output=True)
            proc.stop(signal.SIGHUP)
            await proc.line_with("authentication: 1 users from")
            _r, w2, head = await connect_via_auth(port, o.port, "bob", "b0b")
            assert head.startswith(b"HTTP/1.1 407 ")
            w2.close()
            writer.write(b"still up")  # a tunnel already open is not disturbed
            assert await asyncio.wait_for(_reader.readexactly(8), 5) == b"still up"
            writer.close()
            unusable = "alice:$apr1$abc$def\n"
            await asyncio.to_thread(users.write_text, unusable)
            proc.stop(signal.SIGHUP)
            await proc.line_with("auth file reload failed, keeping the previous users")
            _r, w3, head = await connect_via_auth(port, o.port, "alice", PASSWORD)
            assert head == OK
            w3.close()
            proc.stop()
            assert await asyncio.to_thread(proc.finish) == 0


async def connect_via_auth(
    proxy_port: int, port: int, user: str, password: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
    writer.write(connect_request(port, basic(user, password)))
    return reader, writer, await reader.readuntil(b"\r\n\r\n")


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("alice:$apr1$abc$def\n", "line 1: the entry of 'alice' is not a bcrypt hash"),
        ("# nobody\n", "no users"),
        ("alice\n", "line 1: not a user:hash line"),
    ],
)
def test_an_unusable_auth_file_stops_the_start(tmp_path: Path, content: str, says: str) -> None:
    path = tmp_path / "users"
    path.write_text(content)
    result = run_fyntr("--port", "0", "--auth-file", str(path))
    assert result.returncode == 1
    assert says in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


async def test_a_client_with_credentials_but_outside_the_ranges_is_not_checked(
    users: Path,
) -> None:
    async with origin(echo) as o:
        settings = loopback_settings(o.port, auth_file=str(users), client_allow=("10.0.0.0/8",))
        async with proxy(settings) as server:
            assert server.auth is not None
            reply = await exchange(
                http_port(server), connect_request(o.port, basic("alice", PASSWORD))
            )
            assert reply.startswith(b"HTTP/1.1 403 ")
            assert server.auth.checked == 0
    assert o.connections == 0
