"""What one plain HTTP request or one tunnel costs fyntr, in CPU instructions or in
system calls.

    python benchmarks/instructions.py [--syscalls [--peers tinyproxy,squid]] [--against REV]
                                      [--clients N] [--requests N]
                                      [--workloads keepalive,close,tunnel]

Time on a shared 2-core machine drifts by 10-20% between runs; the instructions a
process executes, and the system calls it makes, do not. fyntr runs with its default
flags and log level (to /dev/null) under callgrind (apt-get install valgrind), or under
``strace -f -c`` with ``--syscalls`` (apt-get install strace), against
benchmarks/origin.py; clients on threads send N requests (or open N tunnels) twice,
once N/5, and the difference over the difference in count is the cost of one, start-up
and shutdown cancelled out. ``--syscalls`` also lists where the calls go, and with
``--peers`` counts tinyproxy's and squid's on the tunnel workload the same way.

Workloads: ``keepalive`` (one GET per exchange on kept connections), ``close`` (a
connection per GET, ``Connection: close``), ``tunnel`` (CONNECT, 2 bytes echoed, close).
``--against REV`` measures an earlier commit too (a git worktree, removed after).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from run import (
    REPO,
    Contender,
    add_worktree,
    free_port,
    fyntr_command,
    origin_server,
    remove_worktree,
    wait_port,
)

Client = Callable[[int, int, int], None]


def keepalive(proxy: int, origin: int, n: int) -> None:
    request = f"GET http://127.0.0.1:{origin}/ HTTP/1.1\r\nHost: 127.0.0.1:{origin}\r\n\r\n"
    with socket.create_connection(("127.0.0.1", proxy)) as s:
        buf = b""
        for _ in range(n):
            s.sendall(request.encode())
            while (end := buf.find(b"\r\n\r\n")) < 0 or len(buf) < end + 4 + _length(buf):
                data = s.recv(65536)
                if not data:
                    raise ConnectionError("the proxy closed a kept connection")
                buf += data
            buf = buf[buf.find(b"\r\n\r\n") + 4 + _length(buf) :]


def _length(buf: bytes) -> int:
    head = buf[: buf.find(b"\r\n\r\n")].lower()
    return int(head.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])


def close(proxy: int, origin: int, n: int) -> None:
    request = (
        f"GET http://127.0.0.1:{origin}/ HTTP/1.1\r\nHost: 127.0.0.1:{origin}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    for _ in range(n):
        with socket.create_connection(("127.0.0.1", proxy)) as s:
            s.sendall(request)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            if not data.startswith(b"HTTP/1.1 200"):
                raise ConnectionError(data[:80].decode(errors="replace"))


def tunnel(proxy: int, origin: int, n: int) -> None:
    request = f"CONNECT 127.0.0.1:{origin} HTTP/1.1\r\nHost: 127.0.0.1:{origin}\r\n\r\n"
    for _ in range(n):
        with socket.create_connection(("127.0.0.1", proxy)) as s:
            s.sendall(request.encode())
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                head += s.recv(1)
            if head[:9] not in (b"HTTP/1.1 ", b"HTTP/1.0 ") or head[9:12] != b"200":
                raise ConnectionError(head.decode(errors="replace"))
            s.sendall(b"ECHO\nhi")
            got = b""
            while len(got) < 2:
                got += s.recv(2 - len(got))


WORKLOADS: dict[str, Client] = {"keepalive": keepalive, "close": close, "tunnel": tunnel}


Command = Callable[[int, Path], list[str]]  # (port, a scratch directory) -> the proxy's argv


def run_under(
    tool: str,
    command_for: Command,
    src: Path,
    client: Client,
    *,
    origin: int,
    clients: int,
    each: int,
) -> dict[str, int]:
    """What a proxy (fyntr from ``src``, or a peer) costs from start to exit while
    ``clients`` threads each run ``client`` ``each`` times: {"total": instructions} under
    callgrind, or the calls of each system call and their "total" under ``strace -f -c``."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        out, log = Path(tmp) / "tool.out", Path(tmp) / "tool.log"
        command = command_for(port, Path(tmp))
        wrapper = (
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
            if tool == "callgrind"
            else ["strace", "-f", "-c", "-o", str(out)]
        )
        with log.open("w") as err:
            proc = subprocess.Popen(
                [*wrapper, *command],
                env={**os.environ, "PYTHONPATH": str(src)},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL if tool == "strace" else err,
            )
            try:
                wait_port(port, proc, timeout=120)
                workers = [
                    threading.Thread(target=client, args=(port, origin, each))
                    for _ in range(clients)
                ]
                for w in workers:
                    w.start()
                for w in workers:
                    w.join()
            finally:
                _stop(proc, tool)
        if tool == "strace":
            return _strace_counts(out.read_text())
        found = re.search(r"Collected : (\d+)", log.read_text())
        if found is None:
            raise RuntimeError(f"no callgrind total in {log.read_text()[-400:]}")
        return {"total": int(found.group(1))}


def _stop(proc: subprocess.Popen[bytes], tool: str) -> None:
    """SIGTERM to fyntr itself: strace's child, when strace runs it (strace holds the
    signal while it traces); it then writes its table and exits with it."""
    pid = proc.pid
    if tool == "strace":
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pid = int(children[0]) if children else pid
    os.kill(pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:  # tinyproxy waits out its idle tunnels: not counted
        os.kill(pid, signal.SIGKILL)
        proc.wait(300)


def _strace_counts(summary: str) -> dict[str, int]:
    """``strace -c``'s table: % time, seconds, usecs/call, calls, [errors,] syscall."""
    counts: dict[str, int] = {}
    for line in summary.splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[0].replace(".", "").isdigit():
            counts[fields[-1]] = int(fields[3])
    return counts


def per_one(
    tool: str,
    command_for: Command,
    src: Path,
    client: Client,
    *,
    origin: int,
    clients: int,
    requests: int,
) -> dict[str, float]:
    """Each count's cost of one more request (or tunnel): start-up and exit cancel out."""
    few, many = requests // 5 // clients, requests // clients
    low = run_under(tool, command_for, src, client, origin=origin, clients=clients, each=few)
    high = run_under(tool, command_for, src, client, origin=origin, clients=clients, each=many)
    return {k: (high[k] - low.get(k, 0)) / ((many - few) * clients) for k in high}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--against", metavar="REV", help="an earlier commit to measure too")
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=3200)
    ap.add_argument(
        "--syscalls", action="store_true", help="count system calls (strace -c), not instructions"
    )
    ap.add_argument(
        "--peers",
        default="",
        help="with --syscalls: tinyproxy,squid too, on the tunnel workload (their plain HTTP "
        "differs)",
    )
    args = ap.parse_args(argv)
    tool = "strace" if args.syscalls else "callgrind"
    exe = "strace" if args.syscalls else "valgrind"
    if subprocess.run(["which", exe], capture_output=True, check=False).returncode:
        ap.error(f"{exe} is not installed (apt-get install {exe})")
    peers = [p for p in args.peers.split(",") if p]
    if peers and not args.syscalls:
        ap.error("--peers counts system calls: add --syscalls")
    trees = {"fyntr": REPO / "src"}
    with tempfile.TemporaryDirectory() as tmp, origin_server() as (origin, _pid):
        tree = Path(tmp) / "earlier"
        if args.against:
            failed = add_worktree(args.against, tree)
            if failed is not None:
                ap.error(failed)
            trees[f"fyntr@{args.against}"] = tree / "src"
        runs: dict[str, tuple[Command, Path]] = {
            name: (lambda port, _dir: fyntr_command(port, "127.0.0.0/8", origin), src)
            for name, src in trees.items()
        }
        for peer in peers:
            if subprocess.run(["which", peer], capture_output=True, check=False).returncode:
                ap.error(f"{peer} is not installed (apt-get install {peer})")
            runs[peer] = (_peer_command(peer, origin), REPO / "src")
        try:
            for workload in args.workloads.split(","):
                for name, (command_for, src) in runs.items():
                    if name in peers and workload != "tunnel":
                        continue
                    cost = per_one(
                        tool,
                        command_for,
                        src,
                        WORKLOADS[workload],
                        origin=origin,
                        clients=args.clients,
                        requests=args.requests,
                    )
                    unit = "system calls" if args.syscalls else "instructions"
                    print(f"{workload:10s} {name:24s} {cost['total']:12,.1f} {unit} each")
                    if args.syscalls:  # where they go
                        top = sorted(
                            ((v, k) for k, v in cost.items() if k != "total"), reverse=True
                        )
                        print("    " + ", ".join(f"{k} {v:.1f}" for v, k in top[:10]))
        finally:
            if args.against:
                remove_worktree(tree)
    return 0


def _peer_command(name: str, origin: int) -> Command:
    """tinyproxy or squid as benchmarks/run.py runs them, allowed to reach the origin."""

    def command(port: int, scratch: Path) -> list[str]:
        return Contender(name, origin, scratch, 0).command(port)

    return command


if __name__ == "__main__":
    sys.exit(main())
