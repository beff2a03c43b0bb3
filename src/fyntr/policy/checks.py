"""The destination policy and the threat feeds together, as the handshake asks them
(wire/commands.py ``Checks``): the rules here, the feeds from whatever keeps them
(net/out/threats.py reloads them on SIGHUP)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from fyntr.policy.rules import Policy
from fyntr.wire.commands import Requester
from fyntr.wire.target import Host, IPAddress, Target


class ThreatChecks(Protocol):
    """The threat feeds' two checks: the host before DNS, the addresses after."""

    def check_host(self, who: Requester, target: Target) -> None: ...

    def check_addresses(
        self, who: Requester, target: Target, addrs: Sequence[IPAddress]
    ) -> None: ...


class PolicyChecks:
    """The destination policy and the threat feeds, as the handshake asks them
    (wire/handshake.py ``Checks``)."""

    def __init__(
        self,
        policy: Policy,
        threats: ThreatChecks,
        via_parent: Callable[[Target], bool] = lambda _target: False,
    ) -> None:
        self.policy = policy
        self.threats = threats
        self.via_parent = via_parent  # through a parent proxy (net/out/parents.py)

    def check_host(self, who: Requester, target: Target) -> None:
        self.threats.check_host(who, target)

    def check_port(self, port: int, *, plain: bool) -> None:
        self.policy.check_port(port, plain=plain)

    def authorize(self, host: Host, addrs: Sequence[IPAddress]) -> list[IPAddress]:
        return self.policy.authorize(host, addrs)

    def check_addresses(self, who: Requester, target: Target, addrs: Sequence[IPAddress]) -> None:
        self.threats.check_addresses(who, target, addrs)
