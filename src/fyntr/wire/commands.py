"""What a handshake machine (wire/handshake.py) and its owner say to each other: the
events it is fed, the commands it hands out, the steps of reaching the upstream in
order (``Upstream``), and the calls it makes to judge a request (``Checks``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, NamedTuple, Protocol

from fyntr.errors import HandshakeError
from fyntr.policy.auth import Credentials, Verdict
from fyntr.wire.target import Host, IPAddress, Target


class Requester(Protocol):
    """Who asked, for the log lines: a handshake, or a plain HTTP session."""

    TARGET_KEY: ClassVar[str]

    @property
    def flow_id(self) -> int: ...

    @property
    def peer(self) -> str: ...


class Checks(Protocol):
    """The destination policy and the threat feeds; each raises HandshakeError to refuse."""

    def check_host(self, who: Requester, target: Target) -> None: ...

    def check_port(self, port: int, *, plain: bool) -> None: ...

    def via_parent(self, target: Target) -> bool:
        """Whether ``target`` goes through a parent proxy, which resolves its name."""

    def authorize(self, host: Host, addrs: Sequence[IPAddress]) -> list[IPAddress]: ...

    def check_addresses(
        self, who: Requester, target: Target, addrs: Sequence[IPAddress]
    ) -> None: ...


# --- Upstream: what follows a complete request -------------------------------------------
class Resolve(NamedTuple):
    host: Host
    port: int


class Pace(NamedTuple):
    """Wait for a connect token (--connect-rate)."""


class Dial(NamedTuple):
    addrs: list[IPAddress]
    port: int


class DialParent(NamedTuple):
    """Through a parent proxy (net/out/parents.py): the target goes to it by name."""


Step = Resolve | Pace | Dial | DialParent


class Upstream:
    """The checks and steps after a request is read, in the original's order
    (docs/original.md §6.5): the port, DNS, the CIDR policy, the threat feeds on the
    resolved addresses, connect pacing, the dial. Through a parent proxy there is no
    DNS: an IP-literal target is judged as its own answer, a name only by the checks
    before (docs/parent-proxies.md). Each call returns the next step or raises
    HandshakeError."""

    __slots__ = ("addrs", "checks", "granted_once", "plain", "target", "via_parent", "who")

    def __init__(self, checks: Checks, who: Requester, target: Target, *, plain: bool) -> None:
        self.checks = checks
        self.who = who
        self.target = target
        self.plain = plain  # plain HTTP: port 80 is implicit where CONNECT has 443
        self.addrs: list[IPAddress] = []
        self.via_parent = False
        self.granted_once = False  # paced already: a fallback to direct is not paced again

    def start(self) -> Step:
        self.checks.check_port(self.target.port, plain=self.plain)
        self.via_parent = self.checks.via_parent(self.target)
        host = self.target.host
        if self.via_parent and host.ip is not None:
            return self.resolved([host.ip])
        return Pace() if self.via_parent else Resolve(host, self.target.port)

    def resolved(self, addrs: Sequence[IPAddress]) -> Step:
        self.addrs = self.checks.authorize(self.target.host, addrs)
        self.checks.check_addresses(self.who, self.target, self.addrs)
        return self.granted() if self.granted_once else Pace()

    def granted(self) -> Step:
        self.granted_once = True
        return DialParent() if self.via_parent else Dial(self.addrs, self.target.port)

    def direct(self) -> Step:
        """No parent answered and the fallback is to go direct: resolve after all."""
        self.via_parent = False
        return Resolve(self.target.host, self.target.port)


# --- events ------------------------------------------------------------------------------
class Data(NamedTuple):
    data: bytes


class Eof(NamedTuple):
    """The client half-closed."""


class Expired(NamedTuple):
    """The deadline last armed has passed."""


class Connected(NamedTuple):
    """The upstream connection is up; ``bound`` is its local address when the front-end
    replies it (``REPLIES_BOUND``)."""

    bound: tuple[IPAddress, int] | None


class Failed(NamedTuple):
    """Resolving, judging, pacing or dialing refused the request."""

    error: HandshakeError


Event = Data | Eof | Expired | Connected | Failed | Verdict  # Verdict: of Authenticate


# --- commands ----------------------------------------------------------------------------
class Send(NamedTuple):
    data: bytes


class Arm(NamedTuple):
    """The deadline of what is awaited now, in seconds from now (inf: none)."""

    seconds: float


class Log(NamedTuple):
    level: int
    text: str


class Refused(NamedTuple):
    """Count a refusal by its reason (metrics)."""

    reason: str


class PauseReading(NamedTuple):
    """Until the tunnel starts, or the credentials are checked: what the client sends
    meanwhile stays in the kernel."""


class ResumeReading(NamedTuple):
    """The credentials passed: the SOCKS5 request comes next."""


class Authenticate(NamedTuple):
    """Check the credentials (--auth-file); the answer is a ``Verdict``, at once when it
    is known. Always the last command of its list."""

    credentials: Credentials


class Linger(NamedTuple):
    """Half-close and drain what the client still sends, so that the reply is not
    destroyed by a RST (unread input at close)."""


class Close(NamedTuple):
    pass


class ServePac(NamedTuple):
    """Answer with the proxy auto-configuration file (wire/pac.py) for the address the
    client reached fyntr on."""


class Connect(NamedTuple):
    """Run ``upstream``'s steps; answer with Connected or Failed."""

    upstream: Upstream


class StartTunnel(NamedTuple):
    target: Target
    leftover: bytes  # what the client sent after its request: forwarded (docs/differences.md)
    client_eof: bool


class HandOn(NamedTuple):
    """A plain HTTP request: the connection becomes a forwarding session
    (net/forward/session.py)."""

    data: bytes  # everything read, from the request line on
    client_eof: bool


Command = (
    Send
    | Arm
    | Log
    | Refused
    | PauseReading
    | ResumeReading
    | Authenticate
    | Linger
    | Close
    | ServePac
    | Connect
    | StartTunnel
    | HandOn
)
