"""What the protocols see of the server (as uvicorn's ServerState): the settings, the
clock, the counters and the few calls a handshake makes, never the server itself, so that
no module the server imports imports it back."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from fyntr.config import Settings
from fyntr.metrics import Snapshot, Stats
from fyntr.net.front.auth import Authenticator
from fyntr.net.out.dialer import Dialed
from fyntr.net.out.threats import ThreatGuard
from fyntr.wire.commands import Checks, HandOn, Requester, StartTunnel, Upstream
from fyntr.wire.target import IPAddress, Target


class ConnectRequester(Requester, Protocol):
    """A handshake in progress or a plain HTTP request, as the server's calls take it."""

    accepted_at: float  # loop time: connect pacing's budget runs from it


class Recheck(Protocol):
    """The checks a kept plain HTTP connection passes before it serves a request."""

    def __call__(
        self, who: ConnectRequester, target: Target, address: IPAddress, *, direct: bool
    ) -> None: ...


@dataclass(eq=False)
class ServerState:
    settings: Settings
    loop: asyncio.AbstractEventLoop
    clock: Callable[[], float]  # deadlines and tunnel stamps (virtual in tests)
    metrics: Stats
    threats: ThreatGuard
    cap: int  # --max-connections after the clamp, for the log lines
    checks: Checks  # the policy and the feeds, as wire/handshake.py asks them
    # The server's calls: run an Upstream's steps (resolve, judge, pace, dial); start the
    # tunnel; hand a connection on to plain HTTP; give a handshake's slot back; what
    # /metrics and /status show.
    connect: Callable[[ConnectRequester, Upstream], Awaitable[Dialed]]
    start_tunnel: Callable[[Any, StartTunnel, Dialed], None]
    start_forward: Callable[[Any, HandOn], None]
    open_origin: Callable[[ConnectRequester, Target], Awaitable[Dialed]]  # connect, plain HTTP
    recheck_origin: Recheck  # a kept connection's
    release_pending: Callable[[], None]  # a handshake's reserved slot
    client_left: Callable[[int], None]  # a flow's connection closed: its client's count
    snapshot: Callable[[], Snapshot]
    auth: Authenticator | None = None  # --auth-file
    handshakes: set[Any] = field(default_factory=set)  # in progress: the sweep expires them
    metrics_clients: int = 0  # connections to the metrics port being served
