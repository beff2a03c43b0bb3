"""Flags and FYNTR_* variables -> Settings; error messages and exit codes.

Flag beats variable beats default. List flags take repeats and comma lists. A bad value
is one line naming the flag and the value, exit 2; a fatal start-up error is one line,
exit 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import os
import sys
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, NoReturn

from fyntr import limits
from fyntr._version import __version__
from fyntr.config import (
    AUTO,
    LOG_LEVELS,
    Settings,
    check_int,
    or_auto,
    parse_rate_or_auto,
    parse_seconds,
)
from fyntr.errors import ConfigError
from fyntr.log import setup_logging
from fyntr.policy.threat import ThreatAction

if TYPE_CHECKING:
    from fyntr.wire.parent import Parent

PROG = "fyntr"

# argparse, not click: click costs 1.7 MB of RSS against argparse's 0.4 MB (measured on
# Python 3.11 after asyncio and uvloop), a third of what an idle fyntr may use on top of
# the interpreter (the idle budget: 24 MiB). The environment layer is the small part below.

Convert = Callable[[str], Any]


class UsageError(Exception):
    """A bad flag or variable: one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


@functools.cache
def _columns() -> int:
    """What shutil.get_terminal_size() answers: $COLUMNS, the terminal, or 80."""
    with contextlib.suppress(KeyError, ValueError):
        return int(os.environ["COLUMNS"])
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns
    except (AttributeError, OSError, ValueError):  # no stdout, or not a terminal
        return 80


class _Formatter(argparse.HelpFormatter):
    """Without a width, argparse imports shutil to ask for one, on every add_argument,
    and shutil brings bz2, lzma and zlib: 0.6 MB of RSS (the idle budget: 24 MiB)."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=_columns() - 2)


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

DESCRIPTION = (
    "A forward proxy that tames bursts of outbound TLS connections: HTTP CONNECT, plain "
    "HTTP (http_proxy) and optional SOCKS5, Deficit Round-Robin scheduling, connection "
    "caps and pacing. Every flag has a FYNTR_<FLAG> variable; the flag wins over the "
    "variable, the variable over the default. List flags take repeats and comma lists. "
    "RATE: bytes/s, or a number with kbit mbit gbit kb mb gb kib mib gib (optional /s). "
    "'fyntr status' and 'fyntr top --metrics-port PORT' show what a running fyntr is doing; "
    "'fyntr run [flags] -- COMMAND' runs a command through a fyntr of its own."
)


def _parser() -> _Parser:
    parser = _Parser(
        prog=PROG,
        description=DESCRIPTION,
        add_help=False,
        allow_abbrev=False,
        formatter_class=_Formatter,
    )
    parser.add_argument("-h", "--help", action="store_true", help="show this help and exit")
    parser.add_argument("-V", "--version", action="store_true", help="show the version")
    for opt in OPTIONS:
        default = getattr(opt.default, "value", opt.default)
        shown = "" if default in (None, ()) else f", default {default}"
        text = f"{opt.help} [{opt.env}{shown}]"
        if opt.is_switch:
            parser.add_argument(opt.flag, action="store_const", const=True, default=None, help=text)
        elif opt.is_list:
            parser.add_argument(opt.flag, action="append", default=None, metavar="LIST", help=text)
        else:
            parser.add_argument(opt.flag, default=None, metavar=opt.dest.upper(), help=text)
    return parser


def _value(opt: Option, given: Any, environ: Mapping[str, str]) -> Any:
    """Flag beats variable beats default; lists are split on commas either way."""
    if given is not None:
        source, raw = opt.flag, given
    elif opt.env in environ:
        source, raw = f"{opt.flag} (from {opt.env})", environ[opt.env]
    else:
        return opt.default
    if opt.is_switch and given is not None:
        return True
    texts = raw if isinstance(raw, list) else [raw]
    items = [i.strip() for t in texts for i in t.split(",")] if opt.is_list else texts
    values = []
    for item in items:
        if opt.is_list and not item:
            continue
        try:
            values.append(opt.convert(item))
        except ValueError as exc:
            raise UsageError(f"invalid value for {source}: {exc}") from None
    return tuple(values) if opt.is_list else values[0]


def parse_args(argv: list[str], environ: Mapping[str, str] | None = None) -> Settings | int:
    """Settings, or the exit status when there is nothing to run (help, version, error)."""
    environ = os.environ if environ is None else environ
    parser = _parser()
    try:
        ns = vars(parser.parse_args(argv))
        if ns["help"]:
            parser.print_help()
            return 0
        if ns["version"]:
            print(f"{PROG} {__version__}")
            return 0
        v = {opt.dest: _value(opt, ns[opt.dest], environ) for opt in OPTIONS}
    except UsageError as exc:
        message = " ".join(str(exc).split())
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2
    fields = {opt.field: v[opt.dest] for opt in OPTIONS}
    fields["default_allow_port"] = not fields.pop("no_default_allow_port")
    if (path := fields.pop("upstream_file")) is not None:
        try:
            fields["upstreams"] = (*fields["upstreams"], *_parents_file(path))
        except (OSError, ValueError) as exc:
            print(f"{PROG}: error: --upstream-file {path}: {exc}", file=sys.stderr)
            return 2
    if fields.pop("upstream_from_env"):
        try:
            fields["upstreams"], fields["no_upstream"] = _from_env(fields, environ)
        except ValueError as exc:
            print(f"{PROG}: error: --upstream-from-env: {exc}", file=sys.stderr)
            return 2
    return Settings(**fields)


def _parents_file(path: str) -> list[Parent]:
    """One parent URL a line; blank lines and ``#`` comments skipped. The file holds
    credentials: one that others may read is refused, as ssh refuses such a key."""
    from fyntr.wire.parent import parse_parent  # noqa: PLC0415

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


def _from_env(
    fields: dict[str, Any], environ: Mapping[str, str]
) -> tuple[tuple[Parent, ...], tuple[str, ...]]:
    """The parents of ``--upstream`` first, then those of the proxy variables
    (``PARENT_VARIABLES``), less any that is this fyntr itself; the exceptions of
    ``--no-upstream`` and NO_PROXY/no_proxy."""
    from fyntr.wire.parent import NoProxy, parse_parent  # noqa: PLC0415

    parents: list[Parent] = list(fields["upstreams"])
    for name in PARENT_VARIABLES:
        value = environ.get(name, "").strip()
        if not value:
            continue
        try:
            parent = parse_parent(value)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
        itself = parent.loopback and parent.port == fields["port"]
        if not itself and parent not in parents:
            parents.append(parent)
    exceptions = list(fields["no_upstream"])
    for name in ("no_proxy", "NO_PROXY"):
        for entry in environ.get(name, "").split(","):
            if entry.strip() and entry.strip() not in exceptions:
                try:
                    NoProxy((entry,))
                except ValueError as exc:
                    raise ValueError(f"{name}: {exc}") from None
                exceptions.append(entry.strip())
    return tuple(parents), tuple(exceptions)


async def serve(settings: Settings) -> int:
    from fyntr.net.server import Server  # noqa: PLC0415

    server = Server(settings)
    try:
        await server.start(signals=True)
        gc.collect()
        gc.freeze()  # start-up objects never die: keep the collector from rescanning them
        return await server.serve()
    finally:
        server.remove_signal_handlers()


def run(settings: Settings, work: Callable[[Settings], Coroutine[Any, Any, int]] = serve) -> int:
    """``work`` on the loop (uvloop where installed) with logging set up: the proxy, or
    the proxy and a command (fyntr run)."""
    setup_logging(settings.log_level)
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        runner: Any = asyncio.run
    else:
        runner = uvloop.run
    try:
        return int(runner(work(settings)))
    except ConfigError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1


VIEWS = ("status", "top")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in VIEWS:  # fyntr status / fyntr top: a client of /status
        from fyntr.top import main as view  # noqa: PLC0415  (never in the proxy)

        return view(args[0], args[1:])
    if args and args[0] == "run":  # fyntr run [flags] -- COMMAND: fyntr for one command
        from fyntr.launch import main as launch  # noqa: PLC0415

        return launch(args[1:], parse_args, run)
    parsed = parse_args(args)
    if isinstance(parsed, int):
        return parsed
    return run(parsed)
