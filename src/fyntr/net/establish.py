"""From a complete request to a relay (upstream §6.5): the checks and the dial, then a
CONNECT or SOCKS5 ``Tunnel`` or a plain HTTP ``Forward`` session, and the end of each."""

from __future__ import annotations

import logging
from collections.abc import Callable

from fyntr.errors import HandshakeError, bad_gateway
from fyntr.limits import AUTORATE_UNSENT_BYTES
from fyntr.log import log
from fyntr.metrics import Snapshot
from fyntr.net.dialer import Dialed
from fyntr.net.forward import Forward
from fyntr.net.inbound import Inbound
from fyntr.net.parts import Parts
from fyntr.net.relay import Relay, Tunnel, log_tunnel_closed
from fyntr.net.sockopt import limit_unsent
from fyntr.net.state import Handshake, ServerState
from fyntr.wire.target import IPAddress, Target, format_host_port


class Establish:
    def __init__(self, parts: Parts) -> None:
        self.parts = parts

    def protocol_state(
        self, release_pending: Callable[[], None], snapshot: Callable[[], Snapshot]
    ) -> ServerState:
        """What the protocols see: these calls, and the parts they need to log and count."""
        parts = self.parts
        return ServerState(
            settings=parts.settings,
            loop=parts.loop,
            clock=parts.clock,
            metrics=parts.metrics,
            threats=parts.threats,
            cap=parts.gate.admission.limit,
            open_upstream=self.open_upstream,
            start_tunnel=self.start_tunnel,
            start_forward=self.start_forward,
            open_origin=self.open_origin,
            recheck_origin=self.recheck_origin,
            release_pending=release_pending,
            snapshot=snapshot,
            handshakes=parts.handshakes,
        )

    async def open_upstream(
        self, inbound: Handshake, target: Target, *, plain: bool = False
    ) -> Dialed:
        """Port, DNS, CIDR policy, resolved-IP threats, dial (upstream §6.5 order).
        ``plain``: for a plain HTTP request, whose implicit port is 80."""
        self.parts.policy.check_port(target.port, plain=plain)
        addrs = await self.parts.dialer.resolve(target.host, target.port)
        addrs = self.parts.policy.authorize(target.host, addrs)
        self.parts.threats.check_addresses(inbound, target, addrs)
        paced = await self.parts.pacing.wait(inbound.accepted_at)
        try:
            dialed = await self.parts.dialer.dial(
                self.parts.loop, inbound.flow_id, addrs, target.port
            )
        except HandshakeError:
            self.parts.metrics.dial_failures += 1
            raise
        self.parts.pacing.observe(dialed, paced=paced)
        if dialed.protocol.lost:
            dialed.transport.close()
            self.parts.metrics.dial_failures += 1
            raise bad_gateway("dial_failed", "upstream closed before the tunnel started")
        if self.parts.autorate is not None:
            limit_unsent(dialed.transport, AUTORATE_UNSENT_BYTES)
        return dialed

    async def open_origin(self, handshake: Handshake, target: Target) -> Dialed:
        return await self.open_upstream(handshake, target, plain=True)

    def recheck_origin(self, handshake: Handshake, target: Target, address: IPAddress) -> None:
        """A kept connection serves a request only after the checks a dial would make,
        with the address it is connected to as the one DNS answer."""
        self.parts.policy.check_port(target.port, plain=True)
        self.parts.policy.authorize(target.host, [address])
        self.parts.threats.check_addresses(handshake, target, [address])

    def start_forward(self, inbound: Inbound, data: bytes) -> None:
        """A plain HTTP request on the CONNECT port: the connection becomes a session."""
        self.parts.gate.admission.activate()
        forward = Forward(
            inbound.state,
            inbound.flow_id,
            inbound.transport,
            inbound.peer,
            pumps=self.parts.pumps,
            pool=self.parts.pool,
            on_closed=self.closed,
        )
        self._add(forward)
        forward.start(data, inbound.client_eof)

    def start_tunnel(self, inbound: Inbound, target: Target, dialed: Dialed) -> None:
        self.parts.gate.admission.activate()
        self.parts.metrics.tunnels_opened += 1
        self.parts.metrics.observe_handshake(self.parts.loop.time() - inbound.accepted_at)
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
            pumps=self.parts.pumps,
            now=self.parts.clock(),
            on_closed=self.closed,
            splicer=self.parts.splicer,
        )
        self._add(tunnel)
        tunnel.start(inbound.leftover, dialed.protocol.early)
        if inbound.client_eof:
            tunnel.up.finish()
        if dialed.protocol.early and dialed.protocol.lost:
            tunnel.down.finish()

    def _add(self, relay: Relay) -> None:
        self.parts.relays.add(relay)
        if self.parts.autorate is not None:
            self.parts.autorate.wake()

    def closed(self, relay: Relay) -> None:
        self.parts.relays.discard(relay)
        self.parts.gate.release_slot(active=True)
        self.parts.metrics.flow_closed(relay)
        log_tunnel_closed(relay, self.parts.clock())
