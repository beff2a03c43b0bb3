"""Listeners, admission, the sweep, signals and shutdown: the proxy's lifetime."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import signal
import socket
from collections.abc import Callable

from fyntr.config import AUTO, Settings, validate_bind_address
from fyntr.errors import ConfigError, HandshakeError, bad_gateway
from fyntr.limits import (
    AUTORATE_UNSENT_BYTES,
    FDS_PER_SPLICED_TUNNEL,
    MAX_CAP_WAITERS,
    POOL_MAX,
    SHUTDOWN_POLL_S,
    SPLICE_MAX_TUNNELS,
    SWEEP_INTERVAL_MAX_S,
)
from fyntr.log import log
from fyntr.metrics import Snapshot, Stats
from fyntr.net import splice, tcpinfo
from fyntr.net.autorate import AutoRateDriver
from fyntr.net.dialer import Dialed, Dialer
from fyntr.net.forward import Forward, OriginPool
from fyntr.net.gate import Gate, InboundFactory
from fyntr.net.inbound import HttpInbound, Inbound
from fyntr.net.listen import (
    format_sockname,
    is_loopback,
    open_listener,
    raise_fd_limit,
    splice_capacity,
    waiting_capacity,
)
from fyntr.net.memory import release_memory
from fyntr.net.pacing import ConnectGate
from fyntr.net.platform import Signals, fallbacks
from fyntr.net.pump import Pump
from fyntr.net.relay import Relay, Tunnel, log_tunnel_closed
from fyntr.net.sockopt import limit_unsent
from fyntr.net.state import Handshake, ServerState
from fyntr.net.status import Status
from fyntr.net.threats import ThreatGuard
from fyntr.policy.rules import Policy
from fyntr.wire.target import IPAddress, Target, format_host_port


class Server:
    """The proxy. ``start`` binds; ``serve`` runs until a signal or ``shutdown``."""

    def __init__(
        self,
        settings: Settings,
        *,
        dialer: Dialer | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """``clock`` replaces the loop's for deadlines and the idle sweep (tests)."""
        self.settings = settings
        self._clock = clock
        self.dialer = dialer or Dialer(
            settings.timeouts, happy_eyeballs_delay=settings.happy_eyeballs_delay_s
        )
        self.policy = Policy.build(
            allow_ports=settings.allow_ports,
            default_port=settings.default_allow_port,
            deny_cidrs=settings.deny_cidrs,
            allow_cidrs=settings.allow_cidrs,
            allow_domains=settings.allow_domains,
        )
        self.metrics = Stats()
        self.gate = Gate(settings, self.metrics)
        self.admission = self.gate.admission
        self.pacing: ConnectGate
        self.threats = ThreatGuard(settings, self.metrics)
        self.handshakes: set[Inbound] = set()
        self.tunnels: set[Relay] = set()  # CONNECT and SOCKS5 tunnels, plain HTTP sessions
        self.pool = OriginPool()  # idle plain-HTTP upstream connections
        self.loop: asyncio.AbstractEventLoop
        self.clock: Callable[[], float]
        self.state: ServerState  # what the protocols see, from start on
        self.pumps: tuple[Pump, Pump]
        self.splicer: splice.Splicer | None = None  # unshaped: bulk tunnels are spliced
        self.autorate: AutoRateDriver | None = None  # --upload-rate auto
        self.status: Status  # from start on
        self._tasks: set[asyncio.Task[object]] = set()
        self._sweep_handle: asyncio.TimerHandle | None = None
        self._stopping = False
        self._signals: Signals | None = None
        self._stopped = asyncio.Event()
        self._exit_code = 0
        self._accepted_at_release = 0  # connections accepted when memory was last released
        self._metrics_listener: asyncio.Server | None = None

    # --- start-up --------------------------------------------------------------------

    async def start(self, *, signals: bool = False) -> None:
        """Load feeds, raise the FD limit, bind. Raises ConfigError (exit 1).

        With ``signals``, SIGTERM/SIGINT/SIGHUP are handled from here on, before the
        "Starting" line that tells a supervisor the proxy is up."""
        settings = self.settings
        self.loop = asyncio.get_running_loop()
        self.clock = self._clock or self.loop.time
        self.state = ServerState(
            settings=settings,
            loop=self.loop,
            clock=self.clock,
            metrics=self.metrics,
            threats=self.threats,
            cap=self.admission.limit,
            open_upstream=self.open_upstream,
            start_tunnel=self.start_tunnel,
            start_forward=self.start_forward,
            open_origin=self.open_origin,
            recheck_origin=self.recheck_origin,
            release_pending=functools.partial(self.gate.release_slot, active=False),
            snapshot=self.snapshot,
            handshakes=self.handshakes,
        )
        if signals:
            self.install_signal_handlers()
        stand_ins = fallbacks(self.loop, self._signals is None or self._signals.on_loop)
        if stand_ins:
            log.info("platform: %s", "; ".join(stand_ins))
        self.threats.load()
        auto_upload = settings.upload_rate == AUTO
        self.pumps = (
            Pump(self.loop, 0 if settings.upload_rate == AUTO else settings.upload_rate),
            Pump(self.loop, settings.download_rate),
        )
        if auto_upload:
            if tcpinfo.AVAILABLE:
                self.autorate = AutoRateDriver(self.loop, self.pumps[0], self.tunnels)
            else:
                log.warning("--upload-rate auto: no TCP_INFO on this platform; upload unlimited")
        splicing = splice.AVAILABLE and not any(pump.shaped for pump in self.pumps)
        waiting = settings.max_connections_wait_s > 0
        soft = raise_fd_limit(
            self.admission.limit,
            (SPLICE_MAX_TUNNELS * FDS_PER_SPLICED_TUNNEL if splicing else 0)
            + (MAX_CAP_WAITERS if waiting else 0)
            + POOL_MAX,
        )
        capacity = splice_capacity(self.admission.limit, soft) if splicing else 0
        if capacity:
            self.splicer = splice.Splicer(self.loop, capacity)
        if waiting:
            self.admission.max_waiting = waiting_capacity(self.admission.limit, soft, capacity)
            log.info(
                "--max-connections-wait: up to %d connections wait at the cap",
                self.admission.max_waiting,
            )
        listeners: list[tuple[socket.socket, InboundFactory]] = [
            (open_listener(settings.bind, settings.port), HttpInbound)
        ]
        if settings.socks5_port is not None:
            from fyntr.net.socks5 import Socks5Inbound  # noqa: PLC0415  (only when enabled)

            bind = settings.socks5_bind or settings.bind
            try:
                listeners.append((open_listener(bind, settings.socks5_port), Socks5Inbound))
            except ConfigError:
                listeners[0][0].close()
                raise
        self.pacing = ConnectGate(self.loop, settings)
        self.status = Status(
            settings=settings,
            clock=self.clock,
            loop_time=self.loop.time,
            metrics=self.metrics,
            dial_stats=lambda: self.dialer.stats,
            gate=self.gate,
            pacing=self.pacing,
            pumps=self.pumps,
            relays=self.tunnels,
            handshakes=self.handshakes,
            pool=self.pool,
            splicer=self.splicer,
            autorate=self.autorate,
        )
        self.gate.open(self.state, listeners)
        if settings.metrics_port is not None:
            await self._start_metrics()
        self._schedule_sweep()

    async def _start_metrics(self) -> None:
        from fyntr.net.metrics_http import start_metrics  # noqa: PLC0415

        settings = self.settings
        bind = validate_bind_address(settings.metrics_bind)
        assert settings.metrics_port is not None
        try:
            self._metrics_listener = await start_metrics(self.state, bind, settings.metrics_port)
        except OSError as exc:
            self.close()
            raise ConfigError(
                f"cannot serve metrics on {bind}:{settings.metrics_port}: {exc}"
            ) from None
        for sock in self._metrics_listener.sockets:
            if not is_loopback(sock):
                log.warning(
                    "metrics on non-loopback address %s: anyone who can reach it sees the "
                    "targets of your tunnels",
                    format_sockname(sock),
                )

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        if self._metrics_listener is None:
            return None
        host, port = self._metrics_listener.sockets[0].getsockname()[:2]
        return str(host), int(port)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return self.gate.addresses

    def snapshot(self) -> Snapshot:
        return self.status.snapshot()

    def _spawn(self, coro: object, name: str) -> None:
        task: asyncio.Task[object] = self.loop.create_task(coro, name=name)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- the handshake pipeline ------------------------------------------------------
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
        return dialed

    async def open_origin(self, handshake: Handshake, target: Target) -> Dialed:
        dialed = await self.open_upstream(handshake, target, plain=True)
        if self.autorate is not None:
            limit_unsent(dialed.transport, AUTORATE_UNSENT_BYTES)
        return dialed

    def recheck_origin(self, handshake: Handshake, target: Target, address: IPAddress) -> None:
        """A kept connection serves a request only after the checks a dial would make,
        with the address it is connected to as the one DNS answer."""
        self.policy.check_port(target.port, plain=True)
        self.policy.authorize(target.host, [address])
        self.threats.check_addresses(handshake, target, [address])

    def start_forward(self, inbound: Inbound, data: bytes) -> None:
        """A plain HTTP request on the CONNECT port: the connection becomes a session."""
        self.admission.activate()
        forward = Forward(
            self.state,
            inbound.flow_id,
            inbound.transport,
            inbound.peer,
            pumps=self.pumps,
            pool=self.pool,
            on_closed=self._tunnel_closed,
        )
        self.tunnels.add(forward)
        if self.autorate is not None:
            self.autorate.wake()
        forward.start(data, inbound.client_eof)

    def start_tunnel(self, inbound: Inbound, target: Target, dialed: Dialed) -> None:
        self.admission.activate()
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
            on_closed=self._tunnel_closed,
            splicer=self.splicer,
        )
        self.tunnels.add(tunnel)
        if self.autorate is not None:
            limit_unsent(dialed.transport, AUTORATE_UNSENT_BYTES)
            self.autorate.wake()
        tunnel.start(inbound.leftover, dialed.protocol.early)
        if inbound.client_eof:
            tunnel.up.finish()
        if dialed.protocol.early and dialed.protocol.lost:
            tunnel.down.finish()

    def _tunnel_closed(self, tunnel: Relay) -> None:
        self.tunnels.discard(tunnel)
        self.gate.release_slot(active=True)
        self.metrics.closed_up_bytes += tunnel.up.nbytes
        self.metrics.closed_down_bytes += tunnel.down.nbytes
        log_tunnel_closed(tunnel, self.clock())

    # --- the one periodic sweep ------------------------------------------------------
    def _sweep_interval(self) -> float:
        t = self.settings.timeouts
        candidates = [SWEEP_INTERVAL_MAX_S, t.request_line_s / 4, t.headers_s / 4]
        if self.settings.idle_timeout_s > 0:
            candidates.append(self.settings.idle_timeout_s / 4)
        return max(0.01, min(candidates))

    def _schedule_sweep(self) -> None:
        self._sweep_handle = self.loop.call_later(self._sweep_interval(), self._sweep)

    def _sweep(self) -> None:
        self.sweep()
        self._schedule_sweep()

    def sweep(self) -> None:
        """Expire handshakes past their deadline, close idle tunnels, log stats."""
        now = self.clock()
        for inbound in [h for h in self.handshakes if h.deadline <= now]:
            inbound.on_deadline()
        self.gate.expire(now)
        idle = self.settings.idle_timeout_s
        for tunnel in list(self.tunnels):
            activity = tunnel.activity
            if activity != tunnel.idle_mark:
                tunnel.idle_mark = activity
                tunnel.idle_since = now
            elif 0 < tunnel.idle_limit(idle) <= now - tunnel.idle_since:
                log.info(
                    "flow%d: idle timeout after %.2fs; closing",
                    tunnel.flow_id,
                    now - tunnel.idle_since,
                )
                tunnel.abort("idle_timeout")
        self.pool.expire(now)
        self.status.log_stats(now)
        self._release_memory_when_idle()

    def _release_memory_when_idle(self) -> None:
        """Once per stretch of traffic, when the last tunnel and handshake are gone."""
        accepted = self.metrics.accepted
        if accepted != self._accepted_at_release and not (self.tunnels or self.handshakes):
            self._accepted_at_release = accepted
            release_memory()

    # --- lifetime --------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        signals = self._signals = Signals(self.loop)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signals.add(sig, self._on_stop_signal, sig)
        if hasattr(signal, "SIGHUP"):  # not on Windows
            signals.add(signal.SIGHUP, self.threats.reload)

    def remove_signal_handlers(self) -> None:
        """The handlers in place before start come back (as uvicorn does)."""
        if self._signals is not None:
            self._signals.restore()
            self._signals = None

    def _on_stop_signal(self, sig: signal.Signals) -> None:
        if self._stopping:
            log.warning("second %s: exiting now", sig.name)
            self._exit_code = 128 + sig.value
            self._stopped.set()
            return
        log.info(
            "%s: stopped accepting; draining %d tunnels for up to %gs",
            sig.name,
            len(self.tunnels),
            self.settings.shutdown_grace_s,
        )
        self._spawn(self.shutdown(), "fyntr-shutdown")

    def stop_accepting(self) -> None:
        self._stopping = True
        self.gate.stop_accepting()

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop accepting, let tunnels finish for up to ``grace`` seconds, then close."""
        grace = self.settings.shutdown_grace_s if grace is None else grace
        self.stop_accepting()
        for relay in list(self.tunnels):
            relay.wind_down()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace if math.isfinite(grace) else None):
                while self.tunnels or self.handshakes:  # noqa: ASYNC110  (once, at exit)
                    await asyncio.sleep(SHUTDOWN_POLL_S)
        self._stopped.set()

    async def serve(self) -> int:
        """Run until shut down; close whatever is left; return the exit status."""
        try:
            await self._stopped.wait()
        finally:
            self.close()
        return self._exit_code

    def close(self) -> None:
        if not self._stopping:
            self.stop_accepting()
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
        for tunnel in list(self.tunnels):
            tunnel.abort("shutdown")
        for inbound in list(self.handshakes):
            inbound.transport.abort()
        self.gate.close()
        self.pool.close()
        for pump in self.pumps:
            pump.close()
        if self.autorate is not None:
            self.autorate.close()
        if self._metrics_listener is not None:
            self._metrics_listener.close()
        self.pacing.close()
        for task in list(self._tasks):
            task.cancel()
