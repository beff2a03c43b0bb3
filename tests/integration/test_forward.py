"""Plain HTTP forwarding through real clients and a real origin on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import shutil
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from fyntr.errors import STATUS_LINES, Status
from fyntr.limits import HTTP_KEEPALIVE_IDLE_S, POOL_PER_ORIGIN
from fyntr.policy.threat import ThreatAction
from tests.support.faulty_origin import Request, Writes, faulty_origin, response
from tests.support.http_origin import http_origin
from tests.support.net import FakeClock, exchange, http_port, loopback_settings, proxy, until


async def run(*argv: str, env: dict[str, str] | None = None) -> tuple[int, bytes, bytes]:
    clean = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env={**clean, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out, err


async def curl(proxy_port: int, *args: str) -> bytes:
    code, out, err = await run("curl", "-sS", "-x", f"http://127.0.0.1:{proxy_port}", *args)
    assert code == 0, err
    return out


async def test_curl_get_head_post_and_chunked_upload(tmp_path: Path) -> None:
    async with http_origin() as o, proxy(loopback_settings(o.port)) as server:
        port = http_port(server)
        base = f"http://127.0.0.1:{o.port}"
        assert await curl(port, f"{base}/size/100000") == b"x" * 100000
        head = await curl(port, "-I", f"{base}/size/100000")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"content-length: 100000" in head
        assert await curl(port, "--data-binary", "posted body", f"{base}/echo") == b"posted body"
        upload = tmp_path / "up.bin"
        upload.write_bytes(os.urandom(300_000))
        out = await curl(
            port, "-H", "Transfer-Encoding: chunked", "--data-binary", f"@{upload}", f"{base}/echo"
        )
        assert out == upload.read_bytes()
        assert await curl(port, f"{base}/chunked") == b"one two three"
        assert [r.method for r in o.requests] == [b"GET", b"HEAD", b"POST", b"POST", b"GET"]
        assert o.requests[0].target == b"/size/100000"  # origin-form upstream
        assert o.header(3, b"transfer-encoding") == [b"chunked"]
        await until(lambda: not server.tunnels)
        assert server.admission.active == 0


async def test_keep_alive_reuses_both_connections() -> None:
    async with http_origin() as o, proxy(loopback_settings(o.port)) as server:
        base = f"http://127.0.0.1:{o.port}"
        out = await curl(
            http_port(server),
            "-w",
            " %{num_connects}",
            f"{base}/a",
            f"{base}/b",
            f"{base}/c",
        )
        assert out == b"hello 1hello 0hello 0"  # one client connection for three requests
        assert o.connections == 1  # and one upstream connection
        # A second client connection takes the pooled upstream connection.
        await until(lambda: not server.tunnels)
        assert len(server.pool) == 1
        assert await curl(http_port(server), f"{base}/d") == b"hello"
        assert o.connections == 1


async def test_http10_client_gets_close_semantics() -> None:
    async with http_origin() as o, proxy(loopback_settings(o.port)) as server:
        reply = await exchange(
            http_port(server),
            f"GET http://127.0.0.1:{o.port}/chunked HTTP/1.0\r\n\r\n".encode(),
        )
        # The origin chunked it; an HTTP/1.0 client gets it close-delimited.
        assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"transfer-encoding" not in reply.lower()
        assert reply.endswith(b"\r\n\r\none two three")


async def test_hop_by_hop_fields_removed_via_added_host_rewritten() -> None:
    async with http_origin() as o, proxy(loopback_settings(o.port)) as server:
        request = (
            f"GET http://127.0.0.1:{o.port}/x?q=1 HTTP/1.1\r\n"
            "Host: wrong.example\r\n"
            "Connection: close, X-Secret\r\n"
            "X-Secret: drop me\r\n"
            "Proxy-Connection: keep-alive\r\n"
            "Keep-Alive: 5\r\n"
            "TE: trailers\r\n"
            "Proxy-Authorization: Basic Zm9vOmJhcg==\r\n"
            "X-Kept: yes\r\n\r\n"
        ).encode()
        reply = await exchange(http_port(server), request)
        assert reply.startswith(b"HTTP/1.1 200 OK\r\n") and reply.endswith(b"hello")
        assert b"via: 1.1 fyntr" in reply.lower()
        seen = o.requests[0]
        names = {n for n, _ in seen.headers}
        assert seen.target == b"/x?q=1"
        assert dict(seen.headers)[b"host"] == f"127.0.0.1:{o.port}".encode()
        assert names.isdisjoint(
            {b"x-secret", b"proxy-connection", b"keep-alive", b"te", b"proxy-authorization"}
        )
        assert o.header(0, b"x-kept") == [b"yes"]
        assert o.header(0, b"via") == [b"1.1 fyntr"]


async def test_pipelined_requests_answered_in_order() -> None:
    async with http_origin() as o, proxy(loopback_settings(o.port)) as server:
        one = f"GET http://127.0.0.1:{o.port}/size/3 HTTP/1.1\r\nHost: x\r\n\r\n"
        last = (
            f"GET http://127.0.0.1:{o.port}/size/5 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        reply = await exchange(http_port(server), (one * 3 + last).encode())
        assert reply.count(b"HTTP/1.1 200 OK") == 4
        assert reply.endswith(b"xxxxx")
        assert [r.target for r in o.requests] == [b"/size/3"] * 3 + [b"/size/5"]


async def test_policy_applies_to_plain_http() -> None:
    async with http_origin() as o, proxy(loopback_settings()) as server:  # port not allowed
        reply = await exchange(
            http_port(server),
            f"GET http://127.0.0.1:{o.port}/ HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
        )
        assert reply.startswith(b"HTTP/1.1 403 Forbidden\r\n")
        assert b"allowed ports are: 80" in reply
        assert o.connections == 0
    async with http_origin() as o, proxy(loopback_settings(o.port, allow_cidrs=())) as server:
        reply = await exchange(
            http_port(server),
            f"GET http://127.0.0.1:{o.port}/ HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
        )
        assert reply.startswith(b"HTTP/1.1 403 Forbidden\r\n")  # 127.0.0.0/8 is denied
        assert o.connections == 0


async def test_pooled_connection_is_checked_again_after_a_feed_reload(tmp_path: Path) -> None:
    feed = tmp_path / "feed.txt"
    feed.write_text("unrelated.test\n")
    settings = loopback_settings(
        threat_feed_files=(str(feed),),
        threat_action=ThreatAction.BLOCK,
        allow_domains=("localhost",),  # its ::1 is dropped, not a refusal
    )
    async with http_origin() as o, proxy(replace(settings, allow_ports=(o.port,))) as server:
        url = f"http://localhost:{o.port}/"
        assert await curl(http_port(server), url) == b"hello"
        await until(lambda: len(server.pool) == 1)
        assert await curl(http_port(server), url) == b"hello"  # the pooled one, cleared
        assert o.connections == 1
        feed.write_text("127.0.0.1\n")  # the address the pooled connection is connected to
        await server.threats.reload()
        await until(lambda: len(server.pool) == 1)
        code, out, _ = await run(
            "curl", "-sS", "-i", "-x", f"http://127.0.0.1:{http_port(server)}", url
        )
        assert code == 0 and out.startswith(b"HTTP/1.1 403 Forbidden\r\n"), out
        assert o.connections == 1


async def test_upgrade_gets_501_and_origin_form_keeps_405() -> None:
    async with http_origin() as o, proxy(loopback_settings(o.port)) as server:
        reply = await exchange(
            http_port(server),
            f"GET http://127.0.0.1:{o.port}/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
            "Upgrade: websocket\r\n\r\n".encode(),
        )
        assert reply.startswith(b"HTTP/1.1 501 Not Implemented\r\n")
        assert o.connections == 0
        # Origin-form is not a proxy request: the original's 405, byte for byte.
        assert (
            await exchange(http_port(server), b"GET / HTTP/1.1\r\n\r\n")
            == STATUS_LINES[Status.METHOD_NOT_ALLOWED]
        )


SMUGGLING = [
    # CL.TE and TE.CL: both framings at once
    b"POST {u} HTTP/1.1\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
    b"POST {u} HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\nGPOST",
    # TE.TE: obfuscated or repeated codings
    b"POST {u} HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n0\r\n\r\n",
    b"POST {u} HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    b"POST {u} HTTP/1.1\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    b"POST {u} HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
    b"POST {u} HTTP/1.1\r\nTransfer-Encoding:\tchunked\r\n identity\r\n\r\n0\r\n\r\n",
    # double or malformed Content-Length
    b"POST {u} HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    b"POST {u} HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\nabc",
    b"POST {u} HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc",
    # obsolete line folding, bare LF, bare CR
    b"GET {u} HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n",
    b"GET {u} HTTP/1.1\nHost: x\n\n",
    b"GET {u} HTTP/1.1\r\nX-A: 1\rX-B: 2\r\n\r\n",
    # invalid chunk sizes
    b"POST {u} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    b"POST {u} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n\r\n",
]


@pytest.mark.parametrize("template", SMUGGLING)
async def test_smuggling_corpus_refused(template: bytes) -> None:
    async with http_origin() as o, proxy(loopback_settings(o.port)) as server:
        url = f"http://127.0.0.1:{o.port}/echo".encode()
        reply = await exchange(http_port(server), template.replace(b"{u}", url))
        assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n"), reply
        assert b"connection: close" in reply.lower()
        # Nothing but, at most, a complete first request reaches the origin.
        assert len(o.requests) <= 1 and b"GPOST" not in o.raw


async def test_requests_and_httpx_with_http_proxy() -> None:
    async with http_origin() as o, proxy(loopback_settings(o.port)) as server:
        proxy_url = f"http://127.0.0.1:{http_port(server)}"
        url = f"http://127.0.0.1:{o.port}/size/2000"

        def with_requests() -> list[bytes]:
            with requests.Session() as s:
                s.trust_env = False
                proxies = {"http": proxy_url}
                return [s.get(url, proxies=proxies, timeout=10).content for _ in range(3)]

        assert await asyncio.to_thread(with_requests) == [b"x" * 2000] * 3
        async with httpx.AsyncClient(proxy=proxy_url, trust_env=False) as client:
            got = [(await client.get(url)).content for _ in range(3)]
            posted = await client.post(f"http://127.0.0.1:{o.port}/echo", content=b"from httpx")
        assert got == [b"x" * 2000] * 3 and posted.content == b"from httpx"
        assert o.connections <= 2  # each client kept its upstream connection


def tiny_wheel() -> tuple[str, bytes]:
    name = "fyntr_probe_pkg-1.0-py3-none-any.whl"
    files = {
        "fyntr_probe_pkg/__init__.py": b"VALUE = 42\n",
        "fyntr_probe_pkg-1.0.dist-info/METADATA": (
            b"Metadata-Version: 2.1\nName: fyntr-probe-pkg\nVersion: 1.0\n"
        ),
        "fyntr_probe_pkg-1.0.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = "".join(f"{path},,\n" for path in files) + "fyntr_probe_pkg-1.0.dist-info/RECORD,,\n"
    files["fyntr_probe_pkg-1.0.dist-info/RECORD"] = record.encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return name, buf.getvalue()


@pytest.mark.slow
async def test_pip_installs_from_a_plain_http_index(tmp_path: Path) -> None:
    name, wheel = tiny_wheel()
    digest = hashlib.sha256(wheel).hexdigest()
    page = f'<a href="/index/{name}#sha256={digest}">{name}</a>'.encode()
    async with (
        http_origin({"fyntr-probe-pkg/": page, name: wheel}) as o,
        proxy(loopback_settings(o.port)) as server,
    ):
        code, _out, err = await run(
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--target",
            str(tmp_path / "site"),
            "--index-url",
            f"http://127.0.0.1:{o.port}/index/",
            "--trusted-host",
            f"127.0.0.1:{o.port}",
            "fyntr-probe-pkg",
            env={"http_proxy": f"http://127.0.0.1:{http_port(server)}", "NO_PROXY": ""},
        )
        assert code == 0, err
        assert (tmp_path / "site/fyntr_probe_pkg/__init__.py").read_bytes() == b"VALUE = 42\n"
        assert any(r.target.endswith(name.encode()) for r in o.requests)


APT_HTTP = Path("/usr/lib/apt/methods/http")


@pytest.mark.skipif(not APT_HTTP.exists(), reason="Debian's apt http method is not installed")
async def test_apt_http_method_fetches_through_fyntr(tmp_path: Path) -> None:
    payload = os.urandom(50_000)
    async with (
        http_origin({"pool/pkg.deb": payload}) as o,
        proxy(loopback_settings(o.port)) as server,
    ):
        dest = tmp_path / "pkg.deb"
        # apt's method protocol: a configuration message, then one fetch (600).
        messages = (
            "601 Configuration\n"
            f"Config-Item: Acquire::http::Proxy=http://127.0.0.1:{http_port(server)}/\n\n"
            "600 URI Acquire\n"
            f"URI: http://127.0.0.1:{o.port}/index/pool/pkg.deb\n"
            f"Filename: {dest}\n\n"
        ).encode()
        proc = await asyncio.create_subprocess_exec(
            str(APT_HTTP),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(messages)
        await proc.stdin.drain()
        transcript = b""
        try:
            async with asyncio.timeout(20):
                while b"201 URI Done" not in transcript and b"400 URI Failure" not in transcript:
                    line = await proc.stdout.readline()
                    if not line:
                        break
                    transcript += line
        finally:
            proc.stdin.close()
            proc.kill()
            await proc.wait()
        assert b"201 URI Done" in transcript, transcript
        assert dest.read_bytes() == payload
        assert o.header(0, b"via") == [b"1.1 fyntr"]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is installed by the test command")
async def test_upstream_gone_mid_request_is_502_and_kept_connection_retried() -> None:
    async with http_origin() as o, proxy(loopback_settings(o.port)) as server:
        base = f"http://127.0.0.1:{o.port}"
        # /close answers, then closes a connection fyntr would keep: the next request
        # goes out on a new one, and the client sees nothing of it.
        out = await curl(http_port(server), f"{base}/close", f"{base}/a")
        assert out == b"hellohello"
        assert o.connections == 2
    async with proxy(loopback_settings(1)) as server:  # nothing listens on port 1
        reply = await exchange(
            http_port(server), b"GET http://127.0.0.1:1/ HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        assert reply.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")


STREAM = (
    b"POST http://127.0.0.1:{p}/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
    b"POST http://127.0.0.1:{p}/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    b"GET http://127.0.0.1:{p}/size/7 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
)


async def split_exchange(cuts: list[int]) -> tuple[bytes, list[tuple[bytes, bytes, bytes]]]:
    async with http_origin() as o, proxy(loopback_settings(o.port)) as server:
        stream = STREAM.replace(b"{p}", str(o.port).encode())
        reader, writer = await asyncio.open_connection("127.0.0.1", http_port(server))
        last = 0
        for cut in [*sorted(c % len(stream) for c in cuts), len(stream)]:
            writer.write(stream[last:cut])
            await writer.drain()
            await asyncio.sleep(0)
            last = max(last, cut)
        reply = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        return reply, [(r.method, r.target, r.body) for r in o.requests]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 10_000), max_size=8))
def test_every_split_of_a_request_stream_forwards_the_same(cuts: list[int]) -> None:
    reply, seen = asyncio.run(split_exchange(cuts))
    assert seen == [
        (b"POST", b"/echo", b"hello"),
        (b"POST", b"/echo", b"abcde"),
        (b"GET", b"/size/7", b""),
    ]
    assert reply.count(b"HTTP/1.1 200 OK\r\n") == 3
    assert b"\r\n\r\nhello" in reply and b"abcde" in reply and reply.endswith(b"\r\n\r\nxxxxxxx")


async def test_idle_keep_alive_client_closed_after_60s_and_pool_expires() -> None:
    clock = FakeClock()
    async with http_origin() as o, proxy(loopback_settings(o.port), clock=clock) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", http_port(server))
        writer.write(f"GET http://127.0.0.1:{o.port}/ HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK") and await reader.readexactly(5) == b"hello"
        await until(lambda: len(server.pool) == 1)
        server.sweep()  # sees the exchange's bytes
        clock.advance(HTTP_KEEPALIVE_IDLE_S - 1)
        server.sweep()
        assert len(server.tunnels) == 1  # still waiting for a request
        assert len(server.pool) == 0  # the idle upstream connection expired long before
        clock.advance(2)
        server.sweep()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, not reset
        writer.close()
        await until(lambda: not server.tunnels)
        assert server.admission.active == 0


async def test_pool_keeps_at_most_the_per_origin_bound() -> None:
    def answer(_request: Request) -> Writes:  # late enough for every exchange to overlap
        return [(1.0, response(b"hello"))]

    async with faulty_origin(answer) as o, proxy(loopback_settings(o.port)) as server:
        clients = []
        for _ in range(POOL_PER_ORIGIN + 3):  # that many exchanges at once
            reader, writer = await asyncio.open_connection("127.0.0.1", http_port(server))
            writer.write(f"GET http://127.0.0.1:{o.port}/ HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            clients.append((reader, writer))
        for reader, _writer in clients:
            await reader.readuntil(b"\r\n\r\n")
            assert await reader.readexactly(5) == b"hello"
        assert o.connections == POOL_PER_ORIGIN + 3
        # Each went back to the pool before its response was written: three were closed.
        assert len(server.pool) == POOL_PER_ORIGIN
        for _reader, writer in clients:
            writer.close()


async def test_shutdown_closes_idle_keep_alive_clients_at_once() -> None:
    async with http_origin() as o, proxy(loopback_settings(o.port)) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", http_port(server))
        writer.write(f"GET http://127.0.0.1:{o.port}/ HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(5)
        async with asyncio.timeout(2):  # not the 30 s of grace
            await server.shutdown(grace=30)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()


@pytest.mark.parametrize("connection", [b"", b"Connection: upgrade\r\n"])
async def test_an_origin_that_switches_protocols_gets_the_client_a_502(connection: bytes) -> None:
    """A 101 to a plain request (with or without Connection: upgrade, which llhttp treats
    alike) ends HTTP on that connection: the client gets a 502 saying so."""

    def answer(_request: Request) -> Writes:
        return [(0, b"HTTP/1.1 101 Switching Protocols\r\n" + connection + b"Upgrade: x\r\n\r\n")]

    async with faulty_origin(answer) as o, proxy(loopback_settings(o.port)) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", http_port(server))
        writer.write(f"GET http://127.0.0.1:{o.port}/ HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        reply = await asyncio.wait_for(reader.read(), 5)
        assert reply.startswith(b"HTTP/1.1 502 ")
        assert reply.endswith(b"the origin switched protocols\n")
        writer.close()
