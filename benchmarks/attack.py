"""The attack run: fyntr as a hostile user and broken peers would try it.

    python benchmarks/attack.py [--scale 1.0] [--soak-s 60] [--only linger,resets,...]
                                [--json PATH]

Each case runs against a fresh ``python -m fyntr`` (this checkout) on 127.0.0.1 with its
metrics port, and origins served by this script on 127.0.0.1. The cases replay what an
attack run found, so that they stay fixed:

* ``linger``: connect, an incomplete ``CONNECT``, FIN, read to EOF, 1,100 times; then no
  handshake may be left holding a slot and a real CONNECT must get its 200 at once;
* ``ssrf``: every spelling of a private or loopback target (IPv4 forms, mapped, NAT64,
  6to4, IPv4-translated, site-local): each refused, no connection reaches the origin;
* ``fuzz``: mutated CONNECT heads, 150 at a time: no traceback, the proxy still relays;
* ``halfclose``: tunnels that move data both ways and half-close at random points: every
  byte exact (sha256) both ways;
* ``resets``: origins that send a random prefix, then reset while the client is still
  uploading (spliced and not), trickling or streaming 20 MB in 64 KiB writes: every
  client sees a reset (or, streaming, at least the end), no tunnel is left behind;
* ``smuggle``: client A's POST whose ``Connection`` names ``Content-Length`` (its body a
  request whose own body would swallow the next request on that origin connection), then
  client B's GET with a bearer token: A refused, the origin never sees B's token inside
  another request, B gets its own answer;
* ``pool``: a faulty origin answers A and then sends more on the same connection (a
  response cut mid-head, a short Content-Length, an extra response, a body on HEAD or
  after 204, a response after a chunked one, a response whose ``Connection`` names its
  framing), at once or 300 ms late; B, asking the same origin, gets its own answer;
* ``pipeline``: 700 GETs and 20 bytes of the next in one write, 5,000 GETs in writes of
  500, a 100 KB POST and 30 bytes of the next GET: every request answered, no 431;
* ``soak``: ``--soak-s`` seconds of 50 concurrent tunnels of 1 KB-5 MB, 10% reset by the
  client, ``--upload-rate 50mbit``; then the proxy's RSS once it has gone idle, against
  its idle RSS before the load (the budget: 32 MiB).

``--scale`` multiplies the counts (0.05 for a smoke run). Exits 1 when a case fails.
A benchmark, not a test: tests/integration/test_attack_smoke.py runs it small.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))  # the faulty origin the tests use too
from tests.support.faulty_origin import (  # noqa: E402
    FAULTS,
    Request,
    Writes,
    fault_writes,
    faulty_origin,
    response,
    stream,
)

MIB = 1 << 20
RSS_BUDGET_MIB = 32
RST = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a RST

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def reset(writer: asyncio.StreamWriter) -> None:
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RST)
    writer.transport.abort()


@dataclass
class Fyntr:
    proc: asyncio.subprocess.Process
    port: int
    metrics: int
    log: Path

    def status(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.metrics}/status"
        with urllib.request.urlopen(url, timeout=5) as reply:
            return json.loads(reply.read())  # type: ignore[no-any-return]

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def tracebacks(self) -> int:
        return self.log.read_text(errors="replace").count("Traceback")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def fyntr(tmp: Path, *args: str, loopback: bool = True) -> AsyncIterator[Fyntr]:
    """fyntr, allowed to reach 127.0.0.0/8 unless ``loopback`` is False."""
    port, metrics = free_port(), free_port()
    log = tmp / f"fyntr-{port}.log"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "fyntr",
            "--port",
            str(port),
            "--metrics-port",
            str(metrics),
            *(["--allow-cidr", "127.0.0.0/8"] if loopback else []),
            "--log-level",
            "warning",
            "--shutdown-grace",
            "2",
            *args,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        for _ in range(300):
            with contextlib.suppress(OSError):
                _r, w = await asyncio.open_connection("127.0.0.1", metrics)
                w.close()
                break
            await asyncio.sleep(0.05)
        yield Fyntr(proc, port, metrics, log)
    finally:
        proc.terminate()  # drains for up to --shutdown-grace, while the origins go on
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()


@contextlib.asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[int]:
    async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(guarded, "127.0.0.1", 0, backlog=4096)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def connect(proxy: int, target: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy)
    writer.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    if not head.startswith(b"HTTP/1.1 200"):
        writer.close()
        raise ConnectionRefusedError(head.split(b"\r\n")[0].decode())
    return reader, writer


async def read_outcome(reader: asyncio.StreamReader) -> tuple[str, bytes]:
    """("eof" or "reset", what was read)."""
    digest = hashlib.sha256()
    try:
        while chunk := await reader.read(1 << 16):
            digest.update(chunk)
    except ConnectionError:
        return "reset", digest.digest()
    return "eof", digest.digest()


# --- the cases ----------------------------------------------------------------------
async def case_linger(tmp: Path, scale: float) -> dict[str, Any]:
    loops = max(20, int(1100 * scale))

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1 << 16):
            writer.write(data)

    async with serve(echo) as origin, fyntr(tmp, "--allow-port", str(origin)) as proxy:
        started = time.monotonic()
        for _ in range(loops):
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(b"CONNECT")
            writer.write_eof()
            await reader.read()
            writer.close()
        elapsed = time.monotonic() - started
        pending = proxy.status()["pending_handshakes"]
        try:
            _r, w = await connect(proxy.port, f"127.0.0.1:{origin}")
            w.close()
            legit = "200"
        except ConnectionRefusedError as exc:
            legit = str(exc)
        return {
            "loops": loops,
            "loops_per_s": round(loops / elapsed),
            "pending_after": pending,
            "legit_connect": legit,
            "ok": pending <= 1 and legit == "200",
        }


SSRF_TARGETS = [
    "127.0.0.1",
    "127.1.2.3",
    "[::1]",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "[::127.0.0.1]",
    "[64:ff9b::7f00:1]",
    "[64:ff9b::a9fe:a9fe]",
    "[2002:7f00:1::]",
    "[2002:a9fe:a9fe::1]",
    "[::ffff:0:7f00:1]",
    "[fec0::1]",
    "[fe80::1]",
    "[fc00::1]",
    "169.254.169.254",
    "10.0.0.1",
    "192.168.1.1",
    "172.16.0.1",
    "100.64.0.1",
    "0.0.0.0",
    "localhost",
]


async def case_ssrf(tmp: Path, scale: float) -> dict[str, Any]:
    del scale
    reached = 0

    async def count(_r: asyncio.StreamReader, _w: asyncio.StreamWriter) -> None:
        nonlocal reached
        reached += 1

    allowed = []
    async with (
        serve(count) as origin,
        fyntr(tmp, "--allow-port", str(origin), loopback=False) as proxy,
    ):
        for host in SSRF_TARGETS:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(f"CONNECT {host}:{origin} HTTP/1.1\r\n\r\n".encode())
            reply = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            if not reply.startswith(b"HTTP/1.1 403"):
                allowed.append(f"{host}: {reply[:40]!r}")
    return {
        "targets": len(SSRF_TARGETS),
        "not_refused": allowed,
        "reached_origin": reached,
        "ok": not allowed and reached == 0,
    }


def mutate(rng: random.Random, head: bytes) -> bytes:
    data = bytearray(head)
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(5)
        pos = rng.randrange(len(data) + 1)
        if op == 0 and data:
            del data[pos % len(data)]
        elif op == 1:
            data.insert(pos, rng.randrange(256))
        elif op == 2 and data:
            data[pos % len(data)] = rng.randrange(256)
        elif op == 3:
            data[pos:pos] = rng.choice([b"\r\n", b"\n", b":", b" ", b"[", b"]", b"\x00", b"%"])
        else:
            data[pos:pos] = data[pos : pos + rng.randint(1, 64)] * rng.randint(1, 200)
    return bytes(data)


async def case_fuzz(tmp: Path, scale: float) -> dict[str, Any]:
    cases = max(100, int(20000 * scale))
    rng = random.Random(4)

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1 << 16):
            writer.write(data)

    async with (
        serve(echo) as origin,
        fyntr(tmp, "--allow-port", str(origin), "--max-connections", "0") as proxy,
    ):
        base = f"CONNECT 127.0.0.1:{origin} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        limit = asyncio.Semaphore(150)
        replies: dict[str, int] = {}

        async def one(n: int) -> None:
            async with limit:
                with contextlib.suppress(OSError, TimeoutError):
                    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
                    writer.write(mutate(rng, base))
                    if n % 2:
                        writer.write_eof()
                    reply = await asyncio.wait_for(reader.read(64), 5)
                    status = reply[9:12].decode(errors="replace") or "closed"
                    replies[status] = replies.get(status, 0) + 1
                    writer.close()

        await asyncio.gather(*(one(n) for n in range(cases)))
        rss = proxy.rss_mib()
        reader, writer = await connect(proxy.port, f"127.0.0.1:{origin}")
        writer.write(b"still relays")
        alive = await asyncio.wait_for(reader.readexactly(12), 5) == b"still relays"
        writer.close()
        return {
            "cases": cases,
            "replies": dict(sorted(replies.items())),
            "rss_after_mib": round(rss, 1),
            "tracebacks": proxy.tracebacks(),
            "ok": alive and proxy.tracebacks() == 0,
        }


async def case_halfclose(tmp: Path, scale: float) -> dict[str, Any]:
    tunnels = max(4, int(100 * scale))
    size = max(2 * MIB, int(20 * MIB * min(1.0, scale * 4)))

    async def half_closing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Sends ``size`` seeded bytes and a FIN at a random point of the upload; hands
        back the sha256 of what it received at the end."""
        seed = int((await reader.readexactly(8)).hex(), 16)
        payload = random.Random(seed).randbytes(size)
        received = hashlib.sha256()

        async def take() -> None:
            while chunk := await reader.read(1 << 16):
                received.update(chunk)

        taking = asyncio.ensure_future(take())
        writer.write(payload)
        await writer.drain()
        writer.write_eof()
        await taking
        # The client reads our digest on a second connection: this one is half-closed.
        DIGESTS[seed] = received.digest()

    async with (
        serve(half_closing) as origin,
        fyntr(tmp, "--allow-port", str(origin)) as proxy,
    ):

        async def one(seed: int) -> bool:
            reader, writer = await connect(proxy.port, f"127.0.0.1:{origin}")
            upload = random.Random(seed + 1).randbytes(size)
            writer.write(seed.to_bytes(8, "big"))
            cut = random.Random(seed).randrange(size)

            async def send() -> None:
                writer.write(upload[:cut])
                await writer.drain()
                await asyncio.sleep(random.random() * 0.05)
                writer.write(upload[cut:])
                await writer.drain()
                writer.write_eof()

            sending = asyncio.ensure_future(send())
            outcome, digest = await asyncio.wait_for(read_outcome(reader), 120)
            await sending
            for _ in range(1200):  # the origin hashes the upload up to its FIN
                if seed in DIGESTS:
                    break
                await asyncio.sleep(0.05)
            writer.close()
            want_down = hashlib.sha256(random.Random(seed).randbytes(size)).digest()
            want_up = hashlib.sha256(upload).digest()
            return outcome == "eof" and digest == want_down and DIGESTS.get(seed) == want_up

        seeds = [random.randrange(1 << 60) for _ in range(tunnels)]
        exact = await asyncio.gather(*(one(seed) for seed in seeds))
        await asyncio.sleep(0.5)
        left = proxy.status()["active_flows"]
    return {
        "tunnels": tunnels,
        "bytes_each_way": size,
        "byte_exact": sum(exact),
        "left_in_status": left,
        "ok": all(exact) and left == 0,
    }


DIGESTS: dict[int, bytes] = {}


async def trickle(writer: asyncio.StreamWriter) -> None:
    """Keep uploading, slowly: nothing unread piles up in the proxy's client socket, so
    only a deliberate reset from the proxy makes the client see one."""
    with contextlib.suppress(ConnectionError):
        while True:
            writer.write(bytes(1024))
            await writer.drain()
            await asyncio.sleep(0.005)


async def case_resets(tmp: Path, scale: float) -> dict[str, Any]:
    tunnels = max(10, int(10 * scale))

    async def prefix_then_reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        streaming = (await reader.readexactly(1)) == b"S"
        if streaming:  # download while the client uploads, then reset
            reading = asyncio.ensure_future(read_outcome(reader))
            with contextlib.suppress(ConnectionError):
                await stream(writer, random.randrange(MIB // 2, 20 * MIB))
            reading.cancel()
        else:
            writer.write(os.urandom(random.randrange(MIB // 2, 20 * MIB)))
            await writer.drain()
        reset(writer)

    async with (
        serve(prefix_then_reset) as origin,
        fyntr(tmp, "--allow-port", str(origin)) as proxy,
    ):

        async def one(streaming: bool) -> str:
            reader, writer = await connect(proxy.port, f"127.0.0.1:{origin}")
            writer.write(b"S" if streaming else b"T")

            async def upload() -> None:
                with contextlib.suppress(ConnectionError):
                    await stream(writer, 20 * MIB)
                    writer.write_eof()

            uploading = asyncio.ensure_future(upload() if streaming else trickle(writer))
            try:
                return (await asyncio.wait_for(read_outcome(reader), 60))[0]
            except TimeoutError:
                return "hung"
            finally:
                uploading.cancel()
                writer.close()

        trickling = await asyncio.gather(*(one(False) for _ in range(tunnels)))
        streaming = await asyncio.gather(*(one(True) for _ in range(tunnels)))
        await asyncio.sleep(1.0)
        left = proxy.status()["active_flows"]
    return {
        "tunnels": 2 * tunnels,
        "trickling_saw_reset": trickling.count("reset"),
        # The client's own upload may meet the reset first; its read then ends.
        "streaming_saw_reset_or_end": tunnels - streaming.count("hung"),
        "left_in_status": left,
        "ok": trickling.count("reset") == tunnels and "hung" not in streaming and left == 0,
    }


# --- plain HTTP: what one client sends, or an origin sends it, reaches no other ---------
TOKEN = b"Bearer attack-run-b-token"
PRIVATE = response(b"B-OK")


def private_or(request: Request, writes: Writes) -> Writes:
    """The origin's answer to B, else ``writes`` (A's)."""
    return [(0, PRIVATE)] if request.path == b"/private" else writes


async def plain_request(proxy: int, request: bytes) -> tuple[bytes, bytes]:
    """One request on a connection of its own: (status line, body as framed by
    Content-Length), or ("closed" or "no answer" within 10 s, b"")."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy)
    writer.write(request)
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        fields = dict(
            line.lower().split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line
        )
        body = await reader.readexactly(int(fields.get(b"content-length", b"0")))
        return head.split(b"\r\n")[0], body
    except (asyncio.IncompleteReadError, ConnectionError):
        return b"closed", b""
    except TimeoutError:
        return b"no answer", b""
    finally:
        writer.close()


async def client_b(proxy: int, origin: int) -> bool:
    status, body = await plain_request(
        proxy,
        b"GET http://127.0.0.1:%d/private HTTP/1.1\r\nHost: o\r\nAuthorization: %s\r\n\r\n"
        % (origin, TOKEN),
    )
    return (status, body) == (b"HTTP/1.1 200 OK", b"B-OK")


async def case_smuggle(tmp: Path, scale: float) -> dict[str, Any]:
    trials = max(10, int(10 * scale))
    inner = b"POST /steal HTTP/1.1\r\nHost: o\r\nContent-Length: 110\r\n\r\n"
    spellings = (b"content-length", b"Content-Length, close", b"close, Transfer-Encoding")
    refused = stolen = b_ok = 0
    async with (
        faulty_origin(lambda r: private_or(r, [(0, response(b"A"))])) as origin,
        fyntr(tmp, "--allow-port", str(origin.port)) as proxy,
    ):
        for n in range(trials):
            a = b"POST http://127.0.0.1:%d/x HTTP/1.1\r\nHost: o\r\nConnection: %s\r\n" % (
                origin.port,
                spellings[n % len(spellings)],
            )
            a += b"Content-Length: %d\r\n\r\n%s" % (len(inner), inner)
            status, _ = await plain_request(proxy.port, a)
            refused += status == b"HTTP/1.1 400 Bad Request"
            b_ok += await client_b(proxy.port, origin.port)
        stolen = sum(TOKEN in r.body for r in origin.requests)
        tracebacks = proxy.tracebacks()
    return {
        "trials": trials,
        "a_refused": refused,
        "b_token_in_another_request": stolen,
        "b_got_its_own_answer": b_ok,
        "tracebacks": tracebacks,
        "ok": refused == b_ok == trials and stolen == 0 and tracebacks == 0,
    }


POOL_FAULTS: dict[str, tuple[bytes, bytes, bytes]] = {
    **FAULTS,
    "connection_names_length": (b"GET", response(b"STOLEN", b"Connection: content-length"), b""),
}


async def case_pool(tmp: Path, scale: float) -> dict[str, Any]:
    rounds = max(3, int(3 * scale))
    plan: list[tuple[str, float]] = [(f, d) for f in POOL_FAULTS for d in (0.0, 0.3)] * rounds
    leaked: dict[str, int] = {}
    fault, delay = plan[0]

    def answer(request: Request) -> Writes:
        if fault not in FAULTS:  # a response that names its own framing in Connection
            return private_or(request, [(0, POOL_FAULTS[fault][1])])
        return private_or(request, fault_writes(fault, delay))

    async with (
        faulty_origin(answer) as origin,
        fyntr(tmp, "--allow-port", str(origin.port)) as proxy,
    ):
        for fault, delay in plan:
            method = POOL_FAULTS[fault][0]
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(
                b"%s http://127.0.0.1:%d/a HTTP/1.1\r\nHost: o\r\n\r\n"
                % (
                    method,
                    origin.port,
                )
            )
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            await asyncio.sleep(0.1 if delay == 0 else delay + 0.1)
            if not await client_b(proxy.port, origin.port):
                key = f"{fault}@{int(delay * 1000)}ms"
                leaked[key] = leaked.get(key, 0) + 1
            writer.close()
        tracebacks = proxy.tracebacks()
    return {
        "trials": len(plan),
        "b_got_another_answer": sum(leaked.values()),
        "which": leaked,
        "tracebacks": tracebacks,
        "ok": not leaked and tracebacks == 0,
    }


async def case_pipeline(tmp: Path, scale: float) -> dict[str, Any]:
    del scale
    async with (
        faulty_origin(lambda r: [(0, response(b"%d" % len(r.body)))]) as origin,
        fyntr(tmp, "--allow-port", str(origin.port)) as proxy,
    ):
        get = b"GET http://127.0.0.1:%d/p HTTP/1.1\r\nHost: o\r\nUser-Agent: %s\r\n\r\n" % (
            origin.port,
            b"u" * 60,
        )
        body = b"b" * 100_000
        post = b"POST http://127.0.0.1:%d/p HTTP/1.1\r\nHost: o\r\n" % origin.port
        post += b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        runs = {
            "700_and_a_head_begun": ([get * 700 + get[:20], get[20:]], 701),
            "5000_in_writes_of_500": (split(get * 5000, 500), 5000),
            "post_and_a_head_begun": ([post + get[:30], get[30:]], 2),
        }
        answered: dict[str, int] = {}
        for name, (writes, expected) in runs.items():
            answered[name] = await count_answers(proxy.port, writes, expected)
    return {
        **{f"{n}_answered": a for n, a in answered.items()},
        "ok": all(answered[n] == runs[n][1] for n in runs),
    }


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


async def count_answers(proxy: int, writes: list[bytes], expected: int) -> int:
    """Sends ``writes`` on one connection while reading: how many 200s came back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy)

    async def send() -> None:
        for data in writes:
            writer.write(data)
            await writer.drain()
            await asyncio.sleep(0)

    sender = asyncio.ensure_future(send())
    answered = 0
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, TimeoutError):
        while answered < expected:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            if not head.startswith(b"HTTP/1.1 200"):
                break
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            answered += 1
    sender.cancel()
    writer.close()
    return answered


async def case_soak(tmp: Path, scale: float, seconds: float) -> dict[str, Any]:
    del scale

    async def source_sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """``<down> <up>\\n``: sends ``down`` bytes, takes ``up`` bytes, answers OK."""
        down, up = (int(v) for v in (await reader.readline()).split())
        writer.write(bytes(down))
        await reader.readexactly(up)
        writer.write(b"OK")
        await writer.drain()

    async with (
        serve(source_sink) as origin,
        fyntr(tmp, "--allow-port", str(origin), "--upload-rate", "50mbit") as proxy,
    ):
        await asyncio.sleep(1.0)
        idle = proxy.rss_mib()
        peak = idle
        deadline = time.monotonic() + seconds
        rng = random.Random(7)
        done = 0

        async def worker() -> None:
            nonlocal done, peak
            while time.monotonic() < deadline:
                down, up = rng.randint(1000, 5 * 10**6), rng.randint(1000, 5 * 10**6)
                with contextlib.suppress(OSError, TimeoutError, asyncio.IncompleteReadError):
                    reader, writer = await connect(proxy.port, f"127.0.0.1:{origin}")
                    writer.write(f"{down} {up}\n".encode() + bytes(up))
                    if rng.random() < 0.1:
                        await asyncio.sleep(rng.random() * 0.2)
                        reset(writer)
                    else:
                        await asyncio.wait_for(reader.readexactly(down + 2), 120)
                        writer.close()
                    done += 1
                peak = max(peak, proxy.rss_mib())

        await asyncio.gather(*(worker() for _ in range(50)))
        await asyncio.sleep(3.0)  # gone idle: the sweep gives memory back
        after = proxy.rss_mib()
        left = proxy.status()["active_flows"]
    return {
        "seconds": seconds,
        "tunnels": done,
        "rss_idle_mib": round(idle, 1),
        "rss_peak_mib": round(peak, 1),
        "rss_after_mib": round(after, 1),
        "left_in_status": left,
        "ok": after <= RSS_BUDGET_MIB and left == 0,
    }


CASES = ("linger", "ssrf", "fuzz", "halfclose", "resets", "smuggle", "pool", "pipeline", "soak")


async def run(args: argparse.Namespace, tmp: Path) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for name in args.only.split(","):
        print(f"running {name} ...", file=sys.stderr, flush=True)
        if name == "soak":
            results[name] = await case_soak(tmp, args.scale, args.soak_s)
        else:
            results[name] = await globals()[f"case_{name}"](tmp, args.scale)
        print(f"  {name}: {json.dumps(results[name])}", file=sys.stderr, flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the counts")
    ap.add_argument("--soak-s", type=float, default=60.0, help="length of the soak")
    ap.add_argument("--only", default=",".join(CASES), help="comma list of cases")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    unknown = set(args.only.split(",")) - set(CASES)
    if unknown:
        ap.error(f"unknown cases: {', '.join(sorted(unknown))}; known: {', '.join(CASES)}")
    with tempfile.TemporaryDirectory() as tmp:
        results = asyncio.run(run(args, Path(tmp)))
    width = max(len(n) for n in results)
    for name, result in results.items():
        verdict = "ok  " if result["ok"] else "FAIL"
        figures = ", ".join(f"{k}={v}" for k, v in result.items() if k != "ok")
        print(f"{verdict} {name.ljust(width)}  {figures}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if all(r["ok"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
