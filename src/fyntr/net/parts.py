"""The running proxy's parts, made once at start (net/server.py) and shared by the modules
that work with them: net/out/establish.py, net/watch/status.py and net/watch/sweep.py.
Protocols see a smaller view of them (net/state.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fyntr.config import Settings
from fyntr.metrics import Stats
from fyntr.net.forward.pool import OriginPool
from fyntr.net.front.auth import Authenticator
from fyntr.net.front.gate import Gate
from fyntr.net.out.dialer import Dialer
from fyntr.net.out.pacing import ConnectGate
from fyntr.net.out.parents import Parents
from fyntr.net.out.threats import ThreatGuard
from fyntr.net.relay.pump import Pump
from fyntr.net.relay.splice import Splicer
from fyntr.net.relay.tunnel import Relay
from fyntr.net.watch.autorate import AutoRates
from fyntr.policy.rules import Policy


@dataclass(eq=False)
class Parts:
    settings: Settings
    loop: asyncio.AbstractEventLoop
    clock: Callable[[], float]  # deadlines, stamps, ages, auto-rate history (virtual in tests)
    metrics: Stats
    policy: Policy
    dialer: Dialer
    threats: ThreatGuard
    gate: Gate
    pacing: ConnectGate
    parents: Parents  # --upstream: none, or the parent proxies in order
    pumps: tuple[Pump, Pump]
    relays: set[Relay]  # CONNECT and SOCKS5 tunnels, plain HTTP sessions
    handshakes: set[Any]  # in progress (net/front/inbound.py)
    pool: OriginPool  # idle plain-HTTP upstream connections
    splicer: Splicer | None  # unshaped: bulk tunnels are handed to the kernel
    autorates: AutoRates  # the directions set to auto, where the kernel gives samples
    auth: Authenticator | None = None  # --auth-file
