"""Plain HTTP forwarding (docs/plain-http.md): absolute-form requests on the CONNECT port.

A ``Forward`` is one client connection carrying requests, one exchange at a time
(pipelined requests wait in the reader and are answered in order). What becomes of each
request, response and connection is decided by the pure machine (wire/plain_http.py);
this driver hands it what the readers complete and performs its commands: an origin from
the ``OriginPool`` (net/forward/pool.py), checked again, or a new dial after the checks a
CONNECT passes (port, threat feeds, DNS, CIDR policy, connect pacing); the bytes both ways
go through the same DRR lanes and rate as a tunnel's.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import Any, ClassVar

from fyntr.errors import HandshakeError
from fyntr.limits import HTTP_KEEPALIVE_IDLE_S
from fyntr.log import line, log
from fyntr.net.forward.origin_side import OriginSide
from fyntr.net.forward.pool import Origin, OriginPool
from fyntr.net.relay.pump import Lane, Pump
from fyntr.net.state import ServerState
from fyntr.policy.auth import Verdict
from fyntr.wire.commands import Arm, Authenticate, Log, Refused
from fyntr.wire.ends import Side, end_reason
from fyntr.wire.http_forward import Head, MessageReader
from fyntr.wire.plain_commands import (
    REQUEST_END,
    Abort,
    Body,
    ClientEof,
    ClientError,
    Command,
    Finish,
    HeadTimeout,
    Own,
    Reach,
    Release,
    Request,
    Served,
    Shutdown,
    ToClient,
    ToOrigin,
)
from fyntr.wire.plain_http import PlainHttp


class Forward(OriginSide):
    """A client connection that sends plain HTTP requests."""

    TARGET_KEY: ClassVar[str] = "http_target"

    def __init__(
        self,
        state: ServerState,
        flow_id: int,
        client: asyncio.Transport,
        peer: str,
        *,
        pumps: tuple[Pump, Pump],
        pool: OriginPool,
        on_closed: Callable[[Forward], None],
        client_key: object = None,
        address: str = "",
    ) -> None:
        """``client_key``: whom it is scheduled as until a user is authenticated (with
        --auth-file); ``address``: the client's, for the back-off of failed credentials."""
        self.state = state
        self.flow_id = flow_id
        self.peer = peer
        self.client = client
        self.pool = pool
        self.on_closed = on_closed
        now = state.clock()
        self.started = self.idle_since = now
        self.accepted_at = state.loop.time()  # of the dial in progress (connect pacing)
        self.idle_mark = 0
        self.reason: str | None = None
        self.routed = False  # the current upstream socket crosses a router
        self.upstream_since = 0  # up.nbytes when it started
        self.reader = MessageReader()
        self.machine = PlainHttp(
            self, state.threats, debug=log.isEnabledFor(logging.DEBUG), users=state.auth
        )
        self.verbose = log.isEnabledFor(logging.INFO)  # an exchange's line when it ends
        upload, download = pumps
        # The upload lane's destination and the download lane's source are the origin in
        # use: set per exchange. One download lane for the whole connection, so that a
        # response still queued in the scheduler is written before the next one.
        self.client_key = client_key
        self.address = address
        self.up = Lane(upload, client, client, _no_eof, client_key)
        self.down = Lane(download, client, client, self._down_finished, client_key)
        self.origin: Origin | None = None  # serving the exchange in progress
        self._task: asyncio.Task[Any] | None = None  # a dial, or a credentials check
        self.closed = False
        self.deadline = math.inf  # a request head under way must be complete by then

    # --- the relay interface (net/relay/tunnel.py) -------------------------------------------
    @property
    def target(self) -> str:
        """The last request's host:port, for /status and the close line."""
        return self.machine.target

    @property
    def activity(self) -> int:
        return self.up.nbytes + self.down.nbytes

    @property
    def spliced(self) -> bool:
        return False  # every message is read: nothing to hand to the kernel

    def idle_limit(self, configured: float) -> float:
        """Between requests, a keep-alive connection waits HTTP_KEEPALIVE_IDLE_S."""
        if self.machine.exchange is not None:
            return configured
        return min(configured, HTTP_KEEPALIVE_IDLE_S) if configured > 0 else HTTP_KEEPALIVE_IDLE_S

    def on_deadline(self) -> None:
        self.deadline = math.inf
        self._perform(self.machine.handle(HeadTimeout(self.state.settings.timeouts.headers_s)))

    def wind_down(self) -> None:
        self._perform(self.machine.handle(Shutdown()))

    def abort(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        if self._task is not None:
            self._task.cancel()
        self._drop_origin()
        self.up.discard()
        self.down.discard()
        self.client.abort()

    # --- the client's side ------------------------------------------------------------
    def start(self, data: bytes, client_eof: bool) -> None:
        self.client.set_protocol(self)
        self.client.resume_reading()
        self.data_received(data)
        if client_eof:
            self.eof_received()

    def data_received(self, data: bytes) -> None:
        try:
            self.reader.feed(data)
        except HandshakeError as err:
            self._perform(self.machine.handle(ClientError(err)))
            return
        # The handshake's header budget holds for every request head, the first one's
        # (after its request line) and each next one on a kept connection: a head's bytes
        # are no relay activity, so a trickled head would outlast the idle limits.
        if self.reader.in_head:
            if self.deadline == math.inf:
                self.deadline = self.state.clock() + self.state.settings.timeouts.headers_s
        elif self.deadline != math.inf:
            self.deadline = math.inf
        self._client_events()

    def eof_received(self) -> bool:
        self._perform(self.machine.handle(ClientEof(bool(self.reader.events))))
        return True  # the machine closes when it is time

    def pause_writing(self) -> None:
        self.down.dst_paused_writing()

    def resume_writing(self) -> None:
        self.down.dst_resumed_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        if self.reason is None:
            self.reason = end_reason(Side.CLIENT, exc)
        if self._task is not None:
            self._task.cancel()
        self._drop_origin()  # mid-exchange: between exchanges, the pool holds it
        self.up.discard()
        self.down.discard()
        self.down.on_eof_sent = self.up.on_eof_sent = _no_eof  # break the cycle
        self.on_closed(self)

    def _client_events(self) -> None:
        """What the client's reader holds goes to the machine in order; a request head
        waits while an exchange is under way (pipelined) or its origin is reached."""
        events, machine = self.reader.events, self.machine
        while events and self.reason is None and self._task is None:
            event = events[0]
            if isinstance(event, Head):
                if machine.exchange is not None:
                    break
                now = self.state.clock()
                handed: Any = Request(event, now, self.up.nbytes, self.down.nbytes)
            else:
                handed = Body(event) if isinstance(event, bytes) else REQUEST_END
            events.popleft()
            self._perform(machine.handle(handed))
        # Bytes wait in the reader while a request is pipelined or its origin is being
        # dialled; reading resumes when they have gone (and the upload lane allows).
        reading = self.client.is_reading()
        if events or self._task is not None:
            if reading:
                self.client.pause_reading()
        elif not reading and self.reason is None and not self.up.src_paused:
            self.client.resume_reading()

    # --- commands ---------------------------------------------------------------------
    def _perform(self, commands: list[Command]) -> None:
        for command in commands:
            _PERFORM[type(command)](self, command)

    def _authenticate(self, command: Authenticate) -> None:
        assert self.state.auth is not None
        judged = self.state.auth.judge(self.address, command.credentials, self._judged)
        if isinstance(judged, Verdict):
            self._perform(self.machine.handle(judged))
        else:
            self._task = judged

    def _judged(self, verdict: Verdict) -> None:
        """The hash checked, later."""
        self._task = None
        self._perform(self.machine.handle(verdict))
        self._client_events()  # the request's body, or a pipelined request

    def _own(self, command: Own) -> None:
        self.client_key = command.user
        self.up.own(command.user)
        self.down.own(command.user)

    def _to_origin(self, command: ToOrigin) -> None:
        self.up.push(command.data)

    def _to_client(self, command: ToClient) -> None:
        if not self.client.is_closing():
            self.down.push(command.data)

    def _served(self, command: Served) -> None:
        self.state.metrics.http_response(command.status)
        if self.verbose:
            ex = command.exchange
            line(
                logging.INFO,
                "flow%d: %s %s -> %d up_bytes=%d down_bytes=%d duration=%.3fs",
                self.flow_id,
                ex.head.method.decode(),
                ex.url,
                command.status,
                self.up.nbytes - ex.up_mark,
                self.down.nbytes - ex.down_mark,
                self.state.clock() - ex.started,
            )

    def _refused(self, command: Refused) -> None:
        self.state.metrics.rejected(command.reason)

    def _log(self, command: Log) -> None:
        line(command.level, command.text)

    def _arm(self, command: Arm) -> None:
        self.deadline = self.state.clock() + command.seconds

    def _finish(self, command: Finish) -> None:
        """Close the client once the download lane has written everything."""
        if self.reason is None:
            self.reason = command.reason
        self.client.pause_reading()
        self.down.finish()

    def _abort(self, command: Abort) -> None:
        self.abort(command.reason)

    def _down_finished(self) -> bool:
        self.client.close()
        return True


_PERFORM: dict[type, Callable[[Forward, Any], None]] = {
    Authenticate: Forward._authenticate,
    Own: Forward._own,
    Reach: Forward._reach,
    ToOrigin: Forward._to_origin,
    ToClient: Forward._to_client,
    Release: Forward._release,
    Served: Forward._served,
    Refused: Forward._refused,
    Log: Forward._log,
    Arm: Forward._arm,
    Finish: Forward._finish,
    Abort: Forward._abort,
}


def _no_eof() -> bool:
    return True
