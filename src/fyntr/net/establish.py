"""From a complete request to a relay (upstream §6.5): the checks and the dial, then a
CONNECT or SOCKS5 ``Tunnel`` or a plain HTTP ``Forward`` session, and the end of each."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from fyntr.errors import HandshakeError, bad_gateway
from fyntr.limits import AUTORATE_UNSENT_BYTES
from fyntr.log import log
from fyntr.metrics import Stats
from fyntr.net.autorate import AutoRateDriver
from fyntr.net.dialer import Dialed, Dialer
from fyntr.net.forward import Forward, OriginPool
from fyntr.net.gate import Gate
from fyntr.net.inbound import Inbound
from fyntr.net.pacing import ConnectGate
from fyntr.net.pump import Pump
from fyntr.net.relay import Relay, Tunnel, log_tunnel_closed
from fyntr.net.sockopt import limit_unsent
from fyntr.net.splice import Splicer
from fyntr.net.state import Handshake
from fyntr.net.threats import ThreatGuard
from fyntr.policy.rules import Policy
from fyntr.wire.target import IPAddress, Target, format_host_port


@dataclass(eq=False)
class Establish:
    loop: asyncio.AbstractEventLoop
    clock: Callable[[], float]
    policy: Policy
    dialer: Dialer
    threats: ThreatGuard
    pacing: ConnectGate
    metrics: Stats
    gate: Gate
    pumps: tuple[Pump, Pump]
    relays: set[Relay]
    pool: OriginPool
    splicer: Splicer | None
    autorate: AutoRateDriver | None

    async def open_upstream(
        self, inbound: Handshake, target: Target, *, plain: bool = False
    ) -> Dialed:
        """Port, DNS, CIDR policy, resolved-IP threats, dial (upstream §6.5 order).
        ``plain``: for a plain HTTP request, whose implicit port is 80."""
        self.policy.check_port(target.port, plain=plain)
        addrs = await self.dialer.resolve(target.host, target.port)
        addrs = self.policy.authorize(target.host, addrs)
        self.threats.check_addresses(inbound, target, addrs)
        paced = await self.pacing.wait(inbound.accepted_at)
        try:
            dialed = await self.dialer.dial(self.loop, inbound.flow_id, addrs, target.port)
        except HandshakeError:
            self.metrics.dial_failures += 1
            raise
        self.pacing.observe(dialed, paced=paced)
        if dialed.protocol.lost:
            dialed.transport.close()
            self.metrics.dial_failures += 1
            raise bad_gateway("dial_failed", "upstream closed before the tunnel started")
        if self.autorate is not None:
            limit_unsent(dialed.transport, AUTORATE_UNSENT_BYTES)
        return dialed

    async def open_origin(self, handshake: Handshake, target: Target) -> Dialed:
        return await self.open_upstream(handshake, target, plain=True)

    def recheck_origin(self, handshake: Handshake, target: Target, address: IPAddress) -> None:
        """A kept connection serves a request only after the checks a dial would make,
        with the address it is connected to as the one DNS answer."""
        self.policy.check_port(target.port, plain=True)
        self.policy.authorize(target.host, [address])
        self.threats.check_addresses(handshake, target, [address])

    def start_forward(self, inbound: Inbound, data: bytes) -> None:
        """A plain HTTP request on the CONNECT port: the connection becomes a session."""
        self.gate.admission.activate()
        forward = Forward(
            inbound.state,
            inbound.flow_id,
            inbound.transport,
            inbound.peer,
            pumps=self.pumps,
            pool=self.pool,
            on_closed=self.closed,
        )
        self._add(forward)
        forward.start(data, inbound.client_eof)

    def start_tunnel(self, inbound: Inbound, target: Target, dialed: Dialed) -> None:
        self.gate.admission.activate()
        self.metrics.tunnels_opened += 1
        self.metrics.observe_handshake(self.loop.time() - inbound.accepted_at)
        if log.isEnabledFor(logging.INFO):  # the arguments cost: skip them when silent
            log.info(
                "flow%d: %sconnected to %s via %s",
                inbound.flow_id,
                inbound.LOG_VERB.removesuffix("CONNECT "),
                target.authority,
                format_host_port(dialed.address, target.port),
            )
        inbound.reply_success(dialed)
        tunnel = Tunnel(
            flow_id=inbound.flow_id,
            target=target.authority,
            client=inbound.transport,
            upstream=dialed.transport,
            pumps=self.pumps,
            now=self.clock(),
            on_closed=self.closed,
            splicer=self.splicer,
        )
        self._add(tunnel)
        tunnel.start(inbound.leftover, dialed.protocol.early)
        if inbound.client_eof:
            tunnel.up.finish()
        if dialed.protocol.early and dialed.protocol.lost:
            tunnel.down.finish()

    def _add(self, relay: Relay) -> None:
        self.relays.add(relay)
        if self.autorate is not None:
            self.autorate.wake()

    def closed(self, relay: Relay) -> None:
        self.relays.discard(relay)
        self.gate.release_slot(active=True)
        self.metrics.flow_closed(relay)
        log_tunnel_closed(relay, self.clock())
