"""The proxy's lifetime: start (feeds, FD limit, listeners, the parts wired together),
the one periodic sweep, signals and staged shutdown. Accepting and admission are in
net/front/gate.py, the way to a relay in net/out/establish.py, what it reports in
net/watch/status.py."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import signal
from collections.abc import Callable

from fyntr.config import Settings
from fyntr.errors import ConfigError
from fyntr.limits import (
    SHUTDOWN_POLL_S,
)
from fyntr.log import attach_loop, log
from fyntr.metrics import Snapshot, Stats
from fyntr.net.forward.pool import OriginPool
from fyntr.net.front.auth import Authenticator
from fyntr.net.front.gate import Gate, open_listeners
from fyntr.net.front.inbound import Inbound
from fyntr.net.front.listen import plan_descriptors
from fyntr.net.kernel.platform import Signals, fallbacks
from fyntr.net.out.dialer import Dialer
from fyntr.net.out.establish import Establish
from fyntr.net.out.pacing import ConnectGate
from fyntr.net.out.parents import Parents
from fyntr.net.out.threats import ThreatGuard
from fyntr.net.parts import Parts
from fyntr.net.relay import splice
from fyntr.net.relay.pump import Pump
from fyntr.net.relay.tunnel import Relay
from fyntr.net.state import ServerState
from fyntr.net.watch.autorate import AutoRates, pumps_for
from fyntr.net.watch.status import Reporter
from fyntr.net.watch.sweep import Sweeper
from fyntr.policy.rules import Policy
from fyntr.wire.parent import NoProxy


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
        self.auth: Authenticator | None = None  # --auth-file, from start on
        self.handshakes: set[Inbound] = set()
        self.tunnels: set[Relay] = set()  # CONNECT and SOCKS5 tunnels, plain HTTP sessions
        self.pool = OriginPool()  # idle plain-HTTP upstream connections
        self.loop: asyncio.AbstractEventLoop
        self.clock: Callable[[], float]
        self.state: ServerState  # what the protocols see, from start on
        self.pumps: tuple[Pump, Pump]
        self.autorates = AutoRates(None, None)  # the directions set to auto
        self.parts: Parts  # from start on
        self.status: Reporter
        self.sweeper: Sweeper | None = None
        self._tasks: set[asyncio.Task[object]] = set()
        self._stopping = False
        self._signals: Signals | None = None
        self._stopped = asyncio.Event()
        self._exit_code = 0
        self._metrics_listener: asyncio.Server | None = None

    # --- start-up --------------------------------------------------------------------

    async def start(self, *, signals: bool = False) -> None:
        """Load feeds, raise the FD limit, bind. Raises ConfigError (exit 1).

        With ``signals``, SIGTERM/SIGINT/SIGHUP are handled from here on, before the
        "Starting" line that tells a supervisor the proxy is up."""
        settings = self.settings
        self.loop = asyncio.get_running_loop()
        self.clock = self._clock or self.loop.time
        if signals:
            self.install_signal_handlers()
        stand_ins = fallbacks(self.loop, self._signals is None or self._signals.on_loop)
        if stand_ins:
            log.info("platform: %s", "; ".join(stand_ins))
        self.threats.load()
        if settings.auth_file is not None:
            self.auth = Authenticator(settings.auth_file, self.clock)
        self.pumps, self.autorates = pumps_for(self.loop, self.clock, settings, self.tunnels)
        fds = plan_descriptors(
            self.admission.limit,
            splicing=splice.AVAILABLE and not any(pump.shaped for pump in self.pumps),
            waiting=settings.max_connections_wait_s > 0,
        )
        self.admission.max_waiting = fds.waiting
        self.pool.capacity = fds.pooled
        splicer = splice.Splicer(self.loop, fds.spliced) if fds.spliced else None
        listeners = open_listeners(settings)
        self.pacing = ConnectGate(self.loop, settings)
        parents = Parents(
            settings.upstreams,
            NoProxy(settings.no_upstream),
            self.dialer,
            fallback_direct=settings.upstream_fallback == "direct",
        )
        if settings.upstreams:
            log.info(
                "parent proxies, in order: %s; when none answers: %s%s",
                ", ".join(p.name for p in settings.upstreams),
                "go direct" if parents.fallback_direct else "fail (502)",
                f"; direct: {', '.join(settings.no_upstream)}" if settings.no_upstream else "",
            )
        self.parts = parts = Parts(
            settings,
            self.loop,
            self.clock,
            self.metrics,
            self.policy,
            self.dialer,
            self.threats,
            self.gate,
            self.pacing,
            parents,
            self.pumps,
            self.tunnels,
            self.handshakes,
            self.pool,
            splicer,
            self.autorates,
            self.auth,
        )
        self.state = Establish(parts).protocol_state(
            functools.partial(self.gate.release_slot, active=False), self.snapshot
        )
        self.status = Reporter(parts)
        self.sweeper = Sweeper(parts, self.status)
        self.gate.open(self.state, listeners)
        if settings.metrics_port is not None:
            from fyntr.net.watch.metrics_http import start_metrics  # noqa: PLC0415  (when enabled)

            try:
                self._metrics_listener = await start_metrics(self.state)
            except ConfigError:
                self.close()
                raise
        self.sweeper.start()
        attach_loop(self.loop)  # the lines of a turn in one write from here on (fyntr.log)

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        if self._metrics_listener is None:
            return None
        host, port = self._metrics_listener.sockets[0].getsockname()[:2]
        return str(host), int(port)

    @property
    def splicer(self) -> splice.Splicer | None:
        return self.parts.splicer

    @splicer.setter
    def splicer(self, splicer: splice.Splicer | None) -> None:
        """None: no tunnel is spliced from now on (tests of the transports' engine)."""
        self.parts.splicer = splicer

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return self.gate.addresses

    def snapshot(self) -> Snapshot:
        return self.status.snapshot()

    def sweep(self) -> None:
        """Expire handshakes past their deadline, close idle relays, log stats (tests
        call it under a virtual clock)."""
        assert self.sweeper is not None
        self.sweeper.sweep()

    # --- lifetime --------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        signals = self._signals = Signals(self.loop)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signals.add(sig, self._on_stop_signal, sig)
        if hasattr(signal, "SIGHUP"):  # not on Windows
            signals.add(signal.SIGHUP, self._on_reload_signal)

    def _on_reload_signal(self) -> None:
        """SIGHUP: the threat feeds and the auth file are read again."""
        self.threats.reload()
        if self.auth is not None:
            self.auth.reload()

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
        task = self.loop.create_task(self.shutdown(), name="fyntr-shutdown")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
        if self.sweeper is not None:
            self.sweeper.stop()
        for tunnel in list(self.tunnels):
            tunnel.abort("shutdown")
        for inbound in list(self.handshakes):
            inbound.transport.abort()
        self.gate.close()
        self.pool.close()
        for pump in self.pumps:
            pump.close()
        self.autorates.close()
        if self._metrics_listener is not None:
            self._metrics_listener.close()
        self.pacing.close()
        if self.auth is not None:
            self.auth.close()
        for task in list(self._tasks):
            task.cancel()
        attach_loop(None)
