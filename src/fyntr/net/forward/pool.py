"""Upstream connections of plain HTTP: one ``Origin`` per connection, serving one
session's exchange at a time, and the ``OriginPool`` of idle ones. What keeps one
client's bytes from reaching another through a kept connection is written up in
docs/plain-http.md."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from fyntr.errors import HandshakeError
from fyntr.limits import POOL_IDLE_S, POOL_MAX, POOL_PER_ORIGIN
from fyntr.net.kernel.sockopt import unread_probe
from fyntr.net.out.dialer import Dialed
from fyntr.net.relay.pump import Lane
from fyntr.wire.http_forward import MessageReader
from fyntr.wire.target import IPAddress


class Session(Protocol):
    """What an origin connection tells the session it serves (net/forward/session.py)."""

    up: Lane  # the request's lane: the origin's write side drives its flow control

    def head_sent(self) -> bool: ...
    def origin_events(self) -> None: ...
    def origin_eof(self) -> None: ...
    def origin_failed(self, detail: str) -> None: ...
    def origin_lost(self, origin: Origin, exc: Exception | None) -> None: ...


class Origin(asyncio.Protocol):
    """One upstream connection. Serves one session's exchange at a time, or waits in
    the pool (reading, so that the origin's close is seen at once)."""

    __slots__ = (
        "address",
        "checking",
        "cleared",
        "idle_since",
        "key",
        "lost",
        "on_idle_lost",
        "reader",
        "routed",
        "served",
        "session",
        "transport",
        "unread",
        "via",
    )

    def __init__(self, key: str, dialed: Dialed) -> None:
        self.key = key  # host:port as the requests name it
        self.address: IPAddress = dialed.address
        self.routed = dialed.routed
        self.via = dialed.via  # the parent proxy it goes through, if any
        self.served = 0  # exchanges begun on it
        self.cleared: object = None  # the threat index it was last checked under
        self.checking = False  # kept, and the request's head has not all left fyntr yet
        self.reader = MessageReader(response=True)
        self.session: Session | None = None
        self.idle_since = 0.0
        self.on_idle_lost: Callable[[Origin], None] = _ignore
        self.transport = dialed.transport
        self.unread = unread_probe(self.transport.get_extra_info("socket"))
        self.lost = dialed.protocol.lost
        self.transport.set_protocol(self)
        for data in dialed.protocol.early:  # an origin that talks first is out of step
            self.data_received(data)

    @property
    def usable(self) -> bool:
        """Open, and nothing received beyond its last response (not a byte of another
        message, nor a body after a bodyless one) as far as fyntr has read."""
        return not self.lost and self.reader.at_rest and not self.transport.is_closing()

    def data_received(self, data: bytes) -> None:
        session = self.session
        if session is None:  # idle: an origin that talks unasked is out of step
            self.transport.abort()
            return
        if self.checking:
            # The origin cannot answer a request whose head it has not received: these
            # bytes were meant for the connection's previous client.
            if not session.head_sent():
                session.origin_failed("the kept connection sent bytes before the request")
                return
            self.checking = False
        try:
            self.reader.feed(data)
        except HandshakeError as err:
            session.origin_failed(f"invalid response from the origin: {err.detail}")
            return
        session.origin_events()

    def eof_received(self) -> bool:
        if self.session is not None:
            self.session.origin_eof()
        return False

    def pause_writing(self) -> None:
        if self.session is not None:
            self.session.up.dst_paused_writing()

    def resume_writing(self) -> None:
        if self.session is not None:
            self.session.up.dst_resumed_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.session is not None:
            self.session.origin_lost(self, exc)
        else:
            self.on_idle_lost(self)


def _ignore(_origin: Origin) -> None:
    pass


class OriginPool:
    """Idle upstream connections by host and port: bounded per origin and in all,
    closed after POOL_IDLE_S. The most recently used is taken first (warmest).

    ``capacity`` is what the descriptor budget leaves beyond the cap's own sockets
    (net/front/listen.py): an idle connection must never take a descriptor a tunnel below
    the cap needs. A connection is handed out only with nothing received since its last
    response, in fyntr or in the kernel (docs/plain-http.md)."""

    def __init__(self, capacity: int = POOL_MAX) -> None:
        self.capacity = capacity
        self._idle: dict[Origin, None] = {}  # oldest first
        self._by_key: dict[str, dict[Origin, None]] = {}  # the same, by host and port

    def __len__(self) -> int:
        return len(self._idle)

    def put(self, origin: Origin, now: float) -> None:
        origin.session = None
        origin.checking = False
        if not origin.usable or self.capacity <= 0:
            origin.transport.close()
            return
        origin.idle_since = now
        origin.on_idle_lost = self._forget
        same = self._by_key.get(origin.key)
        if same is not None and len(same) >= POOL_PER_ORIGIN:
            self._drop(next(iter(same)))
        if len(self._idle) >= self.capacity:
            self._drop(next(iter(self._idle)))
        self._idle[origin] = self._by_key.setdefault(origin.key, {})[origin] = None
        origin.transport.resume_reading()

    def take(self, key: str) -> Origin | None:
        same = self._by_key.get(key)
        while same:
            origin = next(reversed(same))
            self._forget(origin)
            if origin.usable and not origin.unread(0):  # nor in the kernel
                return origin
            origin.transport.abort()
        return None

    def expire(self, now: float) -> None:
        for origin in [o for o in self._idle if now - o.idle_since >= POOL_IDLE_S]:
            self._drop(origin)

    def close(self) -> None:
        for origin in list(self._idle):
            self._drop(origin)

    def _drop(self, origin: Origin) -> None:
        self._forget(origin)
        origin.transport.close()

    def _forget(self, origin: Origin) -> None:
        del self._idle[origin]
        same = self._by_key[origin.key]
        del same[origin]
        if not same:
            del self._by_key[origin.key]
        origin.on_idle_lost = _ignore
