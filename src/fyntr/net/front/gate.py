"""Accepting and admission (docs/original.md §2.1, §3.6): the listeners, the cap, connections
waiting at it, and the one place a slot comes back."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeAlias

from fyntr.config import Settings
from fyntr.errors import ConfigError
from fyntr.limits import ACCEPT_BATCH, ACCEPT_RETRY_DELAY_S
from fyntr.log import log
from fyntr.metrics import Stats
from fyntr.net.front.inbound import HttpInbound, Inbound, Socks5Inbound
from fyntr.net.front.listen import format_sockname, is_loopback, open_listener
from fyntr.net.state import ServerState
from fyntr.policy.clients import DEFAULT_CLIENT_RANGES, ClientPolicy
from fyntr.sched.admission import Admission

# The client's address as accept() gave it: (host, port), and for IPv6 flow and scope.
Peer: TypeAlias = tuple[Any, ...]
InboundFactory: TypeAlias = Callable[[ServerState, int, bool, Peer], Inbound]
Waiting: TypeAlias = tuple[socket.socket, InboundFactory, int, Peer]


def open_listeners(settings: Settings) -> list[tuple[socket.socket, InboundFactory]]:
    """The HTTP CONNECT listener, and the SOCKS5 one when asked for. Raises ConfigError."""
    listeners: list[tuple[socket.socket, InboundFactory]] = [
        (open_listener(settings.bind, settings.port), HttpInbound)
    ]
    if settings.socks5_port is not None:
        bind = settings.socks5_bind or settings.bind
        try:
            listeners.append((open_listener(bind, settings.socks5_port), Socks5Inbound))
        except ConfigError:
            listeners[0][0].close()
            raise
    return listeners


class Gate:
    """From ``accept()`` to a protocol on the connection, admitted or refused at the cap
    before a byte is read; ``--max-connections-wait`` holds the rest in turn."""

    def __init__(self, settings: Settings, metrics: Stats) -> None:
        self.settings = settings
        self.metrics = metrics
        self.admission: Admission[Waiting] = Admission(settings.effective_max_connections)
        self.loop: asyncio.AbstractEventLoop
        self.clock: Callable[[], float]
        self.state: ServerState
        self.listeners: list[tuple[socket.socket, InboundFactory]] = []
        self._adopting: dict[socket.socket, asyncio.Task[None]] = {}  # no transport yet
        self._next_flow_id = 1
        self.stopped = False
        self.clients: ClientPolicy | None = None  # None: every client (loopback only)
        # --max-connections-per-client: open connections per address, and whose each is.
        self.per_client: Counter[str] = Counter()
        self._client_of: dict[int, str] = {}  # flow id -> address

    def open(
        self, state: ServerState, listeners: list[tuple[socket.socket, InboundFactory]]
    ) -> None:
        """Start accepting on ``listeners`` (bound, listening) for ``state``'s server."""
        self.state, self.loop, self.clock = state, state.loop, state.clock
        beyond = [sock for sock, _ in listeners if not is_loopback(sock)]
        if self.settings.client_allow or beyond:
            self.clients = ClientPolicy(self.settings.client_allow or DEFAULT_CLIENT_RANGES)
        for sock, factory in listeners:
            log.info("Starting Fyntr on %s", format_sockname(sock))
            if sock in beyond and state.auth is None:
                assert self.clients is not None
                log.warning(
                    "listening on non-loopback address %s with no authentication: any "
                    "device in %s can use it (--client-allow)",
                    format_sockname(sock),
                    ", ".join(self.clients.names),
                )
            self.listeners.append((sock, factory))
            self.loop.add_reader(sock, self._on_acceptable, sock, factory)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [sock.getsockname()[:2] for sock, _ in self.listeners]

    def _on_acceptable(self, sock: socket.socket, factory: InboundFactory) -> None:
        """Accept a batch, then let the loop turn: with both listeners ready, each gets
        a batch per iteration, so neither starves the other (docs/original.md §2.1, v0.4.0)."""
        family = sock.family
        for _ in range(ACCEPT_BATCH):
            try:
                # accept() is _accept() plus socket(self.family, self.type, self.proto):
                # three properties that build enums on every call, 2% of a set-up.
                fd, addr = sock._accept()  # type: ignore[attr-defined]
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # EMFILE, ENFILE, ENOBUFS, ECONNABORTED...: never fatal (docs/differences.md). Stop
                # watching the socket for a moment: it stays readable, so retrying at
                # once would spin.
                log.warning("accept failed: %s; retrying in %gs", exc, ACCEPT_RETRY_DELAY_S)
                self.loop.remove_reader(sock)
                self.loop.call_later(ACCEPT_RETRY_DELAY_S, self._resume_accepting, sock, factory)
                return
            # The loop makes it non-blocking and sets TCP_NODELAY (asyncio only when the
            # proto is TCP, hence IPPROTO_TCP here).
            conn = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, fd)
            clients = self.clients
            if clients is not None and not clients.allows(addr[0]):
                self._refuse_client(conn, factory, addr)
            else:
                self._adopt(conn, factory, addr)

    def _resume_accepting(self, sock: socket.socket, factory: InboundFactory) -> None:
        if not self.stopped:
            self.loop.add_reader(sock, self._on_acceptable, sock, factory)

    def _refuse_client(self, conn: socket.socket, factory: InboundFactory, peer: Peer) -> None:
        """Outside the client ranges: refused by its protocol, holding no slot."""
        assert self.clients is not None
        flow_id = self._next_flow_id
        self._next_flow_id += 1
        self.metrics.accepted += 1
        names = ", ".join(self.clients.names)
        self._start(conn, factory, flow_id, peer, admitted=False, denied=names)

    def _adopt(self, conn: socket.socket, factory: InboundFactory, peer: Peer) -> None:
        """Admission happens here, before a byte is read (docs/original.md §2.1): the
        client's own cap first, then the cap."""
        flow_id = self._next_flow_id
        self._next_flow_id += 1
        self.metrics.accepted += 1
        limit = self.settings.max_connections_per_client
        if limit:
            address = peer[0]
            if self.per_client[address] >= limit:
                self._start(conn, factory, flow_id, peer, admitted=False, client_full=True)
                return
            self.per_client[address] += 1
            self._client_of[flow_id] = address
        admission = self.admission
        if admission.try_reserve():
            self._start(conn, factory, flow_id, peer, admitted=True)
            return
        wait = self.settings.max_connections_wait_s
        if wait > 0 and admission.wait((conn, factory, flow_id, peer), self.clock() + wait):
            log.info(
                "flow%d: at the cap (%d): waiting up to %gs for a slot (%d waiting)",
                flow_id,
                admission.limit,
                wait,
                len(admission.waiting),
            )
            return
        self._start(conn, factory, flow_id, peer, admitted=False)

    def _start(
        self,
        conn: socket.socket,
        factory: InboundFactory,
        flow_id: int,
        peer: Peer,
        *,
        admitted: bool,
        denied: str | None = None,
        client_full: bool = False,
    ) -> None:
        def made() -> Inbound:
            inbound = factory(self.state, flow_id, admitted, peer)
            inbound.denied = denied
            inbound.client_full = client_full
            return inbound

        async def adopt() -> None:
            try:
                await self.loop.connect_accepted_socket(made, conn)
            except OSError as exc:
                log.warning("flow%d: cannot adopt accepted socket: %s", flow_id, exc)
                conn.close()
                if admitted:
                    self.release_slot(active=False)
                self.client_left(flow_id)
            finally:
                self._adopting.pop(conn, None)

        self._adopting[conn] = self.loop.create_task(adopt(), name=f"fyntr-flow{flow_id}-adopt")

    def release_slot(self, *, active: bool) -> None:
        """The one place a slot is given back (a handshake's, or a tunnel's when
        ``active``); the longest-waiting connection at the cap gets it."""
        if active:
            self.admission.release_active()
        else:
            self.admission.release_pending()
        if self.admission.waiting:
            for conn, factory, flow_id, peer in self.admission.admit_waiting():
                self._start(conn, factory, flow_id, peer, admitted=True)

    def client_left(self, flow_id: int) -> None:
        """A connection counted against its client's cap has closed."""
        address = self._client_of.pop(flow_id, None)
        if address is not None:
            left = self.per_client[address] - 1
            if left:
                self.per_client[address] = left
            else:
                del self.per_client[address]

    def expire(self, now: float) -> None:
        """Connections that waited their time at the cap get the refusal."""
        for conn, factory, flow_id, peer in self.admission.expire(now):
            self._start(conn, factory, flow_id, peer, admitted=False)

    def stop_accepting(self) -> None:
        self.stopped = True
        for sock, _ in self.listeners:
            if sock.fileno() >= 0:
                self.loop.remove_reader(sock)
                sock.close()

    def close(self) -> None:
        if not self.stopped:
            self.stop_accepting()
        for _deadline, (conn, _factory, _flow_id, _peer) in self.admission.waiting:
            conn.close()
        self.admission.waiting.clear()
        for conn, task in list(self._adopting.items()):  # the task may never have started
            task.cancel()
            conn.close()
        self._adopting.clear()
