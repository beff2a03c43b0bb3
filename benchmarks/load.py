"""Load generators, each run in a process of its own by ``run.py``.

Usage: ``python benchmarks/load.py WORKLOAD '{json params}'``; prints one JSON object.
``proxy`` is the proxy's port, or null for a direct connection to ``origin``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import select
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

Result = dict[str, Any]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def jain(values: list[float]) -> float:
    """Jain's fairness index: 1 when all equal, 1/n when one takes everything."""
    if not values:
        return float("nan")
    return sum(values) ** 2 / (len(values) * sum(v * v for v in values))


def jain_competing(flows: list[dict[int, int]], min_flows: int = 10) -> float:
    """Jain's index while flows compete: in each 10 ms window, over the flows active
    throughout it (first byte before it, last byte after it), of the bytes each got;
    the windows with at least ``min_flows`` such flows, weighted by their bytes. Unlike
    the completion index, staggered set-ups do not enter it: a scheduler's fairness."""
    spans = [(min(w), max(w), w) for w in flows if w]
    if not spans:
        return float("nan")
    total = weighted = 0.0
    for window in range(min(s for s, _, _ in spans) + 1, max(e for _, e, _ in spans)):
        got = [w.get(window, 0) for first, last, w in spans if first < window < last]
        if len(got) >= min_flows and sum(got):
            weighted += jain(got) * sum(got)
            total += sum(got)
    return weighted / total if total else float("nan")


def read_head(sock: socket.socket) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head:
        data = sock.recv(4096)
        if not data:
            raise ConnectionError("proxy closed during CONNECT")
        head += data
    return head


def first_hop(p: Result) -> tuple[str, int]:
    """The proxy (on ``proxy_host``, 127.0.0.1 unless given) when there is one, else the
    origin itself."""
    if p["proxy"]:
        return p.get("proxy_host", "127.0.0.1"), p["proxy"]
    return p.get("host", "127.0.0.1"), p["origin"]


def proxy_authorization(p: Result) -> bytes:
    """With ``proxy_user`` ("user:password"), Basic credentials for --auth-file."""
    if not p.get("proxy_user"):
        return b""
    return b"Proxy-Authorization: Basic %s\r\n" % base64.b64encode(p["proxy_user"].encode())


def connect_request(p: Result) -> bytes:
    target = f"{p.get('host', '127.0.0.1')}:{p['origin']}".encode()
    auth = proxy_authorization(p)
    return b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (target, target, auth)


def open_stream(p: Result, command: bytes) -> socket.socket:
    """A blocking stream to the origin, through the proxy when given, command sent."""
    sock = socket.create_connection(first_hop(p), timeout=60)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if p["proxy"]:
        sock.sendall(connect_request(p))
        head = read_head(sock)
        if b" 200 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(head.split(b"\r\n", 1)[0].decode(errors="replace"))
    sock.sendall(command)
    return sock


def _download(sock: socket.socket, size: int) -> int:
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = sock.recv_into(view)
        if not n:
            break
        got += n
    return got


def _upload(sock: socket.socket, size: int) -> int:
    block = memoryview(bytes(1 << 20))
    sent = 0
    while sent < size:
        sent += sock.send(block[: min(len(block), size - sent)])
    if sock.recv(16) != b"OK\n":
        raise ConnectionError("no OK from the sink")
    return sent


def throughput(p: Result) -> Result:
    """``streams`` tunnels at once, each moving ``size`` bytes ``direction``."""
    direction, size, streams = p["direction"], int(p["size"]), int(p["streams"])
    command = (b"SOURCE %d\n" if direction == "download" else b"SINK %d\n") % size
    socks = [open_stream(p, command) for _ in range(streams)]
    moved = [0] * streams
    barrier = threading.Barrier(streams + 1)

    def work(i: int) -> None:
        barrier.wait()
        fn = _download if direction == "download" else _upload
        moved[i] = fn(socks[i], size)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(streams)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    for s in socks:
        s.close()
    if sum(moved) != size * streams:
        raise ConnectionError(f"moved {sum(moved)} of {size * streams} bytes")
    return {"mb_s": sum(moved) / elapsed / 1e6}


def latency(p: Result) -> Result:
    """Round trips of 64 bytes on one established tunnel."""
    sock = open_stream(p, b"ECHO\n")
    payload = b"x" * 64
    samples: list[float] = []
    warmup = int(p.get("warmup", 100))
    for i in range(int(p["count"]) + warmup):
        t = time.perf_counter()
        sock.sendall(payload)
        got = 0
        while got < len(payload):
            got += len(sock.recv(4096))
        if i >= warmup:  # excluded
            samples.append((time.perf_counter() - t) * 1e6)
    sock.close()
    return {"rtt_p50_us": percentile(samples, 50), "rtt_p99_us": percentile(samples, 99)}


async def open_async(p: Result) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(*first_hop(p))
    if p["proxy"]:
        writer.write(connect_request(p))
        head = await reader.readuntil(b"\r\n\r\n")
        if b" 200 " not in head.split(b"\r\n", 1)[0]:
            writer.close()
            raise ConnectionError("CONNECT refused")
    return reader, writer


async def _setup_once(p: Result) -> None:
    _reader, writer = await open_async(p)
    writer.close()


async def _setups(p: Result) -> Result:
    deadline = time.perf_counter() + float(p["seconds"])
    samples: list[float] = []
    failures = 0

    async def client() -> None:
        nonlocal failures
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            try:
                await _setup_once(p)
            except (OSError, asyncio.IncompleteReadError):
                failures += 1
                continue
            samples.append((time.perf_counter() - t) * 1e3)

    elapsed = await concurrently(p, client)
    return tally(samples, elapsed, failures, ("setups", "setups_s", "setup", "setup_failures"))


async def concurrently(p: Result, client: Callable[[], Awaitable[None]]) -> float:
    """``concurrency`` copies of ``client`` at once; the seconds until the last ends."""
    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(int(p["concurrency"]))))
    return time.perf_counter() - start


def tally(
    samples: list[float], elapsed: float, failures: int, names: tuple[str, str, str, str]
) -> Result:
    """Count, rate, latency p50 and p99 (ms) and failures, under the workload's names."""
    count, rate, latency, failed = names
    return {
        count: len(samples),
        rate: len(samples) / elapsed,
        f"{latency}_p50_ms": percentile(samples, 50),
        f"{latency}_p99_ms": percentile(samples, 99),
        failed: failures,
    }


def http_request(p: Result, close: bool) -> bytes:
    """A plain HTTP GET: absolute-form to a proxy, origin-form direct."""
    authority = f"127.0.0.1:{p['origin']}"
    target = f"http://{authority}/" if p["proxy"] else "/"
    extra = ("Connection: close\r\n" if close else "") + proxy_authorization(p).decode()
    return f"GET {target} HTTP/1.1\r\nHost: {authority}\r\n{extra}\r\n".encode()


async def _http_response(reader: asyncio.StreamReader) -> bool:
    """Read one response; True if the connection may carry another request."""
    head = (await reader.readuntil(b"\r\n\r\n")).lower()
    if not head.startswith(b"http/1.1 200"):
        raise ConnectionError(head.split(b"\r\n", 1)[0].decode())
    length = int(head.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
    await reader.readexactly(length)
    return b"connection: close" not in head


async def _http(p: Result) -> Result:
    """``concurrency`` clients, each sending GETs one after another for ``seconds``:
    over one kept connection each (``keepalive``), or one connection per request."""
    deadline = time.perf_counter() + float(p["seconds"])
    keepalive = bool(p["keepalive"])
    samples: list[float] = []
    failures = 0

    async def client() -> None:
        nonlocal failures
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        request = http_request(p, close=not keepalive)
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            try:
                if conn is None:
                    conn = await asyncio.open_connection(*first_hop(p))
                reader, writer = conn
                writer.write(request)
                reusable = await _http_response(reader)
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                failures += 1
                if conn is not None:
                    conn[1].close()
                conn = None
                continue
            samples.append((time.perf_counter() - t) * 1e3)
            if not (keepalive and reusable):
                writer.close()
                conn = None
        if conn is not None:
            conn[1].close()

    elapsed = await concurrently(p, client)
    return tally(samples, elapsed, failures, ("requests", "req_s", "req", "http_failures"))


async def _http_idle(p: Result) -> Result:
    """``count`` keep-alive clients make one request each, then hold their connections
    until stdin closes."""
    conns = []
    for _ in range(int(p["count"])):
        reader, writer = await asyncio.open_connection(*first_hop(p))
        writer.write(http_request(p, close=False))
        await _http_response(reader)
        conns.append(writer)
    print(json.dumps({"open": len(conns)}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for writer in conns:
        writer.close()
    return {"open": len(conns)}


class _Upload:
    """One burst client: connect, CONNECT when there is a proxy, upload, await OK."""

    __slots__ = ("download", "end", "got", "payload", "phase", "sent", "sock", "start")

    def __init__(self, sock: socket.socket, download: bool, payload: memoryview) -> None:
        self.sock = sock
        self.download = download  # else it uploads
        self.payload = payload  # the request it sends, shared by the clients alike
        self.phase = "connect"
        self.got = b""
        self.sent = 0
        self.start = self.end = 0.0


def burst(p: Result) -> Result:
    """``clients`` connections at once, each uploading ``size`` bytes to the sink (or,
    with ``direction`` "download", downloading them from the source; "trickle", from
    the source one segment every 20 ms; "mixed", every other client downloading
    ``download_size`` bytes, as a ``terraform apply`` sends state up and fetches
    providers and API answers down).

    One thread drives every client with non-blocking sockets and epoll: a few system
    calls per client, so that the load generator does not stagger the tunnels itself
    (200 asyncio stream clients in one process took 12-17 ms to get going)."""
    size, clients = int(p["size"]), int(p["clients"])
    direction = p.get("direction", "upload")
    down_size = int(p.get("download_size", size))
    request = connect_request(p) if p["proxy"] else b""
    upload = memoryview(b"TSINK %d\n" % size + bytes(size))
    fetch = memoryview(
        (b"TRICKLE %d\n" if direction == "trickle" else b"SOURCE %d\n")
        % (down_size if direction == "mixed" else size)
    )

    def downloads(i: int) -> bool:
        return direction in ("download", "trickle") or (direction == "mixed" and i % 2 == 1)

    deadline = time.monotonic() + float(p.get("timeout", 120))
    ep = select.epoll()
    clients_by_fd: dict[int, _Upload] = {}
    done: list[tuple[float, float]] = []
    received: list[dict[int, int]] = []  # per flow: bytes the origin got per 10 ms
    failures = 0

    def finish(c: _Upload, ok: bool) -> None:
        nonlocal failures
        ep.unregister(c.sock)
        del clients_by_fd[c.sock.fileno()]
        c.sock.close()
        if ok:
            done.append((c.start, c.end))
        else:
            failures += 1

    def begin_upload(c: _Upload) -> None:
        c.start = time.monotonic()  # the tunnel is up: its transfer starts
        c.phase = "upload"
        ep.modify(c.sock, select.EPOLLOUT)

    def step(c: _Upload) -> None:
        if c.phase == "connect":
            if c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                finish(c, False)
            elif request:
                c.sock.send(request)  # a few dozen bytes into an empty buffer
                c.phase = "head"
                ep.modify(c.sock, select.EPOLLIN)
            else:
                begin_upload(c)
        elif c.phase == "head":
            data = c.sock.recv(4096)
            c.got += data
            if b"\r\n\r\n" in c.got:
                ok = b" 200 " in c.got.split(b"\r\n", 1)[0]
                c.got = b""
                if ok:
                    begin_upload(c)
                else:
                    finish(c, False)
            elif not data:
                finish(c, False)
        elif c.phase == "upload":
            c.sent += c.sock.send(c.payload[c.sent :])
            if c.sent == len(c.payload):
                c.phase = "ok"
                ep.modify(c.sock, select.EPOLLIN)
        elif c.download:
            n = len(c.sock.recv(1 << 16))
            c.sent += n
            expected = len(c.payload) + (down_size if direction == "mixed" else size)
            if c.sent >= expected or not n:
                c.end = time.monotonic()
                finish(c, c.sent == expected)
        else:
            data = c.sock.recv(1 << 16)
            c.got += data
            if c.got.endswith(b"\n") or not data:
                c.end = time.monotonic()
                ok = c.got.startswith(b"OK ")
                if ok:
                    received.append({int(w): n for w, n in json.loads(c.got[3:]).items()})
                finish(c, ok)

    t0 = time.monotonic()
    for i in range(clients):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.connect_ex(first_hop(p))
        down = downloads(i)
        clients_by_fd[sock.fileno()] = _Upload(sock, down, fetch if down else upload)
        ep.register(sock, select.EPOLLOUT)
    while clients_by_fd and time.monotonic() < deadline:
        for fd, _events in ep.poll(0.5):
            c = clients_by_fd[fd]
            try:
                step(c)
            except BlockingIOError:
                pass  # not ready after all: epoll says so again
            except OSError:
                finish(c, False)
    for c in list(clients_by_fd.values()):  # past the deadline
        finish(c, False)
    ep.close()
    ends = [end - t0 for _, end in done]
    rates = [size / (end - start) for start, end in done]  # each flow's own transfer
    transfer = max(end for _, end in done) - min(start for start, _ in done) if done else 0
    return {
        "burst_failures": failures,
        "burst_mb_s": len(done) * size / transfer / 1e6 if transfer else float("nan"),
        "burst_makespan_s": max(ends) if ends else float("nan"),
        "burst_p50_s": percentile(ends, 50),
        "burst_p99_s": percentile(ends, 99),
        "burst_jain": jain(rates),
        "burst_jain_competing": jain_competing(received),
        # Fair queueing lets tunnels that come up early finish early: this spread, set
        # against the makespan, bounds the Jain index a fair scheduler can reach.
        "burst_start_spread_ms": (
            (max(s for s, _ in done) - min(s for s, _ in done)) * 1e3 if done else float("nan")
        ),
        "burst_last_start_s": max((s for s, _ in done), default=t0) - t0,
        "burst_t0": t0,
        "burst_end": max((end for _, end in done), default=t0),
        # With ``windows``: per flow, the bytes the origin got per 10 ms window.
        **({"received": received} if p.get("windows") else {}),
    }


def idle(p: Result) -> Result:
    """Open ``count`` tunnels, say so, hold them until stdin closes."""
    socks = [open_stream(p, b"ECHO\n") for _ in range(int(p["count"]))]
    print(json.dumps({"open": len(socks)}), flush=True)
    sys.stdin.read()
    for s in socks:
        s.close()
    return {"open": len(socks)}


def probe(p: Result) -> Result:
    """Small request/response round trips on one tunnel until stdin closes: what a
    person's interactive traffic feels while a burst runs. Samples: (when, rtt_ms)."""
    sock = open_stream(p, b"ECHO\n")
    payload = b"p" * 64
    samples: list[tuple[float, float]] = []
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    print(json.dumps({"ready": True}), flush=True)
    while not stop.is_set():
        t = time.monotonic()
        sock.sendall(payload)
        got = 0
        while got < len(payload):
            data = sock.recv(4096)
            if not data:
                raise ConnectionError("probe tunnel closed")
            got += len(data)
        samples.append((t, (time.monotonic() - t) * 1e3))
        stop.wait(float(p.get("interval", 0.02)))
    sock.close()
    return {"samples": samples}


def _run_async(fn: Callable[[Result], Any]) -> Callable[[Result], Result]:
    def runner(p: Result) -> Result:
        try:
            import uvloop
        except ImportError:
            return asyncio.run(fn(p))  # type: ignore[no-any-return]
        return uvloop.run(fn(p))  # type: ignore[no-any-return]

    return runner


WORKLOADS: dict[str, Callable[[Result], Result]] = {
    "throughput": throughput,
    "latency": latency,
    "setups": _run_async(_setups),
    "http": _run_async(_http),
    "http_idle": _run_async(_http_idle),
    "burst": burst,
    "idle": idle,
    "probe": probe,
}

if __name__ == "__main__":
    params = json.loads(sys.argv[2])
    result = WORKLOADS[sys.argv[1]](params)
    print(json.dumps(result), flush=True)
