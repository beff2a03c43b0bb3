"""Established tunnels: two transports, two lanes, one close (docs/differences.md)."""

from __future__ import annotations

import asyncio
import logging
import math
import socket
from collections.abc import Callable
from typing import Protocol

from fyntr.limits import SPLICE_AFTER_BYTES
from fyntr.log import line
from fyntr.net.kernel.sockopt import send_rst_on_close
from fyntr.net.relay.pump import NEVER, Lane, Pump, no_bulk
from fyntr.net.relay.splice import Splicer, SpliceRelay
from fyntr.wire.ends import BOTH_CLOSED, Side, end_reason, is_reset


class Relay(Protocol):
    """What the server, the sweep, /status and the auto rate see of a relayed connection:
    a CONNECT or SOCKS5 ``Tunnel``, or a plain HTTP ``Forward`` (net/forward/session.py)."""

    flow_id: int
    started: float
    up: Lane
    down: Lane
    reason: str | None
    idle_mark: int  # the sweep's: bytes both ways when it last looked ...
    idle_since: float  # ... and since when they have not changed
    deadline: float  # clock time by which a request head under way must be complete
    # The current upstream socket, as the auto rates' samplers read it (net/watch/samplers.py).
    routed: bool  # it crosses a router: loopback ones say nothing of the uplink
    upstream_since: int  # up.nbytes when it started: the bytes before went to another
    client_key: object  # the client's address: its share (sched/drr.py) and its figures

    @property
    def target(self) -> str:
        """The host:port it relays to (a plain HTTP connection's last request's)."""

    @property
    def activity(self) -> int: ...

    @property
    def spliced(self) -> bool:
        """Relayed by the kernel (net/relay/splice.py) now."""

    def idle_limit(self, configured: float) -> float:
        """How long it may stay idle, given --idle-timeout (0 = off, for a tunnel)."""

    def abort(self, reason: str) -> None: ...

    def on_deadline(self) -> None:
        """The sweep found ``deadline`` passed."""

    def wind_down(self) -> None:
        """Shutdown: end once what is under way is done (a tunnel: when its ends say)."""

    def upstream_socket(self) -> socket.socket | None: ...


class Endpoint(asyncio.Protocol):
    """One socket of a tunnel. Reads feed ``out``; write-side flow control drives ``inp``."""

    __slots__ = ("inp", "out", "side", "tunnel")

    def __init__(self, tunnel: Tunnel, side: Side) -> None:
        self.tunnel = tunnel
        self.side = side
        self.out: Lane
        self.inp: Lane

    def data_received(self, data: bytes) -> None:
        self.out.push(data)

    def eof_received(self) -> bool:
        self.out.finish()
        return True  # keep the other direction open: half-close (docs/differences.md)

    def pause_writing(self) -> None:
        self.inp.dst_paused_writing()

    def resume_writing(self) -> None:
        self.inp.dst_resumed_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.tunnel.lost(self.side, exc)


class Tunnel:
    """A relayed CONNECT or SOCKS5 tunnel. Lives from the 200 to the last socket closing."""

    __slots__ = (
        "_on_closed",
        "client",
        "client_key",
        "client_open",
        "deadline",
        "down",
        "flow_id",
        "idle_mark",
        "idle_since",
        "reason",
        "routed",
        "splice",
        "splicer",
        "started",
        "target",
        "up",
        "upstream",
        "upstream_open",
        "upstream_since",
    )

    def __init__(
        self,
        *,
        flow_id: int,
        target: str,
        client: asyncio.Transport,
        upstream: asyncio.Transport,
        pumps: tuple[Pump, Pump],
        now: float,
        on_closed: Callable[[Tunnel], None],
        splicer: Splicer | None = None,
        routed: bool = True,
        client_key: object = None,
    ) -> None:
        """``splicer``: hand the tunnel to the kernel once it turns out to be a bulk
        transfer (net/relay/splice.py); None when a rate is set or splice() is missing.
        ``client_key``: the client it is scheduled as (its address)."""
        self.flow_id = flow_id
        self.target = target
        self.client = client
        self.upstream = upstream
        self.started = now
        self.idle_since = now  # the sweep's view of the last activity
        self.idle_mark = 0  # bytes both ways at that moment
        self.deadline = math.inf  # its bytes are opaque: no head to wait for
        self.reason: str | None = None
        self.client_open = True
        self.upstream_open = True
        self._on_closed = on_closed
        self.routed = routed
        self.upstream_since = 0  # one upstream socket for the tunnel's life
        upload, download = pumps
        # Both lanes are the client's: its share in each direction (docs/house.md).
        self.client_key = client_key
        self.up = Lane(upload, client, upstream, self._eof_sent, client_key, routed=routed)
        self.down = Lane(download, upstream, client, self._eof_sent, client_key)
        self.splicer = splicer
        self.splice: SpliceRelay | None = None
        if splicer is not None:
            self.up.splice_at = self.down.splice_at = SPLICE_AFTER_BYTES
            self.up.on_bulk = self.down.on_bulk = self._bulk

    def start(self, client_early: bytes, upstream_early: list[bytes]) -> None:
        """Hand both transports to the relay and replay bytes read during the handshake."""
        client_end = Endpoint(self, Side.CLIENT)
        client_end.out, client_end.inp = self.up, self.down
        upstream_end = Endpoint(self, Side.UPSTREAM)
        upstream_end.out, upstream_end.inp = self.down, self.up
        self.client.set_protocol(client_end)
        self.upstream.set_protocol(upstream_end)
        if client_early:
            self.up.push(client_early)  # docs/differences.md: never dropped
        for chunk in upstream_early:
            self.down.push(chunk)
        if not self.up.src_paused:
            self.client.resume_reading()
        if not self.down.src_paused:
            self.upstream.resume_reading()

    def _bulk(self) -> None:
        """A direction has carried SPLICE_AFTER_BYTES: splice the tunnel, if nothing
        waits in fyntr and neither side has finished; else look again 1 MiB later."""
        up, down = self.up, self.down
        quiet = not (
            up.pump.shaped  # a rate in force: its bytes must stay in the scheduler
            or down.pump.shaped
            or up.held()
            or down.held()
            or up.eof_sent
            or down.eof_sent
            or self.client.is_closing()
            or self.upstream.is_closing()
        )
        assert self.splicer is not None
        if quiet:
            self.splice = self.splicer.take(self.client, self.upstream, (up, down), self._spliced)
        if self.splice is not None:
            up.splice_at = down.splice_at = NEVER
        else:
            up.splice_at = up.nbytes + SPLICE_AFTER_BYTES
            down.splice_at = down.nbytes + SPLICE_AFTER_BYTES

    def _spliced(self, side: Side | None, exc: OSError | None) -> None:
        """The spliced tunnel is over, both sockets closed: both FINs passed (``side``
        None), or ``side`` failed with ``exc``."""
        if self.reason is None:
            self.reason = BOTH_CLOSED if side is None else end_reason(side, exc)
        self.client_open = self.upstream_open = False
        self._gone()

    def upstream_socket(self) -> socket.socket | None:
        """The upstream socket, wherever it is now (transport or splice); None once gone."""
        if self.splice is not None:
            return self.splice.upstream_socket
        sock: socket.socket | None = self.upstream.get_extra_info("socket")
        return sock

    @property
    def activity(self) -> int:
        return self.up.nbytes + self.down.nbytes

    @property
    def spliced(self) -> bool:
        return self.splice is not None

    def idle_limit(self, configured: float) -> float:
        return configured

    def wind_down(self) -> None:
        pass  # a tunnel's bytes have no boundaries to stop at

    def _eof_sent(self) -> bool:
        """A direction passed its FIN on, on either engine; True when that ended the
        tunnel (both directions are done)."""
        if not (self.up.eof_sent and self.down.eof_sent):
            return False
        if self.splice is not None:
            self.splice.finish()  # its sockets and pipes; the reason is BOTH_CLOSED
        else:
            self.close(BOTH_CLOSED)
        return True

    def close(self, reason: str) -> None:
        """Graceful: what is buffered is still written before the sockets close. Only
        the transports call it (both FINs passed, or a side closed): a spliced tunnel
        ends through its relay."""
        if self.reason is None:
            self.reason = reason
        self.client.close()
        self.upstream.close()

    def on_deadline(self) -> None:  # never due: ``deadline`` is infinite
        self.abort("timeout")

    def abort(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        if self.splice is not None:
            self.splice.finish()
            return
        self.up.discard()
        self.down.discard()
        self.client.abort()
        self.upstream.abort()

    def lost(self, side: Side, exc: Exception | None) -> None:
        if side is Side.CLIENT:
            self.client_open = False
        else:
            self.upstream_open = False
        if exc is not None:
            if is_reset(exc):
                # e.g. curl closing with unread TLS alerts; the other side gets a RST too
                other = self.upstream if side is Side.CLIENT else self.client
                send_rst_on_close(other.get_extra_info("socket"))
            self.abort(end_reason(side, exc))
        elif self.client_open or self.upstream_open:
            self.close(end_reason(side, None))
        if not (self.client_open or self.upstream_open):
            self._gone()

    def _gone(self) -> None:
        self.up.discard()
        self.down.discard()
        self._on_closed(self)
        # Break the reference cycles (lane -> this tunnel's method -> lane, and the
        # splice relay's), so the tunnel is freed now, by reference counting, not by a
        # cyclic GC pass.
        self.up.on_eof_sent = self.down.on_eof_sent = _closed
        self.up.on_bulk = self.down.on_bulk = no_bulk
        self.splice = None


def _closed() -> bool:
    return True


def log_tunnel_closed(tunnel: Relay, now: float) -> None:
    line(
        logging.INFO,
        "flow%d: closed target=%s up_bytes=%d down_bytes=%d duration=%.3fs reason=%s",
        tunnel.flow_id,
        tunnel.target,
        tunnel.up.nbytes,
        tunnel.down.nbytes,
        now - tunnel.started,
        tunnel.reason,
    )
