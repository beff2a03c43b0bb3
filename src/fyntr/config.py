"""Settings: frozen, validated, no I/O."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal, TypeVar

from fyntr import limits
from fyntr.errors import ConfigError
from fyntr.policy.threat import ThreatAction

if TYPE_CHECKING:
    from fyntr.wire.parent import Parent

LOG_LEVELS: Final = ("debug", "info", "warning", "error")

_RATE_UNITS: Final[dict[str, float]] = {
    "": 1,
    "b": 1,
    "kbit": 1e3 / 8,
    "mbit": 1e6 / 8,
    "gbit": 1e9 / 8,
    "kb": 1e3,
    "mb": 1e6,
    "gb": 1e9,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
_RATE_RE: Final = re.compile(r"(\d+(?:\.\d+)?|\.\d+)\s*([a-z]*)(?:/s)?")


def parse_rate(text: str) -> int:
    """A RATE (README.md, Command line) -> bytes per second (0 = unlimited). Raises ValueError."""
    match = _RATE_RE.fullmatch(text.strip().lower())
    if match is None or match.group(2) not in _RATE_UNITS:
        raise ValueError(
            f"'{text}' is not a rate (e.g. 8mbit, 2.5MB, 512kib/s, 1000000 or 0 for unlimited)"
        )
    value = float(match.group(1)) * _RATE_UNITS[match.group(2)]
    rate = round(value)
    if value > 0 and rate == 0:
        raise ValueError(f"'{text}' is below 1 byte per second")
    return rate


AUTO: Final = "auto"
Auto = Literal["auto"]
T = TypeVar("T")


def or_auto(parse: Callable[[str], T]) -> Callable[[str], T | Auto]:
    """``parse``, or the word ``auto`` (docs/zero-configuration.md), for a flag that takes
    either."""

    def convert(text: str) -> T | Auto:
        if text.strip().lower() == AUTO:
            return AUTO
        try:
            return parse(text)
        except ValueError as exc:
            raise ValueError(f"{exc}, or auto") from None

    return convert


parse_rate_or_auto = or_auto(parse_rate)


def parse_seconds(text: str) -> float:
    """A non-negative duration in seconds; decimals allowed. Raises ValueError."""
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError(f"'{text}' is not a number of seconds") from None
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"'{text}' is not a non-negative, finite number of seconds")
    return value


# The range of each whole-number setting (None: no upper bound): Settings checks its
# fields against it, and the command line its flags (cli.py), so the two cannot differ.
INT_BOUNDS: Final[dict[str, tuple[int, int | None]]] = {
    "port": (0, limits.PORT_MAX),  # 0: any free port
    "socks5_port": (0, limits.PORT_MAX),
    "metrics_port": (0, limits.PORT_MAX),
    "allow_ports": (1, limits.PORT_MAX),
    "max_connections": (0, None),  # 0: unlimited
    "max_connections_per_client": (0, None),  # 0: only --max-connections
    "idle_timeout_s": (0, None),  # 0: never
    "connect_burst": (1, None),
}


def check_int(name: str, value: int) -> int:
    """``value`` within INT_BOUNDS[name], else ValueError saying the range."""
    low, high = INT_BOUNDS[name]
    if value < low or (high is not None and value > high):
        bounds = f"{low}-{high}" if high is not None else f"at least {low}"
        raise ValueError(f"{value} is out of range ({bounds})")
    return value


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Handshake and dial timers. Not on the command line: tests shorten them."""

    request_line_s: float = limits.REQUEST_LINE_TIMEOUT_S
    headers_s: float = limits.HEADERS_TIMEOUT_S
    socks5_read_s: float = limits.SOCKS5_READ_TIMEOUT_S
    dns_s: float = limits.DNS_TIMEOUT_S
    dial_attempt_s: float = limits.DIAL_ATTEMPT_TIMEOUT_S
    dial_backoff_s: float = limits.DIAL_BACKOFF_INITIAL_S
    handshake_budget_s: float = limits.HANDSHAKE_BUDGET_S


@dataclass(frozen=True, slots=True)
class Settings:
    bind: str = limits.DEFAULT_BIND
    port: int = limits.DEFAULT_PORT
    socks5_bind: str | None = None
    socks5_port: int | None = None
    max_connections: int = limits.DEFAULT_MAX_CONNECTIONS  # 0 = unlimited
    idle_timeout_s: float = limits.DEFAULT_IDLE_TIMEOUT_S  # 0 = off
    allow_ports: tuple[int, ...] = ()
    default_allow_port: bool = True
    deny_cidrs: tuple[str, ...] = ()
    allow_cidrs: tuple[str, ...] = ()
    allow_domains: tuple[str, ...] = ()
    threat_feed_files: tuple[str, ...] = ()
    threat_action: ThreatAction = ThreatAction.WARN
    log_level: str = "info"
    upload_rate: int | Auto = (
        AUTO  # bytes/s, 0 = unlimited, or adaptive (docs/zero-configuration.md)
    )
    download_rate: int | Auto = (
        AUTO  # bytes/s, 0 = unlimited, or adaptive (docs/zero-configuration.md)
    )
    connect_rate: float | Auto = AUTO  # new upstream dials per second, 0 = unlimited
    connect_burst: int | None = None  # None = the rate
    max_connections_wait_s: float = 0.0
    happy_eyeballs_delay_s: float = limits.DEFAULT_HAPPY_EYEBALLS_DELAY_S  # 0 = one by one
    metrics_port: int | None = None
    metrics_bind: str = limits.DEFAULT_METRICS_BIND
    shutdown_grace_s: float = limits.DEFAULT_SHUTDOWN_GRACE_S
    client_allow: tuple[str, ...] = ()  # CIDRs of who may connect; () = the defaults
    auth_file: str | None = None  # htpasswd: users who may connect (docs/house.md)
    max_connections_per_client: int = 0  # one client address's share of the cap; 0: none
    upstreams: tuple[Parent, ...] = ()  # parent proxies, in order (docs/parent-proxies.md)
    no_upstream: tuple[str, ...] = ()  # NO_PROXY entries: targets that go direct
    upstream_fallback: str = "fail"  # when no parent answers: "fail" (502) or "direct"
    timeouts: Timeouts = field(default_factory=Timeouts)

    def __post_init__(self) -> None:
        for name in INT_BOUNDS:
            value = getattr(self, name)
            for item in value if isinstance(value, tuple) else (value,):
                if item is not None:
                    try:
                        check_int(name, item)
                    except ValueError as exc:
                        raise ValueError(f"{name}: {exc}") from None
        if self.log_level not in LOG_LEVELS:
            raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}")

    @property
    def effective_max_connections(self) -> int:
        """The cap after the original's overflow clamp (docs/original.md §3.6); 0 stays
        unlimited."""
        return min(self.max_connections, limits.MAX_CONNECTIONS_CAP)


_BIND_HOST_CHARS: Final = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-"
)


def validate_bind_address(text: str) -> str:
    """``--bind``: an IP literal or a plain host name without port (docs/original.md §1.2)."""
    import ipaddress  # noqa: PLC0415

    value = text.strip()
    if not value:
        raise ConfigError("empty bind address")
    try:
        ipaddress.ip_address(value)
    except ValueError:
        pass
    else:
        return value
    host, colon, port = value.rpartition(":")
    looks_like_socket = value.startswith("[") and "]:" in value
    if looks_like_socket or (
        colon and host and ":" not in host and port.isascii() and port.isdigit()
    ):
        raise ConfigError(
            f"bind address '{value}' must not include a port; use --port / FYNTR_PORT"
        )
    if len(value) > limits.DOMAIN_MAX_LEN:
        raise ConfigError(f"bind address is longer than {limits.DOMAIN_MAX_LEN} characters")
    if not _BIND_HOST_CHARS.issuperset(value):
        raise ConfigError(
            f"bind address '{value}' may only contain ASCII letters, digits, '.' and '-'"
        )
    return value


# --- Parent proxies (docs/parent-proxies.md) ---------------------------------------------
def parents_file(path: str) -> list[Parent]:
    """``--upstream-file``: one parent URL a line; blank lines and ``#`` comments
    skipped. The file holds credentials: one that others may read is refused, as ssh
    refuses such a key. ValueError or OSError with the reason."""
    from fyntr.wire.parent import parse_parent  # noqa: PLC0415  (only with parents)

    with open(path, encoding="utf-8") as file:
        if os.name == "posix" and os.fstat(file.fileno()).st_mode & 0o077:
            raise ValueError("others may read it; chmod 600 it")
        lines = file.read().splitlines()
    parents = []
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if text:
            try:
                parents.append(parse_parent(text))
            except ValueError as exc:
                raise ValueError(f"line {number}: {exc}") from None
    if not parents:
        raise ValueError("no parent proxy URL in it")
    return parents


# The lower case first, as curl and Python read them; ALL_PROXY as curl's last resort.
PARENT_VARIABLES: Final = (
    "https_proxy",
    "HTTPS_PROXY",
    "http_proxy",
    "HTTP_PROXY",
    "all_proxy",
    "ALL_PROXY",
)


def parents_from_env(
    given: tuple[Parent, ...], exceptions: tuple[str, ...], port: int, environ: Mapping[str, str]
) -> tuple[tuple[Parent, ...], tuple[str, ...]]:
    """``--upstream-from-env``: the ``given`` parents first, then those of the proxy
    variables (``PARENT_VARIABLES``), less any that is this fyntr itself (loopback,
    ``port``); the ``exceptions``, then NO_PROXY/no_proxy's. ValueError naming the
    variable."""
    from fyntr.wire.parent import NoProxy, parse_parent  # noqa: PLC0415  (only with parents)

    parents = list(given)
    for name in PARENT_VARIABLES:
        value = environ.get(name, "").strip()
        if not value:
            continue
        try:
            parent = parse_parent(value)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
        itself = parent.loopback and parent.port == port
        if not itself and parent not in parents:
            parents.append(parent)
    direct = list(exceptions)
    for name in ("no_proxy", "NO_PROXY"):
        for entry in (e.strip() for e in environ.get(name, "").split(",")):
            if entry and entry not in direct:
                try:
                    NoProxy((entry,))
                except ValueError as exc:
                    raise ValueError(f"{name}: {exc}") from None
                direct.append(entry)
    return tuple(parents), tuple(direct)
