"""Handshake protocols: from accept to the success reply, then hand-off to the relay."""

from __future__ import annotations

import asyncio
import logging
import math
from typing import TYPE_CHECKING, ClassVar, cast

from fyntr.errors import REASON_PHRASES, STATUS_LINES, HandshakeError, Rep, Status
from fyntr.limits import LINGER_S
from fyntr.log import log
from fyntr.net.sockopt import tune_transport
from fyntr.net.state import ServerState
from fyntr.wire.http_connect import ConnectParser, HeadComplete, Phase, PlainRequest, TargetParsed
from fyntr.wire.target import Target, format_host_port

if TYPE_CHECKING:
    from fyntr.net.dialer import Dialed


def format_peer(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return format_host_port(peer[0], peer[1])
    return "unknown"


class Inbound(asyncio.Protocol):
    """What HTTP CONNECT and SOCKS5 handshakes share: admission, deadline, the dial."""

    PROTOCOL_NAME: ClassVar[str] = ""
    TARGET_KEY: ClassVar[str] = "connect_target"
    LOG_VERB: ClassVar[str] = "CONNECT "

    def __init__(self, state: ServerState, flow_id: int, admitted: bool) -> None:
        self.state = state
        self.flow_id = flow_id
        self.transport: asyncio.Transport
        self._peer: str | None = None
        self.reserved = admitted  # holds a pending admission slot
        self.accepted_at = state.loop.time()
        self.closed = False
        self.lingering = False
        self.deadline = math.inf  # loop time; the server's sweep enforces it
        self.target: Target | None = None
        self.leftover = b""
        self.client_eof = False
        self._task: asyncio.Task[None] | None = None

    @property
    def peer(self) -> str:
        """The client's address, for logs: looked up only when a line needs it."""
        if self._peer is None:
            self._peer = format_peer(self.transport)
        return self._peer

    # --- asyncio callbacks -----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        state = self.state
        if log.isEnabledFor(logging.INFO):
            log.info(
                "flow%d: new %s connection from %s", self.flow_id, self.PROTOCOL_NAME, self.peer
            )
        if not self.reserved:
            state.metrics.rejected("max_connections")
            log.warning(
                "flow%d: %s connection from %s rejected before parsing: "
                "max connections (%d) reached",
                self.flow_id,
                self.PROTOCOL_NAME,
                self.peer,
                state.cap,
            )
            self.reject_at_capacity()
            return
        state.handshakes.add(self)
        tune_transport(self.transport)
        self.started()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._task is not None:
            self._task.cancel()
        self._release()

    # --- for subclasses --------------------------------------------------------------
    def started(self) -> None:
        raise NotImplementedError

    def reject_at_capacity(self) -> None:
        raise NotImplementedError

    def error_reply(self, err: HandshakeError) -> bytes:
        raise NotImplementedError

    def describe(self, err: HandshakeError) -> str:
        raise NotImplementedError

    def reply_success(self, dialed: Dialed) -> None:
        raise NotImplementedError

    def expire(self) -> None:
        """The handshake deadline passed."""
        raise NotImplementedError

    # --- shared ----------------------------------------------------------------------
    def on_deadline(self) -> None:
        if self.lingering:
            self.transport.close()
        else:
            self.expire()

    def _release(self) -> None:
        if self.reserved:
            self.reserved = False
            self.state.release_pending()
        self.state.handshakes.discard(self)

    def fail(self, err: HandshakeError) -> None:
        self.refuse(
            self.error_reply(err),
            err.reason,
            f"{err.detail} ({self.describe(err)})",
            level=logging.ERROR if err.status is Status.BAD_GATEWAY else logging.WARNING,
        )

    def refuse(
        self, reply: bytes, reason: str, message: str, *, level: int = logging.WARNING
    ) -> None:
        """Log, reply, and linger: half-close and drain what the client still sends,
        so that the reply is not destroyed by a RST (unread input at close)."""
        self.state.metrics.rejected(reason)
        where = f"{self.target.authority} " if self.target is not None else ""
        log.log(
            level, "flow%d: %s%sfrom %s: %s", self.flow_id, self.LOG_VERB, where, self.peer, message
        )
        if self.closed or self.lingering:
            return
        if reply:
            self.transport.write(reply)
        self.linger()

    def linger(self) -> None:
        self.lingering = True
        if self.client_eof:
            # The client has sent all it will: nothing to drain, so close at once (after
            # the reply is flushed) and free the slot; lingering would let a client that
            # loops connect, bad request, FIN hold a slot for LINGER_S each time.
            self.transport.close()
            return
        self.deadline = self.state.clock() + LINGER_S
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.transport.resume_reading()

    def establish(self, target: Target) -> None:
        """The request is complete: resolve, check, dial in a task of its own."""
        self.target = target
        self.deadline = math.inf
        self.transport.pause_reading()
        self._task = self.state.loop.create_task(
            self._establish(target), name=f"fyntr-flow{self.flow_id}-establish"
        )

    async def _establish(self, target: Target) -> None:
        try:
            dialed = await self.state.open_upstream(self, target)
        except HandshakeError as err:
            self.fail(err)
            return
        if self.closed:
            dialed.transport.abort()
            return
        self._task = None
        self.reserved = False
        self.state.handshakes.discard(self)
        self.state.start_tunnel(self, target, dialed)

    def check_host(self, target: Target) -> bool:
        """Log the target; warn on mixed scripts; threat-check the host before DNS."""
        self.target = target
        if log.isEnabledFor(logging.INFO):  # formatting the authority costs: skip it when silent
            log.info("flow%d: %s%s", self.flow_id, self.LOG_VERB, target.authority)
        try:
            self.state.threats.check_host(self, target)
        except HandshakeError as err:
            self.fail(err)
            return False
        return True


class HttpInbound(Inbound):
    PROTOCOL_NAME = "HTTP CONNECT"

    def started(self) -> None:
        self.parser = ConnectParser()
        self.deadline = self.state.clock() + self.state.settings.timeouts.request_line_s

    def reject_at_capacity(self) -> None:
        self.transport.write(STATUS_LINES[Status.SERVICE_UNAVAILABLE])
        self.linger()

    def data_received(self, data: bytes) -> None:
        # Reading is paused from the end of the head until the tunnel starts (establish),
        # so no byte arrives while dialing: what came with the head is in ``leftover``.
        if self.lingering:
            return
        try:
            events = self.parser.feed(data)
        except HandshakeError as err:
            self.fail(err)
            return
        for event in events:
            if isinstance(event, TargetParsed):
                if not self.check_host(event.target):
                    return
                self.deadline = self.state.clock() + self.state.settings.timeouts.headers_s
            elif isinstance(event, HeadComplete):
                assert self.target is not None
                self.leftover = event.leftover
                self.establish(self.target)
            elif isinstance(event, PlainRequest):
                self.reserved = False  # the slot goes with the connection
                self.state.handshakes.discard(self)
                self.state.start_forward(self, event.data)

    def eof_received(self) -> bool:
        self.client_eof = True  # CONNECT, data, FIN: honoured once the tunnel is up
        if self.lingering:
            self.transport.close()
            return False
        if self._task is not None:
            return True
        try:
            self.parser.feed_eof()
        except HandshakeError as err:
            self.fail(err)
        return True

    def expire(self) -> None:
        # Past the head (Phase.DONE) the deadline is infinite: the sweep never calls this.
        phase = self.parser.phase
        limit = (
            self.state.settings.timeouts.request_line_s
            if phase is Phase.REQUEST_LINE
            else self.state.settings.timeouts.headers_s
        )
        self.fail(
            HandshakeError(
                Status.REQUEST_TIMEOUT,
                Rep.GENERAL_FAILURE,
                "timeout",
                f"timed out reading the {phase.value} after {limit:g}s",
            )
        )

    def error_reply(self, err: HandshakeError) -> bytes:
        return STATUS_LINES[err.status]

    def describe(self, err: HandshakeError) -> str:
        return f"{err.status.value} {REASON_PHRASES[err.status]}"

    def reply_success(self, dialed: Dialed) -> None:
        self.transport.write(STATUS_LINES[Status.OK])
