"""What one plain HTTP request or one tunnel costs fyntr, in CPU instructions.

    python benchmarks/instructions.py [--against REV] [--clients N] [--requests N]

Time on a shared 2-core machine drifts by 10-20% between runs; the instructions a
process executes do not. fyntr runs under callgrind (apt-get install valgrind), its
default flags at --log-level error, against benchmarks/origin.py; clients on threads
send N requests (or open N tunnels) twice, once N/5, and the difference over the
difference in count is the cost of one, start-up and shutdown cancelled out. The kernel's
share (system calls) is not counted: `strace -c -f -p PID` gives that.

Workloads: ``keepalive`` (one GET per exchange on kept connections), ``close`` (a
connection per GET, ``Connection: close``), ``tunnel`` (CONNECT, 2 bytes echoed, close).
``--against REV`` measures an earlier commit too (a git worktree, removed after).
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from run import (
    REPO,
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
            if not head.startswith(b"HTTP/1.1 200"):
                raise ConnectionError(head.decode(errors="replace"))
            s.sendall(b"ECHO\nhi")
            got = b""
            while len(got) < 2:
                got += s.recv(2 - len(got))


WORKLOADS: dict[str, Client] = {"keepalive": keepalive, "close": close, "tunnel": tunnel}


def instructions(src: Path, origin: int, client: Client, clients: int, each: int) -> int:
    """Instructions fyntr (from ``src``) executes from start to exit while ``clients``
    threads each run ``client`` ``each`` times."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        out, log = Path(tmp) / "callgrind.out", Path(tmp) / "valgrind.log"
        command = fyntr_command(port, "127.0.0.0/8", origin, "--log-level", "error")
        with log.open("w") as err:
            proc = subprocess.Popen(
                ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *command],
                env={**os.environ, "PYTHONPATH": str(src)},
                stdout=subprocess.DEVNULL,
                stderr=err,
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
                proc.terminate()
                proc.wait(300)
        found = re.search(r"Collected : (\d+)", log.read_text())
        if found is None:
            raise RuntimeError(f"no callgrind total in {log.read_text()[-400:]}")
        return int(found.group(1))


def per_one(src: Path, origin: int, client: Client, clients: int, requests: int) -> float:
    few, many = requests // 5 // clients, requests // clients
    low = instructions(src, origin, client, clients, few)
    high = instructions(src, origin, client, clients, many)
    return (high - low) / ((many - few) * clients)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--against", metavar="REV", help="an earlier commit to measure too")
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=3200)
    args = ap.parse_args(argv)
    if subprocess.run(["which", "valgrind"], capture_output=True, check=False).returncode:
        ap.error("valgrind is not installed (apt-get install valgrind)")
    trees = {"fyntr": REPO / "src"}
    with tempfile.TemporaryDirectory() as tmp, origin_server() as (origin, _pid):
        tree = Path(tmp) / "earlier"
        if args.against:
            failed = add_worktree(args.against, tree)
            if failed is not None:
                ap.error(failed)
            trees[f"fyntr@{args.against}"] = tree / "src"
        try:
            for workload in args.workloads.split(","):
                for name, src in trees.items():
                    cost = per_one(src, origin, WORKLOADS[workload], args.clients, args.requests)
                    print(f"{workload:10s} {name:24s} {cost:12,.0f} instructions each")
        finally:
            if args.against:
                remove_worktree(tree)
    return 0


if __name__ == "__main__":
    sys.exit(main())
