"""From a complete request to a relay (docs/original.md §6.5): the checks and the dial, then a
CONNECT or SOCKS5 ``Tunnel`` or a plain HTTP ``Forward`` session, and the end of each."""

from __future__ import annotations

import logging
from collections.abc import Callable

from fyntr.errors import HandshakeError, bad_gateway
from fyntr.log import line, log
from fyntr.metrics import Snapshot
from fyntr.net.forward.session import Forward
from fyntr.net.front.inbound import Inbound
from fyntr.net.out.dialer import Dialed
from fyntr.net.parts import Parts
from fyntr.net.relay.tunnel import Relay, Tunnel, log_tunnel_closed
from fyntr.net.state import ConnectRequester, ServerState
from fyntr.policy.checks import PolicyChecks
from fyntr.wire.commands import DialParent, HandOn, Pace, Resolve, StartTunnel, Upstream
from fyntr.wire.target import IPAddress, Target, format_host_port


class Establish:
    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        self.checks = PolicyChecks(parts.policy, parts.threats, parts.parents.routes)

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
            checks=self.checks,
            connect=self.connect,
            start_tunnel=self.start_tunnel,
            start_forward=self.start_forward,
            open_origin=self.open_origin,
            recheck_origin=self.recheck_origin,
            release_pending=release_pending,
            client_left=parts.gate.client_left,
            snapshot=snapshot,
            auth=parts.auth,
            handshakes=parts.handshakes,
        )

    async def connect(self, who: ConnectRequester, upstream: Upstream) -> Dialed:
        """Performs ``upstream``'s steps in the order it gives them. Raises HandshakeError."""
        parts = self.parts
        step = upstream.start()
        paced = learn = False
        while True:
            if isinstance(step, Resolve):
                step = upstream.resolved(await parts.dialer.resolve(step.host, step.port))
            elif isinstance(step, Pace):
                learn = parts.pacing.learns_from(
                    parts.parents.routed
                    if upstream.via_parent
                    else not all(ip.is_loopback for ip in upstream.addrs)
                )
                if learn:
                    paced = await parts.pacing.wait(who.accepted_at)
                step = upstream.granted()
            elif isinstance(step, DialParent):
                via = await parts.parents.open(
                    parts.loop, who.flow_id, upstream.target, tunnel=not upstream.plain
                )
                if via is not None:
                    dialed = via
                    break
                step = upstream.direct()
            else:
                try:
                    dialed = await parts.dialer.dial(parts.loop, who.flow_id, step.addrs, step.port)
                except HandshakeError:
                    parts.metrics.dial_failures += 1
                    raise
                break
        if learn:
            parts.pacing.observe(dialed, paced=paced)
        if dialed.protocol.lost:
            dialed.transport.close()
            parts.metrics.dial_failures += 1
            raise bad_gateway("dial_failed", "upstream closed before the tunnel started")
        parts.autorates.dialed(dialed)
        return dialed

    async def open_origin(self, who: ConnectRequester, target: Target) -> Dialed:
        return await self.connect(who, Upstream(self.checks, who, target, plain=True))

    def recheck_origin(
        self, who: ConnectRequester, target: Target, address: IPAddress, *, direct: bool
    ) -> None:
        """A kept connection serves a request only after the checks a dial would make,
        with the address it is connected to as the one DNS answer when it is direct."""
        upstream = Upstream(self.checks, who, target, plain=True)
        upstream.start()
        if direct:
            upstream.resolved([address])

    def start_forward(self, inbound: Inbound, command: HandOn) -> None:
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
            client_key=inbound.client_key,
            address=inbound.address,
        )
        self._add(forward)
        forward.start(command.data, command.client_eof)

    def start_tunnel(self, inbound: Inbound, command: StartTunnel, dialed: Dialed) -> None:
        """The success reply is written: the connection becomes a tunnel."""
        target = command.target
        self.parts.gate.admission.activate()
        self.parts.metrics.tunnels_opened += 1
        self.parts.metrics.observe_handshake(self.parts.loop.time() - inbound.accepted_at)
        if log.isEnabledFor(logging.INFO):  # the arguments cost: skip them when silent
            line(
                logging.INFO,
                "flow%d: %sconnected to %s via %s",
                inbound.flow_id,
                inbound.HANDSHAKE.VERB.removesuffix("CONNECT "),
                target.authority,
                format_host_port(dialed.address, target.port)
                if dialed.via is None
                else f"parent proxy {dialed.via.name}",
            )
        tunnel = Tunnel(
            flow_id=inbound.flow_id,
            target=target.authority,
            client=inbound.transport,
            upstream=dialed.transport,
            pumps=self.parts.pumps,
            now=self.parts.clock(),
            on_closed=self.closed,
            splicer=self.parts.splicer,
            routed=dialed.routed,
            client_key=inbound.client_key,
        )
        self._add(tunnel)
        tunnel.start(command.leftover, dialed.protocol.early)
        if command.client_eof:
            tunnel.up.finish()
        if dialed.protocol.early and dialed.protocol.lost:
            tunnel.down.finish()

    def _add(self, relay: Relay) -> None:
        self.parts.relays.add(relay)
        self.parts.autorates.wake()

    def closed(self, relay: Relay) -> None:
        self.parts.relays.discard(relay)
        self.parts.gate.release_slot(active=True)
        self.parts.gate.client_left(relay.flow_id)
        self.parts.metrics.flow_closed(relay)
        log_tunnel_closed(relay, self.parts.clock())
