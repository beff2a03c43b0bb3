"""The one driver of a handshake: what the loop sees goes into the pure machine
(wire/handshake.py) as events; its commands are performed here, and nothing is decided
here. ``HttpInbound`` and ``Socks5Inbound`` only name their front-end."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
from collections.abc import Callable
from typing import Any, ClassVar, cast

from fyntr.errors import HandshakeError
from fyntr.log import line, log
from fyntr.net.kernel.sockopt import tune_transport
from fyntr.net.out.dialer import Dialed
from fyntr.net.state import ServerState
from fyntr.policy.auth import Verdict
from fyntr.wire.commands import (
    Arm,
    Authenticate,
    Close,
    Command,
    Connect,
    Connected,
    Data,
    Eof,
    Expired,
    Failed,
    HandOn,
    Linger,
    Log,
    PauseReading,
    Refused,
    ResumeReading,
    Send,
    ServePac,
    StartTunnel,
    Upstream,
)
from fyntr.wire.handshake import Handshake
from fyntr.wire.handshake_http import HttpHandshake
from fyntr.wire.handshake_socks5 import Socks5Handshake
from fyntr.wire.pac import pac_response
from fyntr.wire.target import format_host_port


class Inbound(asyncio.Protocol):
    """One accepted connection until its tunnel starts, it is handed on, or it closes."""

    HANDSHAKE: ClassVar[type[Handshake]]
    TARGET_KEY: ClassVar[str]

    def __init__(
        self, state: ServerState, flow_id: int, admitted: bool, peername: tuple[Any, ...]
    ) -> None:
        """``peername``: the client's address as accept() gave it, the one place it is
        read (the transport would look it up again per call)."""
        self.state = state
        self.flow_id = flow_id
        self.transport: asyncio.Transport
        self.address: str = peername[0]  # the client's address, whatever its port
        self._port: int = peername[1]
        self._peer: str | None = None
        self.reserved = admitted  # holds a pending admission slot
        self.denied: str | None = None  # a refused client: the ranges it is not in
        self.client_full = False  # refused: its address has --max-connections-per-client
        self.accepted_at = state.loop.time()
        self.closed = False
        self.deadline = math.inf  # clock time; the server's sweep enforces it
        self.dialed: Dialed | None = None
        self._task: asyncio.Task[None] | None = None
        self.user: str | None = None  # --auth-file: whom the credentials named
        self.machine = self.HANDSHAKE(
            self,
            state.checks,
            state.settings.timeouts,
            verbose=log.isEnabledFor(logging.INFO),
            auth=state.auth is not None,
        )

    @property
    def client_key(self) -> object:
        """Whom its relay is scheduled as (a device of the house, docs/house.md): its user
        name with --auth-file, else its address."""
        return self.user or self.address

    @property
    def peer(self) -> str:
        """The client's address, for logs: looked up only when a line needs it."""
        if self._peer is None:
            self._peer = format_host_port(self.address, self._port)
        return self._peer

    # --- asyncio callbacks: events in -------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if log.isEnabledFor(logging.INFO):  # the peer is looked up only for the line
            line(
                logging.INFO,
                "flow%d: new %s connection from %s",
                self.flow_id,
                self.HANDSHAKE.NAME,
                self.peer,
            )
        self.state.handshakes.add(self)  # the sweep enforces its deadlines, lingering too
        if self.denied is not None:
            self._perform(self.machine.client_refused(self.denied))
            return
        if not self.reserved:
            if self.client_full:
                limit = self.state.settings.max_connections_per_client
                self._perform(self.machine.at_capacity(limit, per_client=True))
            else:
                self._perform(self.machine.at_capacity(self.state.cap))
            return
        tune_transport(self.transport)
        self._perform(self.machine.start())

    def data_received(self, data: bytes) -> None:
        self._perform(self.machine.handle(Data(data)))

    def eof_received(self) -> bool:
        self._perform(self.machine.handle(Eof()))
        return True  # the machine closes when it is time; a tunnel half-closes later

    def on_deadline(self) -> None:
        self._perform(self.machine.handle(Expired()))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._task is not None:
            self._task.cancel()
        self._release()

    async def _connect(self, upstream: Upstream) -> None:
        try:
            dialed = await self.state.connect(self, upstream)
        except HandshakeError as err:
            self._task = None
            self._perform(self.machine.handle(Failed(err)))
            return
        self._task = None
        if self.closed:
            dialed.transport.abort()
            return
        self.dialed = dialed
        bound = None
        if self.HANDSHAKE.REPLIES_BOUND:
            host, port = dialed.transport.get_extra_info("sockname")[:2]
            bound = (ipaddress.ip_address(host), port)
        self._perform(self.machine.handle(Connected(bound)))

    # --- commands out -----------------------------------------------------------------
    def _perform(self, commands: list[Command]) -> None:
        for command in commands:
            _PERFORM[type(command)](self, command)

    def _send(self, command: Send) -> None:
        if not self.closed:
            self.transport.write(command.data)

    def _arm(self, command: Arm) -> None:
        self.deadline = (
            math.inf if command.seconds == math.inf else self.state.clock() + command.seconds
        )

    def _log(self, command: Log) -> None:
        line(command.level, command.text)

    def _refused(self, command: Refused) -> None:
        self.state.metrics.rejected(command.reason)

    def _pause_reading(self, _command: PauseReading) -> None:
        self.transport.pause_reading()

    def _resume_reading(self, _command: ResumeReading) -> None:
        if not self.closed:
            self.transport.resume_reading()

    def _authenticate(self, command: Authenticate) -> None:
        """The verdict at once when it is known (cached, or the address is waiting out
        its back-off), else when the hash has been checked."""
        assert self.state.auth is not None
        judged = self.state.auth.judge(self.address, command.credentials, self._judged)
        if isinstance(judged, Verdict):
            self._judged(judged)
        else:
            self._task = judged

    def _judged(self, verdict: Verdict) -> None:
        self._task = None
        self.user = verdict.user
        self._perform(self.machine.handle(verdict))

    def _linger(self, _command: Linger) -> None:
        if self.closed:
            return
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.transport.resume_reading()

    def _close(self, _command: Close) -> None:
        self.transport.close()

    def _serve_pac(self, _command: ServePac) -> None:
        """The file names the address this client reached fyntr on."""
        host, port = self.transport.get_extra_info("sockname")[:2]
        self._send(Send(pac_response(format_host_port(host, port))))

    def _start_connect(self, command: Connect) -> None:
        self._task = self.state.loop.create_task(
            self._connect(command.upstream), name=f"fyntr-flow{self.flow_id}-establish"
        )

    def _start_tunnel(self, command: StartTunnel) -> None:
        assert self.dialed is not None
        self._hand_over()
        self.state.start_tunnel(self, command, self.dialed)

    def _hand_on(self, command: HandOn) -> None:
        self._hand_over()  # the slot goes with the connection
        self.state.start_forward(self, command)

    def _hand_over(self) -> None:
        self.reserved = False
        self._done()

    def _release(self) -> None:
        if self.reserved:
            self.reserved = False
            self.state.release_pending()
        self.state.client_left(self.flow_id)
        self._done()

    def _done(self) -> None:
        self.state.handshakes.discard(self)
        # The machine knows this driver as its requester: break the cycle, so that a
        # finished handshake is freed at once and never waits for the cyclic collector.
        del self.machine


_PERFORM: dict[type, Callable[[Inbound, Any], None]] = {
    Send: Inbound._send,
    Arm: Inbound._arm,
    Log: Inbound._log,
    Refused: Inbound._refused,
    PauseReading: Inbound._pause_reading,
    ResumeReading: Inbound._resume_reading,
    Authenticate: Inbound._authenticate,
    Linger: Inbound._linger,
    Close: Inbound._close,
    ServePac: Inbound._serve_pac,
    Connect: Inbound._start_connect,
    StartTunnel: Inbound._start_tunnel,
    HandOn: Inbound._hand_on,
}


class HttpInbound(Inbound):
    HANDSHAKE = HttpHandshake
    TARGET_KEY = HttpHandshake.TARGET_KEY


class Socks5Inbound(Inbound):
    HANDSHAKE = Socks5Handshake
    TARGET_KEY = Socks5Handshake.TARGET_KEY
