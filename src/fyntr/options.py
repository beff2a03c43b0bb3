"""The flags: each one's converter, default, help line and ``FYNTR_*`` variable
(``OPTIONS``), read by fyntr.cli. A converter raises ValueError with the reason."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fyntr import limits
from fyntr.config import (
    AUTO,
    LOG_LEVELS,
    check_int,
    or_auto,
    parse_rate_or_auto,
    parse_seconds,
)
from fyntr.errors import ConfigError
from fyntr.policy.rules import parse_cidr
from fyntr.policy.threat import ThreatAction

if TYPE_CHECKING:
    from fyntr.wire.parent import Parent

Convert = Callable[[str], Any]


def _int_range(field: str) -> Convert:
    """A whole number within the range of the Settings field (config.INT_BOUNDS)."""

    def convert(text: str) -> int:
        value = text.strip()
        if not (value.isascii() and value.lstrip("-").isdigit()):
            raise ValueError(f"'{text}' is not a whole number")
        return check_int(field, int(value))

    return convert


def _float_at_least_zero(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"'{text}' is not a number") from None
    if not 0 <= value < float("inf"):
        raise ValueError(f"{text} must be a finite number, 0 or more")
    return value


def _choice(*choices: str, fold: bool = False) -> Convert:
    def convert(text: str) -> str:
        value = text.lower() if fold else text
        if value not in choices:
            raise ValueError(f"'{text}' is not one of {', '.join(choices)}")
        return value

    return convert


def _boolean(text: str) -> bool:
    value = text.strip().lower()
    if value not in ("true", "false", "1", "0"):
        raise ValueError(f"'{text}' is not true or false")
    return value in ("true", "1")


def _parent(text: str) -> Parent:
    from fyntr.wire.parent import parse_parent  # noqa: PLC0415  (only with parents)

    return parse_parent(text)


def _no_proxy_entry(text: str) -> str:
    from fyntr.wire.parent import NoProxy  # noqa: PLC0415  (only with parents)

    NoProxy((text,))
    return text


def _cidr(text: str) -> str:
    try:
        parse_cidr(text)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    return text.strip()


def _threat_action(text: str) -> ThreatAction:
    return ThreatAction(_choice("warn", "block")(text))


@dataclass(frozen=True)
class Option:
    flag: str
    convert: Convert
    default: Any
    help: str
    is_list: bool = False
    is_switch: bool = False
    settings_field: str = ""  # the Settings field, when not named like the flag

    @property
    def field(self) -> str:
        return self.settings_field or self.dest

    @property
    def dest(self) -> str:
        return self.flag[2:].replace("-", "_")

    @property
    def env(self) -> str:
        return "FYNTR_" + self.dest.upper()


OPTIONS = (
    Option("--bind", str, limits.DEFAULT_BIND, "listen address: an IP or a host name"),
    Option(
        "--port",
        _int_range("port"),
        limits.DEFAULT_PORT,
        "HTTP CONNECT and plain HTTP port (0 = any free port)",
    ),
    Option("--socks5-bind", str, None, "SOCKS5 listen address (default: --bind)"),
    Option(
        "--client-allow",
        _cidr,
        (),
        "clients that may connect (default beyond loopback: loopback, RFC 1918, RFC 6598, "
        "link-local and ULA ranges)",
        is_list=True,
    ),
    Option(
        "--auth-file",
        str,
        None,
        "htpasswd file of users (bcrypt: htpasswd -B): clients must authenticate; read "
        "again on SIGHUP",
    ),
    Option(
        "--max-connections-per-client",
        _int_range("max_connections_per_client"),
        0,
        "cap on one client address's handshakes plus tunnels (0 = no cap of its own)",
    ),
    Option("--socks5-port", _int_range("socks5_port"), None, "enable SOCKS5 on this port"),
    Option(
        "--max-connections",
        _int_range("max_connections"),
        limits.DEFAULT_MAX_CONNECTIONS,
        "cap on handshakes plus tunnels (0 = unlimited)",
    ),
    Option(
        "--happy-eyeballs-delay",
        parse_seconds,
        limits.DEFAULT_HAPPY_EYEBALLS_DELAY_S,
        "race a host's addresses, the next one S seconds after the last (RFC 8305); "
        "0 = one after another",
        settings_field="happy_eyeballs_delay_s",
    ),
    Option(
        "--max-connections-wait",
        parse_seconds,
        0.0,
        "at the cap, hold a new connection up to S seconds for a slot",
        settings_field="max_connections_wait_s",
    ),
    Option(
        "--idle-timeout",
        _int_range("idle_timeout_s"),
        limits.DEFAULT_IDLE_TIMEOUT_S,
        "close tunnels idle this many seconds (0 = never)",
        settings_field="idle_timeout_s",
    ),
    Option(
        "--allow-port",
        _int_range("allow_ports"),
        (),
        "destination ports allowed besides 443",
        is_list=True,
        settings_field="allow_ports",
    ),
    Option(
        "--no-default-allow-port", _boolean, False, "do not allow 443 implicitly", is_switch=True
    ),
    Option("--deny-cidr", str, (), "deny these ranges too", True, settings_field="deny_cidrs"),
    Option(
        "--allow-cidr",
        str,
        (),
        "allow these ranges even when denied",
        is_list=True,
        settings_field="allow_cidrs",
    ),
    Option(
        "--allow-domain",
        str,
        (),
        "domains (and subdomains) whose denied DNS answers are dropped, not fatal",
        is_list=True,
        settings_field="allow_domains",
    ),
    Option(
        "--threat-feed-file",
        str,
        (),
        "threat feed files",
        is_list=True,
        settings_field="threat_feed_files",
    ),
    Option("--threat-action", _threat_action, ThreatAction.WARN, "warn or block on a match"),
    Option(
        "--upload-rate",
        parse_rate_or_auto,
        AUTO,
        "aggregate client->upstream RATE, or auto: found from the upstream sockets' RTT "
        "(0 = unlimited)",
    ),
    Option(
        "--download-rate",
        parse_rate_or_auto,
        AUTO,
        "aggregate upstream->client RATE, or auto: found from the upstream sockets' "
        "receive RTT (0 = unlimited)",
    ),
    Option(
        "--connect-rate",
        or_auto(_float_at_least_zero),
        AUTO,
        "new upstream connections per second, or auto: paced only when SYNs are lost "
        "(0 = unlimited)",
    ),
    Option(
        "--connect-burst",
        _int_range("connect_burst"),
        None,
        "bucket size for --connect-rate (default: the rate)",
    ),
    Option(
        "--metrics-port",
        _int_range("metrics_port"),
        None,
        "serve /metrics and /status on this port",
    ),
    Option("--metrics-bind", str, limits.DEFAULT_METRICS_BIND, "metrics listen address"),
    Option(
        "--shutdown-grace",
        parse_seconds,
        limits.DEFAULT_SHUTDOWN_GRACE_S,
        "on SIGTERM/SIGINT let tunnels finish this many seconds",
        settings_field="shutdown_grace_s",
    ),
    Option("--log-level", _choice(*LOG_LEVELS, fold=True), "info", " | ".join(LOG_LEVELS)),
    Option(
        "--upstream",
        _parent,
        (),
        "parent proxies, tried in order: http://[user:pass@]host:port or socks5://...",
        is_list=True,
        settings_field="upstreams",
    ),
    Option(
        "--no-upstream",
        _no_proxy_entry,
        (),
        "targets that go direct, NO_PROXY style: names (and their subdomains), IPs, "
        "CIDRs, optional :port, or *",
        is_list=True,
    ),
    Option(
        "--upstream-fallback",
        _choice("fail", "direct"),
        "fail",
        "when no parent answers: fail (502) or direct",
    ),
    Option(
        "--upstream-file",
        str,
        None,
        "parent proxy URLs, one a line, after --upstream's: credentials off the command line",
    ),
    Option(
        "--upstream-from-env",
        _boolean,
        False,
        "take parents from HTTPS_PROXY, HTTP_PROXY, ALL_PROXY and exceptions from NO_PROXY",
        is_switch=True,
    ),
)
