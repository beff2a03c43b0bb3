"""The origin's side of a plain HTTP session (net/forward/session.py): reaching an origin
for an exchange (a kept connection from the pool, checked again, or a dial), attaching
it to the session's lanes, handing its reader's events to the machine
(wire/plain_http.py), and releasing it to the pool or closing it. What net/forward/pool.py
calls on the session it serves (``Session``) is here."""

from __future__ import annotations

import asyncio
import socket
from typing import Any, ClassVar

from fyntr.errors import HandshakeError
from fyntr.net.forward.pool import Origin, OriginPool
from fyntr.net.relay.pump import Lane
from fyntr.net.state import ServerState
from fyntr.wire.http_forward import MessageReader
from fyntr.wire.plain_commands import (
    Command,
    OriginEof,
    OriginFailed,
    Reach,
    Reached,
    Release,
    Response,
    Unreached,
)
from fyntr.wire.plain_http import PlainHttp


class OriginSide(asyncio.Protocol):
    """Forward's origin half; Forward (the client's half) performs the commands."""

    state: ServerState
    pool: OriginPool
    machine: PlainHttp
    reader: MessageReader
    client: asyncio.Transport
    up: Lane
    down: Lane
    origin: Origin | None  # serving the exchange in progress
    _task: asyncio.Task[Any] | None  # a dial, or a credentials check
    accepted_at: float  # loop time of the dial in progress (connect pacing)
    flow_id: int
    peer: str  # the client's address and port, for the log
    TARGET_KEY: ClassVar[str]
    reason: str | None
    closed: bool
    routed: bool  # the current upstream socket crosses a router
    upstream_since: int  # up.nbytes when it started

    def _perform(self, commands: list[Command]) -> None:
        raise NotImplementedError

    def _client_events(self) -> None:
        raise NotImplementedError

    def upstream_socket(self) -> socket.socket | None:
        if self.origin is None or self.origin.lost:
            return None
        sock: socket.socket | None = self.origin.transport.get_extra_info("socket")
        return sock

    def head_sent(self) -> bool:
        """The exchange's request head has been handed to the kernel (not queued by the
        scheduler, not in the transport's buffer)."""
        ex = self.machine.exchange
        return ex is not None and self.up.nbytes - self.up.held() >= ex.head_end

    def origin_events(self) -> None:
        """Everything the origin's bytes complete goes to the client in one write."""
        if self.origin is not None and self.origin.reader.events:
            response = Response(self.origin.reader.events, self.up.queued > 0)
            self._perform(self.machine.handle(response))
            self._next()

    def origin_eof(self) -> None:
        origin = self.origin
        if origin is not None and not origin.reader.events:
            self._perform(self.machine.handle(OriginEof(self.up.queued > 0)))
            self._next()

    def _next(self) -> None:
        """After an exchange that kept the connection: a pipelined request, or reading."""
        idle = self.machine.exchange is None and self.reason is None
        if idle and (self.reader.events or not self.client.is_reading()):
            self._client_events()

    def origin_lost(self, origin: Origin, exc: Exception | None) -> None:
        origin.session = None
        if self.origin is origin and self.machine.exchange is not None:
            self.origin_failed(f"the origin closed the connection ({exc or 'EOF'})")
        elif self.origin is origin:
            self.origin = None

    def origin_failed(self, detail: str) -> None:
        self._perform(self.machine.handle(OriginFailed(detail)))

    def _reach(self, command: Reach) -> None:
        origin = None if command.fresh else self.pool.take(command.dest.authority)
        if origin is None:
            self.accepted_at = self.state.loop.time()  # connect pacing's budget runs from here
            self._task = self.state.loop.create_task(
                self._dial(command), name=f"fyntr-flow{self.flow_id}-origin"
            )
            return
        # The policy is fixed for the process and the feeds change only by a reload that
        # replaces the index: a connection cleared under this index stays cleared.
        index = self.state.threats.index
        if origin.cleared is not index:
            try:
                direct = origin.via is None
                self.state.recheck_origin(self, command.dest.target, origin.address, direct=direct)
            except HandshakeError as err:
                self.pool.put(origin, self.state.clock())
                self._perform(self.machine.handle(Unreached(err)))
                return
            origin.cleared = index
        self._attach(origin, command)

    async def _dial(self, command: Reach) -> None:
        try:
            dialed = await self.state.open_origin(self, command.dest.target)
        except HandshakeError as err:
            self._task = None
            self._perform(self.machine.handle(Unreached(err)))
            return
        self._task = None
        if self.closed:
            dialed.transport.close()
            return
        self._attach(Origin(command.dest.authority, dialed), command)
        self._client_events()  # the body read while dialling
        self.origin_events()  # what the origin sent before the request

    def _attach(self, origin: Origin, command: Reach) -> None:
        self.origin = origin
        origin.session = self
        origin.reader.expect_no_body = command.no_body
        self.up.retarget(origin.transport, origin.routed)
        self.down.src = origin.transport
        self.down.src_paused = False
        self.routed = origin.routed
        self.upstream_since = self.up.nbytes
        reused = origin.served > 0
        origin.served += 1
        self._perform(self.machine.handle(Reached(reused, origin.via)))  # the request head
        ex = self.machine.exchange
        assert ex is not None
        ex.head_end = self.up.nbytes
        origin.checking = reused and not self.head_sent()
        origin.transport.resume_reading()

    def _release(self, command: Release) -> None:
        origin = self.origin
        if command.keep and origin is not None:
            self.origin = None
            self.pool.put(origin, self.state.clock())  # which closes it if it cannot serve
            return
        self.up.discard()
        self._drop_origin()

    def _drop_origin(self) -> None:
        origin, self.origin = self.origin, None
        if origin is not None:
            origin.session = None
            origin.transport.abort()
