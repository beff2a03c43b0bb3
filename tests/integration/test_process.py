"""The real ``fyntr`` command in a subprocess: start-up errors, signals, accept errors."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import signal
import socket
import subprocess
import sys
import time

from tests.support.net import OK, Process, connect_via, echo, fyntr_process, origin, run_fyntr


def loopback_args(port: int) -> list[str]:
    return ["--port", "0", "--allow-cidr", "127.0.0.0/8", "--allow-port", str(port)]


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


async def test_sigterm_drains_a_live_tunnel_then_exits_0() -> None:
    async with origin(echo) as o:
        with fyntr_process(*loopback_args(o.port), "--shutdown-grace", "30") as proc:
            await sigterm_drain(proc, o.port)


async def sigterm_drain(proc: Process, origin_port: int) -> None:
    if True:
        port = proc.ports[0]
        reader, writer, head = await connect_via(port, f"127.0.0.1:{origin_port}")
        assert head == OK
        proc.stop(signal.SIGTERM)
        await proc.line_with("SIGTERM: stopped accepting")
        assert refused(port)  # stopped accepting
        writer.write(b"still here")  # ... but the tunnel carries on
        assert await asyncio.wait_for(reader.readexactly(10), 5) == b"still here"
        assert proc.proc.poll() is None
        writer.close()
        assert await asyncio.to_thread(proc.finish) == 0
        assert "SIGTERM: stopped accepting; draining 1 tunnels" in proc.output
        assert "reason=closed" in proc.output


async def test_no_log_line_is_lost_to_a_sigterm_under_load() -> None:
    """Lines go out once per turn of the loop (fyntr.log): a SIGTERM while tunnels open
    and close must still leave every tunnel's accepted, connected and closed line."""
    tunnels = 200

    async def one(port: int, target: str) -> None:
        reader, writer, head = await connect_via(port, target)
        assert head == OK
        writer.write(b"ab")
        assert await reader.readexactly(2) == b"ab"
        writer.close()

    async with origin(echo) as o:
        with fyntr_process(*loopback_args(o.port), "--shutdown-grace", "30") as proc:
            proc.drain()
            target = f"127.0.0.1:{o.port}"
            first = [one(proc.ports[0], target) for _ in range(tunnels // 2)]
            await asyncio.gather(*first)
            going = [asyncio.create_task(one(proc.ports[0], target)) for _ in range(tunnels // 2)]
            await asyncio.sleep(0)
            proc.stop(signal.SIGTERM)  # while the second half opens and closes
            done = await asyncio.gather(*going, return_exceptions=True)
            assert await asyncio.to_thread(proc.finish) == 0
    served = tunnels // 2 + sum(1 for d in done if d is None)
    out = proc.output
    assert out.count(" connected to ") == out.count(" closed target=") == served
    assert out.count(" connection from 127.0.0.1") >= served


async def test_grace_expiry_closes_tunnels() -> None:
    async with origin(echo) as o:
        with fyntr_process(*loopback_args(o.port), "--shutdown-grace", "0.3") as proc:
            reader, writer, head = await connect_via(proc.ports[0], f"127.0.0.1:{o.port}")
            assert head == OK
            started = time.monotonic()
            proc.stop(signal.SIGINT)
            assert await asyncio.wait_for(reader.read(), 10) == b""
            assert await asyncio.to_thread(proc.finish) == 0
            assert time.monotonic() - started < 5
            assert "reason=shutdown" in proc.output
            writer.close()


async def test_second_signal_exits_at_once() -> None:
    async with origin(echo) as o:
        with fyntr_process(*loopback_args(o.port), "--shutdown-grace", "600") as proc:
            _reader, writer, head = await connect_via(proc.ports[0], f"127.0.0.1:{o.port}")
            assert head == OK
            proc.stop(signal.SIGTERM)
            await proc.line_with("SIGTERM: stopped accepting")
            assert proc.proc.poll() is None
            proc.stop(signal.SIGINT)
            assert await asyncio.to_thread(proc.finish) == 128 + signal.SIGINT
            writer.close()


def test_port_in_use_is_one_line_exit_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = run_fyntr("--port", str(taken.getsockname()[1]))
    assert result.returncode == 1
    assert result.stderr.count("fyntr: error: ") == 1
    assert "Address already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_fatal_configuration_errors_exit_1() -> None:
    for args, words in [
        (["--deny-cidr", "10.0.0.0/33"], "invalid CIDR '10.0.0.0/33'"),
        (["--allow-cidr", "nonsense"], "invalid CIDR 'nonsense'"),
        (["--threat-action", "block"], "--threat-feed-file"),
        (["--threat-feed-file", "/nonexistent/feed.txt"], "/nonexistent/feed.txt"),
        (["--bind", "localhost:9999"], "must not include a port"),
        (["--bind", "local_host"], "may only contain"),
    ]:
        result = run_fyntr("--port", "0", *args)
        assert result.returncode == 1, (args, result.stderr)
        assert words in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr


def test_bad_flag_value_exit_2() -> None:
    result = run_fyntr("--port", "abc")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "--port" in result.stderr and "abc" in result.stderr


def test_non_loopback_bind_is_warned_about() -> None:
    with fyntr_process("--bind", "0.0.0.0", "--port", "0") as proc:
        proc.stop()
        assert proc.finish() == 0
        assert "non-loopback" in proc.output and "no authentication" in proc.output


async def test_accept_errors_are_retried_not_fatal() -> None:
    """With a tiny RLIMIT_NOFILE, accept() fails with EMFILE; fyntr logs, waits, and serves
    again once descriptors are free."""

    def small_fd_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48))

    async with origin(echo) as o:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fyntr", *loopback_args(o.port), "--max-connections", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            bufsize=0,  # no read-ahead: communicate() below reads the descriptor itself
            preexec_fn=small_fd_limit,  # noqa: PLW1509
        )
        assert proc.stdout is not None
        line = ""
        while "Starting Fyntr on" not in line:
            line = (await asyncio.to_thread(proc.stdout.readline)).decode()
            assert line, "fyntr did not start"
        port = int(line.rsplit(":", 1)[1])
        clients = []
        for _ in range(80):
            s = socket.socket()
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect(("127.0.0.1", port))
            clients.append(s)
        await asyncio.sleep(1.0)
        for s in clients:
            s.close()
        await asyncio.sleep(1.0)
        assert proc.poll() is None, "accept errors must not stop the server"
        reader, writer, head = await connect_via(port, f"127.0.0.1:{o.port}")
        assert head == OK
        writer.write(b"alive")
        assert await asyncio.wait_for(reader.readexactly(5), 5) == b"alive"
        writer.close()
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.to_thread(proc.communicate, timeout=10)
        assert "accept failed: [Errno 24]" in out.decode()
