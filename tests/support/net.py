"""Real servers and clients on 127.0.0.1 for the integration tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import trustme

from fyntr.config import Settings, Timeouts
from fyntr.errors import STATUS_LINES, Status
from fyntr.net.out.dialer import Dialer
from fyntr.net.out.names import system_resolve
from fyntr.net.server import Server

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

OK = STATUS_LINES[Status.OK]  # a CONNECT's 200, as fyntr writes it
# fyntr as a machine without uvloop runs it: on asyncio's own loop.
WITHOUT_UVLOOP = (
    "import sys; sys.modules['uvloop'] = None; sys.argv[0] = 'fyntr'; "
    "from fyntr.cli import main; sys.exit(main())"
)


@dataclass
class Origin:
    """A TCP server the tests own; counts the connections it sees."""

    port: int = 0
    connections: int = 0
    peers: list[tuple[str, int]] = field(default_factory=list)
    server: asyncio.Server | None = None


@contextlib.asynccontextmanager
async def origin(
    handler: Handler, *, ssl_ctx: ssl.SSLContext | None = None
) -> AsyncIterator[Origin]:
    state = Origin()

    async def wrapped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        state.peers.append(writer.get_extra_info("peername")[:2])
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(wrapped, "127.0.0.1", 0, ssl=ssl_ctx)
    state.server = server
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(1 << 16):
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()


async def hello_https(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    body = b"hello through fyntr\n"
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    await writer.drain()


@dataclass(frozen=True)
class Tls:
    server_ctx: ssl.SSLContext
    ca_file: Path


def make_tls(tmp_path: Path) -> Tls:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return Tls(ctx, ca_file)


async def curl(*args: str, https_proxy: str | None = None) -> bytes:
    """A real curl (installed by the test command); its output, after a zero exit."""
    exe = shutil.which("curl")
    assert exe is not None, "curl is installed by the test command"
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    if https_proxy is not None:
        env["HTTPS_PROXY"] = https_proxy
    proc = await asyncio.create_subprocess_exec(
        exe,
        "-sS",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, (args, err)
    return out


FAST = Timeouts(dial_backoff_s=0.01)


def loopback_settings(*ports: int, **kwargs: Any) -> Settings:
    """Settings that reach the tests' own loopback servers: ephemeral port, allow-lists."""
    base = Settings(
        port=0,
        allow_cidrs=("127.0.0.0/8",),
        allow_ports=tuple(ports),
        timeouts=FAST,
    )
    return replace(base, **kwargs)


async def local_names_only(name: str, port: int) -> list[Any]:
    """The system resolver for ``localhost`` (answered from /etc/hosts); any other name
    fails as NXDOMAIN would, so that no test sends a DNS query off this machine."""
    if name.rstrip(".") == "localhost":
        return await system_resolve(name, port)
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


@contextlib.asynccontextmanager
async def proxy(settings: Settings, **kwargs: Any) -> AsyncIterator[Server]:
    kwargs.setdefault(
        "dialer",
        Dialer(
            settings.timeouts,
            resolver=local_names_only,
            happy_eyeballs_delay=settings.happy_eyeballs_delay_s,
        ),
    )
    server = Server(settings, **kwargs)
    await server.start()
    try:
        yield server
    finally:
        server.close()
        await asyncio.sleep(0)


def http_port(server: Server) -> int:
    return server.addresses[0][1]


async def connect_via(
    proxy_port: int, target: str, *, early: bytes = b""
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """CONNECT through the proxy; returns the stream and the status line bytes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
    writer.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode() + early)
    head = await reader.readuntil(b"\r\n\r\n")
    return reader, writer, head


async def exchange(port: int, request: bytes, *, eof: bool = False) -> bytes:
    """Send raw bytes to ``port``; everything read until the peer closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    if eof:
        writer.write_eof()
    try:
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


class FakeClock:
    """Virtual time for deadlines and the idle sweep: the test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def cross_deadline(server: Server, clock: FakeClock, seconds: float, waiting: int) -> None:
    """Sweep just before ``seconds`` have passed (``waiting`` handshakes still there), then
    just after."""
    await asyncio.sleep(0.05)  # let the last bytes sent reach the server
    clock.advance(seconds - 0.1)
    server.sweep()
    assert len(server.handshakes) == waiting
    clock.advance(0.2)
    server.sweep()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


# --- the real command in a subprocess -----------------------------------------------------
_STARTING = re.compile(r"Starting Fyntr on (\S+):(\d+)")


@dataclass
class Process:
    proc: subprocess.Popen[bytes]
    ports: list[int]
    lines: list[str]
    reader: threading.Thread | None = None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def drain(self) -> None:
        """Keep reading its output from now on: a test that makes fyntr log more than a
        pipe holds (64 KiB) must not block it on a write to stderr."""
        assert self.proc.stdout is not None
        stdout = self.proc.stdout

        def read() -> None:
            while data := stdout.read(65536):
                self.lines.append(data.decode(errors="replace"))

        self.reader = threading.Thread(target=read, name="fyntr-output", daemon=True)
        self.reader.start()

    def finish(self, timeout: float = 10) -> int:
        """Wait for the exit, collect the rest of the output, close the pipe."""
        if self.reader is not None:
            self.proc.wait(timeout)
            self.reader.join(timeout)
            assert self.proc.stdout is not None
            self.proc.stdout.close()
            return self.proc.returncode
        out, _ = self.proc.communicate(timeout=timeout)
        self.lines.append(out.decode())
        return self.proc.returncode

    @property
    def output(self) -> str:
        return "".join(self.lines)

    async def line_with(self, text: str, timeout: float = 10) -> str:
        """The next line of output that contains ``text`` (the lines before it kept):
        a test waits for what the process says it did, not for a sleep."""
        assert self.proc.stdout is not None
        stdout = self.proc.stdout
        async with asyncio.timeout(timeout):
            while True:
                line = (await asyncio.to_thread(stdout.readline)).decode()
                assert line, f"fyntr exited before saying {text!r}: {self.output}"
                self.lines.append(line)
                if text in line:
                    return line


def fyntr_argv(*args: str) -> list[str]:
    """``python -m fyntr`` with ``args``, on the loop of the test pass: uvloop, or
    asyncio's own in the pass on the fallback loop."""
    if os.environ.get("FYNTR_TEST_LOOP") == "asyncio":
        return [sys.executable, "-c", WITHOUT_UVLOOP, *args]
    return [sys.executable, "-m", "fyntr", *args]


@contextlib.contextmanager
def fyntr_process(
    *args: str, env: dict[str, str] | None = None, listeners: int = 1, nofile: int | None = None
) -> Iterator[Process]:
    proc = start_fyntr(*args, env=env, listeners=listeners, nofile=nofile)
    try:
        yield proc
    finally:
        if proc.proc.poll() is None:
            proc.proc.kill()
        if proc.proc.stdout is not None and not proc.proc.stdout.closed:
            proc.finish()


def start_fyntr(
    *args: str, env: dict[str, str] | None = None, listeners: int = 1, nofile: int | None = None
) -> Process:
    """``python -m fyntr`` with ``args``; waits for its "Starting Fyntr on" lines.
    ``nofile``: its soft and hard FD limit, set by the shell that starts it."""
    command = fyntr_argv(*args)
    if nofile is not None:
        command = ["sh", "-c", f'ulimit -n {nofile} && exec "$@"', "sh", *command]

    full_env = {k: v for k, v in os.environ.items() if not k.startswith("FYNTR_")}
    full_env.update(env or {})
    # Unbuffered: a buffered reader's read-ahead would hide lines from communicate(),
    # which reads the descriptor itself.
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        bufsize=0,
        env=full_env,
    )
    ports: list[int] = []
    lines: list[str] = []
    assert proc.stdout is not None
    while len(ports) < listeners:
        line = proc.stdout.readline().decode()
        if not line:
            proc.wait(10)
            raise AssertionError(f"fyntr exited {proc.returncode}: {''.join(lines)}")
        lines.append(line)
        if m := _STARTING.search(line):
            ports.append(int(m.group(2)))
    return Process(proc, ports, lines)


def run_fyntr(
    *args: str, env: dict[str, str] | None = None, timeout: float = 20
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("FYNTR_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "fyntr", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        check=False,
    )
