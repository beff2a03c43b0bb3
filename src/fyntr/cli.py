"""Flags and FYNTR_* variables -> Settings; error messages and exit codes.

Flag beats variable beats default. List flags take repeats and comma lists. A bad value
is one line naming the flag and the value, exit 2; a fatal start-up error is one line,
exit 1.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from fyntr import limits
from fyntr._version import __version__
from fyntr.config import LOG_LEVELS, Settings, parse_rate, parse_seconds
from fyntr.errors import ConfigError
from fyntr.log import setup_logging
from fyntr.policy.threat import ThreatAction

PROG = "fyntr"


_PORT = click.IntRange(0, limits.PORT_MAX)

FC = TypeVar("FC", bound=Callable[..., Any])


def _opt(name: str, **kwargs: Any) -> Callable[[FC], FC]:
    env = "FYNTR_" + name.lstrip("-").replace("-", "_").upper()
    return click.option(name, envvar=env, show_envvar=True, **kwargs)


def _items(values: tuple[str, ...]) -> list[str]:
    """Repeats and comma lists (flag or variable) -> items; blanks between commas dropped."""
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def _list(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(_items(values))


def _ports(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[int, ...]:
    ports = []
    for item in _items(values):
        if not (item.isascii() and item.isdigit() and 1 <= int(item) <= limits.PORT_MAX):
            raise click.BadParameter(f"'{item}' is not a port number 1-{limits.PORT_MAX}")
        ports.append(int(item))
    return tuple(ports)


def _rate(ctx: click.Context, param: click.Parameter, value: str) -> int:
    try:
        return parse_rate(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _seconds(ctx: click.Context, param: click.Parameter, value: str) -> float:
    try:
        return parse_seconds(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command(
    name=PROG,
    help="A forward proxy that tames bursts of outbound TLS connections: HTTP CONNECT "
    "(and optional SOCKS5), Deficit Round-Robin scheduling, connection caps and pacing.",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(
    __version__, "-V", "--version", prog_name=PROG, message="%(prog)s %(version)s"
)
@_opt("--bind", default=limits.DEFAULT_BIND, show_default=True, help="Listen address (IP or name).")
@_opt(
    "--port",
    type=_PORT,
    default=limits.DEFAULT_PORT,
    show_default=True,
    help="HTTP CONNECT port (0 = any).",
)
@_opt("--socks5-bind", default=None, help="SOCKS5 listen address [default: --bind].")
@_opt("--socks5-port", type=_PORT, default=None, help="Enable SOCKS5 on this port.")
@_opt(
    "--max-connections",
    type=click.IntRange(min=0),
    default=limits.DEFAULT_MAX_CONNECTIONS,
    show_default=True,
    help="Cap on handshakes plus tunnels (0 = unlimited).",
)
@_opt(
    "--idle-timeout",
    type=click.IntRange(min=0),
    default=limits.DEFAULT_IDLE_TIMEOUT_S,
    show_default=True,
    help="Close tunnels idle this many seconds (0 = never).",
)
@_opt(
    "--allow-port",
    multiple=True,
    callback=_ports,
    help="Destination ports allowed besides 443 (repeat or comma list).",
)
@_opt("--no-default-allow-port", is_flag=True, default=False, help="Do not allow 443 implicitly.")
@_opt(
    "--deny-cidr",
    multiple=True,
    callback=_list,
    help="Deny these ranges too (added to the built-in list).",
)
@_opt("--allow-cidr", multiple=True, callback=_list, help="Allow these ranges even when denied.")
@_opt(
    "--allow-domain",
    multiple=True,
    callback=_list,
    help="Domains (and subdomains) whose denied addresses are dropped, not fatal.",
)
@_opt(
    "--threat-feed-file",
    multiple=True,
    callback=_list,
    help="Threat feed files: domains, IPs, AdGuard ||host^ rules.",
)
@_opt(
    "--threat-action",
    type=click.Choice(["warn", "block"]),
    default="warn",
    show_default=True,
    help="What a threat-feed match does.",
)
@_opt(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="info",
    show_default=True,
    help="Log verbosity.",
)
@_opt(
    "--upload-rate",
    default="0",
    callback=_rate,
    show_default=True,
    help="Aggregate client->upstream rate, e.g. 18mbit (0 = unlimited).",
)
@_opt(
    "--download-rate",
    default="0",
    callback=_rate,
    show_default=True,
    help="Aggregate upstream->client rate (0 = unlimited).",
)
@_opt(
    "--connect-rate",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="New upstream connections per second (0 = unlimited).",
)
@_opt(
    "--connect-burst",
    type=click.IntRange(min=1),
    default=None,
    help="Bucket size for --connect-rate [default: the rate].",
)
@_opt(
    "--max-connections-wait",
    callback=_seconds,
    default="0",
    show_default=True,
    help="At the cap, hold a new connection up to this long for a slot.",
)
@_opt("--metrics-port", type=_PORT, default=None, help="Serve /metrics and /status on this port.")
@_opt(
    "--metrics-bind",
    default=limits.DEFAULT_METRICS_BIND,
    show_default=True,
    help="Metrics listen address.",
)
@_opt(
    "--shutdown-grace",
    callback=_seconds,
    default=str(limits.DEFAULT_SHUTDOWN_GRACE_S),
    show_default=True,
    help="On SIGTERM/SIGINT, let tunnels finish this long.",
)
def command(**opts: Any) -> Settings:
    return Settings(
        bind=opts["bind"],
        port=opts["port"],
        socks5_bind=opts["socks5_bind"],
        socks5_port=opts["socks5_port"],
        max_connections=opts["max_connections"],
        idle_timeout_s=opts["idle_timeout"],
        allow_ports=opts["allow_port"],
        default_allow_port=not opts["no_default_allow_port"],
        deny_cidrs=opts["deny_cidr"],
        allow_cidrs=opts["allow_cidr"],
        allow_domains=opts["allow_domain"],
        threat_feed_files=opts["threat_feed_file"],
        threat_action=ThreatAction(opts["threat_action"]),
        log_level=opts["log_level"].lower(),
        upload_rate=opts["upload_rate"],
        download_rate=opts["download_rate"],
        connect_rate=opts["connect_rate"],
        connect_burst=opts["connect_burst"],
        max_connections_wait_s=opts["max_connections_wait"],
        metrics_port=opts["metrics_port"],
        metrics_bind=opts["metrics_bind"],
        shutdown_grace_s=opts["shutdown_grace"],
    )


def parse_args(argv: list[str]) -> Settings | int:
    """Settings, or the exit status when there is nothing to run (help, version, error)."""
    try:
        result = command.main(argv, prog_name=PROG, standalone_mode=False)
    except click.UsageError as exc:
        message = " ".join(exc.format_message().split())
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2
    except click.Abort:
        return 130
    if isinstance(result, Settings):
        return result
    return int(result or 0)


async def serve(settings: Settings) -> int:
    from fyntr.net.server import Server  # noqa: PLC0415

    server = Server(settings)
    try:
        await server.start(signals=True)
        return await server.serve()
    finally:
        server.remove_signal_handlers()


def run(settings: Settings) -> int:
    setup_logging(settings.log_level)
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        runner: Any = asyncio.run
    else:
        runner = uvloop.run
    try:
        return int(runner(serve(settings)))
    except ConfigError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    parsed = parse_args(sys.argv[1:] if argv is None else argv)
    if isinstance(parsed, int):
        return parsed
    return run(parsed)
