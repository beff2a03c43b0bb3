"""A delay line between two TUN devices: the round-trip time of a real uplink, which
this kernel's missing ``netem`` cannot add.

    python benchmarks/delayline.py NAME_A NAME_B --rtt-ms 30 [--jitter-ms 15] [--seed 1]

Started inside a network namespace, it creates the TUN devices ``NAME_A`` and ``NAME_B``
there (layer 3, no packet information header), says ``ready`` on stdout, and from then
on forwards every packet read from one to the other, each held for half the round trip
plus, with ``--jitter-ms``, a uniform random extra of up to twice the jitter around it
(so the mean is the base). Release times never go backwards within a direction, so no
packet overtakes another (TCP takes reordering for loss). The caller moves ``NAME_B``
into the other namespace and gives both their addresses; the descriptors stay valid.

The queue inside is unbounded: whatever ``tc`` qdisc sits on either device's egress stays
the only bottleneck (benchmarks/router.py puts the uplink's and the downlink's token
buckets there). Ends on SIGTERM (a device that is down or moving between namespaces
meanwhile only pauses it). Linux only, needs CAP_NET_ADMIN. A benchmark tool, not part
of fyntr.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import fcntl
import os
import random
import select
import signal
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
MTU_READ = 65536  # one packet per read; more than any MTU here


def open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


class Direction:
    """Packets read from ``src``, written to ``dst`` once due, in arrival order."""

    def __init__(self, src: int, dst: int, one_way_s: float, jitter_s: float, rng: random.Random):
        self.src, self.dst = src, dst
        self.one_way_s = one_way_s
        self.jitter_s = jitter_s
        self.rng = rng
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self.last_due = 0.0

    def read(self, now: float) -> None:
        while True:
            try:
                packet = os.read(self.src, MTU_READ)
            except BlockingIOError:
                return
            except OSError:  # the device is down, or between namespaces: nothing to read
                time.sleep(0.01)
                return
            hold = self.one_way_s
            if self.jitter_s:
                hold = max(0.0, hold + self.rng.uniform(-self.jitter_s, self.jitter_s))
            self.last_due = max(now + hold, self.last_due)  # never overtakes
            self.queue.append((self.last_due, packet))

    def release(self, now: float) -> float | None:
        """Writes what is due; returns when the next packet is, or None."""
        queue = self.queue
        while queue and queue[0][0] <= now:
            _due, packet = queue.popleft()
            # A full device queue drops the packet, as a full link does; so does a
            # device that is down (EIO) or between namespaces.
            with contextlib.suppress(OSError):
                os.write(self.dst, packet)
        return queue[0][0] if queue else None


def serve(a: int, b: int, rtt_s: float, jitter_s: float, seed: int) -> None:
    rng = random.Random(seed)
    # Jitter is given for the round trip: each direction gets its half.
    ways = (
        Direction(a, b, rtt_s / 2, jitter_s / 2, rng),
        Direction(b, a, rtt_s / 2, jitter_s / 2, rng),
    )
    poller = select.epoll()
    poller.register(a, select.EPOLLIN)
    poller.register(b, select.EPOLLIN)
    by_fd = {a: ways[0], b: ways[1]}
    timeout = -1.0
    while True:
        events = poller.poll(timeout)
        now = time.monotonic()
        for fd, _mask in events:
            by_fd[fd].read(now)
        due = [d for d in (way.release(now) for way in ways) if d is not None]
        timeout = max(0.0, min(due) - time.monotonic()) if due else -1.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("name_a")
    ap.add_argument("name_b")
    ap.add_argument("--rtt-ms", type=float, required=True, help="round trip added, ms")
    ap.add_argument("--jitter-ms", type=float, default=0.0, help="round-trip jitter, +- ms")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    a, b = open_tun(args.name_a), open_tun(args.name_b)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("ready", flush=True)
    serve(a, b, args.rtt_ms / 1000, args.jitter_ms / 1000, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
