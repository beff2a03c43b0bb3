"""``fyntr run [fyntr flags] [--node] -- COMMAND ...``: fyntr for one command.

fyntr starts in this process on a free loopback port; the command runs with the proxy
variables every tool reads in one spelling or another (docs/fyntr-run.md): ``HTTPS_PROXY``,
``HTTP_PROXY`` and their lower-case forms, ``NO_PROXY``/``no_proxy`` as inherited plus
the loopback names, and with ``--node`` ``NODE_USE_ENV_PROXY=1``. When the command ends,
fyntr drains what is still open and exits with the command's status (128 + N when a
signal N ended it).

Signals: SIGTERM, SIGHUP, SIGUSR1 and SIGUSR2 sent to fyntr are passed to the command.
SIGINT and SIGQUIT are not: a terminal sends them to its whole foreground process group,
the command included, and a second SIGINT is a forced exit to tools like Terraform.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import replace
from typing import Any

from fyntr.config import PARENT_VARIABLES, Settings
from fyntr.errors import ConfigError

PROG = "fyntr run"
USAGE = f"usage: {PROG} [fyntr flags] [--node] -- COMMAND [ARG ...]"
HELP = f"""{USAGE}

Runs COMMAND with HTTPS_PROXY, HTTP_PROXY and their lower-case forms set to a fyntr of
its own on a free loopback port, and NO_PROXY/no_proxy as inherited plus localhost,
127.0.0.1 and ::1. --node also sets NODE_USE_ENV_PROXY=1 (Node's fetch). Any fyntr flag
but --port and --bind may come before --; fyntr logs warnings only unless --log-level
says otherwise. SIGTERM and SIGHUP go on to the command; the exit status is the
command's. A proxy already set in the environment (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY,
either case) becomes fyntr's parent proxy, and the inherited NO_PROXY its exceptions."""
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
PASSED_ON = ("SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2")
LEFT_TO_THE_TERMINAL = ("SIGINT", "SIGQUIT")
CHOSEN_HERE = ("--port", "--bind")  # a free loopback port, always


class RunError(Exception):
    """A reason not to run the command, said in one line before it would start."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


def split_command(args: list[str]) -> tuple[list[str], bool, list[str]]:
    """fyntr's flags, whether ``--node`` was given, and the command after ``--``."""
    if "--" not in args:
        raise RunError(f"give the command after --\n{USAGE}")
    at = args.index("--")
    flags, command = args[:at], args[at + 1 :]
    if not command:
        raise RunError(f"no command after --\n{USAGE}")
    for flag in flags:
        name = flag.partition("=")[0]
        if name in CHOSEN_HERE:
            raise RunError(f"{name}: fyntr run listens on a free loopback port")
    node = "--node" in flags
    return [f for f in flags if f != "--node"], node, command


def inherits_a_proxy(environ: Mapping[str, str]) -> bool:
    """A proxy already set in the environment: the one the command was meant to use. It
    becomes fyntr's parent (``--upstream-from-env``), and NO_PROXY its exceptions."""
    return any(environ.get(k, "").strip() for k in PARENT_VARIABLES)


def command_environment(environ: Mapping[str, str], port: int, *, node: bool) -> dict[str, str]:
    """What the command runs with: the proxy variables set to fyntr, loopback exempt."""
    url = f"http://127.0.0.1:{port}"
    env = dict(environ)
    env.update(dict.fromkeys(PROXY_VARIABLES, url))
    exempt: list[str] = []
    for key in ("NO_PROXY", "no_proxy"):
        for name in environ.get(key, "").split(","):
            if name.strip() and name.strip() not in exempt:
                exempt.append(name.strip())
    exempt += [name for name in LOOPBACK_NAMES if name not in exempt]
    env["NO_PROXY"] = env["no_proxy"] = ",".join(exempt)
    if node:
        env["NODE_USE_ENV_PROXY"] = "1"
    return env


def exit_status(returncode: int) -> int:
    """A shell's way: a command a signal ended exits 128 + the signal's number."""
    return 128 - returncode if returncode < 0 else returncode


async def run_command(settings: Settings, command: list[str], *, node: bool) -> int:
    from fyntr.net.server import Server  # noqa: PLC0415  (the proxy's modules, on demand)

    server = Server(replace(settings, bind="127.0.0.1", port=0, socks5_port=None))
    try:
        await server.start()
    except ConfigError as exc:
        print(f"{PROG}: error: fyntr did not start: {exc}", file=sys.stderr)
        return 1
    serving = asyncio.ensure_future(server.serve())
    env = command_environment(os.environ, server.addresses[0][1], node=node)
    try:
        child = await asyncio.create_subprocess_exec(*command, env=env)
    except OSError as exc:
        print(f"{PROG}: error: {command[0]}: {exc.strerror or exc}", file=sys.stderr)
        status = 127  # as a shell says of a command it cannot run
    else:
        with _signals_to(child):
            status = exit_status(await child.wait())
    await server.shutdown()  # what the command left open drains, up to the grace
    await serving
    return status


@contextlib.contextmanager
def _signals_to(child: asyncio.subprocess.Process) -> Iterator[None]:
    """While the command runs: pass the supervisor's signals on, leave the terminal's."""
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for name in (*PASSED_ON, *LEFT_TO_THE_TERMINAL):
        sig = getattr(signal, name, None)
        if sig is None:  # Windows has few of them
            continue
        if name in PASSED_ON:
            loop.add_signal_handler(sig, _pass_on, child, sig)
        else:
            loop.add_signal_handler(sig, lambda: None)
        installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def _pass_on(child: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        child.send_signal(sig)


def main(
    args: list[str],
    parse: Callable[[list[str]], Settings | int],
    run: Callable[[Settings, Callable[[Settings], Coroutine[Any, Any, int]]], int],
) -> int:
    """``parse`` and ``run``: the CLI's flag parser and loop runner (fyntr.cli)."""
    if args[:1] in (["-h"], ["--help"]):
        print(HELP)
        return 0
    try:
        flags, node, command = split_command(args)
    except RunError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.status
    # The command's output is the user's: fyntr says only warnings unless asked for more.
    quiet = "--log-level" not in flags and "FYNTR_LOG_LEVEL" not in os.environ
    if inherits_a_proxy(os.environ):
        flags = [*flags, "--upstream-from-env"]
    settings = parse([*flags, "--log-level", "warning"] if quiet else flags)
    if isinstance(settings, int):
        return settings
    return run(settings, functools.partial(run_command, command=command, node=node))
