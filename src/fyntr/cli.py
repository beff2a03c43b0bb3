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
from typing import Any, NoReturn

from fyntr._version import __version__
from fyntr.config import Settings, parents_file, parents_from_env
from fyntr.errors import ConfigError
from fyntr.limits import DEFAULT_PORT
from fyntr.log import setup_logging
from fyntr.options import OPTIONS, Option

PROG = "fyntr"

# argparse, not click: click costs 1.7 MB of RSS against argparse's 0.4 MB (measured on
# Python 3.11 after asyncio and uvloop), a third of what an idle fyntr may use on top of
# the interpreter (the idle budget: 24 MiB). The environment layer is the small part below.


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
            fields["upstreams"] = (*fields["upstreams"], *parents_file(path))
        except (OSError, ValueError) as exc:
            print(f"{PROG}: error: --upstream-file {path}: {exc}", file=sys.stderr)
            return 2
    if fields.pop("upstream_from_env"):
        try:
            fields["upstreams"], fields["no_upstream"] = parents_from_env(
                fields["upstreams"], fields["no_upstream"], fields["port"], environ
            )
        except ValueError as exc:
            print(f"{PROG}: error: --upstream-from-env: {exc}", file=sys.stderr)
            return 2
    return Settings(**fields)


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


def print_pac(args: list[str]) -> int:
    """The file fyntr serves at /proxy.pac, for a fyntr at HOST:PORT (default this
    machine's loopback and the default port): to host it elsewhere, or to read it."""
    from fyntr.errors import TargetError  # noqa: PLC0415  (fyntr pac only)
    from fyntr.wire.pac import pac_file  # noqa: PLC0415
    from fyntr.wire.target import parse_request_target  # noqa: PLC0415

    if len(args) > 1 or args[:1] in (["-h"], ["--help"]):
        print(f"usage: {PROG} pac [HOST:PORT]", file=sys.stderr if len(args) > 1 else sys.stdout)
        return 2 if len(args) > 1 else 0
    address = args[0] if args else f"127.0.0.1:{DEFAULT_PORT}"
    try:
        parse_request_target(address)
    except TargetError as exc:
        print(f"{PROG} pac: error: '{address}' is not HOST:PORT: {exc}", file=sys.stderr)
        return 2
    print(pac_file(address), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in VIEWS:  # fyntr status / fyntr top: a client of /status
        from fyntr.top import main as view  # noqa: PLC0415  (never in the proxy)

        return view(args[0], args[1:])
    if args and args[0] == "pac":  # fyntr pac [HOST:PORT]: the auto-configuration file
        return print_pac(args[1:])
    if args and args[0] == "run":  # fyntr run [flags] -- COMMAND: fyntr for one command
        from fyntr.launch import main as launch  # noqa: PLC0415

        return launch(args[1:], parse_args, run)
    parsed = parse_args(args)
    if isinstance(parsed, int):
        return parsed
    return run(parsed)
