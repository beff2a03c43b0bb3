"""``fyntr status`` (one screen, then exit) and ``fyntr top`` (live, ``q`` quits): what a
running fyntr is doing, read from its ``/status`` (``--metrics-port`` of that instance).

On a terminal, ``top`` redraws its screen in place and ``q`` quits, with rich's tables
when the ``top`` extra is installed (``pip install 'fyntr[top]'``) and in plain text
otherwise. To a pipe or a log both commands write plain text, without terminal codes.
The proxy itself never imports this module: its memory stays as it was.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

from fyntr import limits
from fyntr.log import format_bytes

Status = dict[str, Any]
SPARK = "▁▂▃▄▅▆▇█"
SPARK_WIDTH = 40  # characters: the last minute of the auto rate, 1.5 s each
REFRESH_S = 1.0
TOP_CLIENTS_SHOWN = 5  # on the clients line: the busiest devices of a house
FETCH_TIMEOUT_S = 2.0


class Unreachable(Exception):
    """Nothing answers on the metrics port: one line for the user, exit 1."""


def fetch(bind: str, port: int) -> Status:
    host = f"[{bind}]" if ":" in bind else bind
    url = f"http://{host}:{port}/status"
    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_S) as reply:
            data: Status = json.load(reply)
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Unreachable(
            f"nothing answers on {host}:{port} ({reason}): is fyntr running with "
            f"--metrics-port {port}? fyntr status and top read its /status"
        ) from None
    return data


def rate_text(value: float | None, unit: str = "/s") -> str:
    return "unlimited" if not value else f"{format_bytes(int(value))}{unit}"


def sparkline(history: list[list[Any]], width: int = SPARK_WIDTH) -> str:
    """The auto rate over the last minute (0 where it was unlimited)."""
    if not history:
        return ""
    rates = [point[1] or 0.0 for point in reversed(history)]  # oldest first
    step = max(1, len(rates) // width)
    buckets = [max(rates[i : i + step]) for i in range(0, len(rates), step)][-width:]
    top = max(buckets)
    if not top:
        return SPARK[0] * len(buckets)
    return "".join(SPARK[min(len(SPARK) - 1, int(v / top * (len(SPARK) - 1)))] for v in buckets)


def direction_line(name: str, info: dict[str, Any]) -> str:
    if not info["auto"]:
        return (
            f"{name:<9}{rate_text(info['rate'])} (fixed)"
            if info["rate"]
            else (f"{name:<9}unlimited")
        )
    if name == "connect":
        rate = "unpaced" if info["rate"] is None else f"paced at {info['rate']:.0f}/s"
        return f"{name:<9}auto: {rate}"
    delay = info.get("queueing_delay_s")
    base = info.get("baseline_rtt_s")
    parts = [
        f"auto {info.get('phase')}: {rate_text(info['rate'])}",
        f"achieved {format_bytes(int(info.get('achieved') or 0))}/s",
        "inflation " + ("n/a" if delay is None else f"{delay * 1000:.1f} ms"),
        "floor " + ("n/a" if base is None else f"{base * 1000:.1f} ms"),
    ]
    return f"{name:<9}" + ", ".join(parts) + f"  {sparkline(info.get('history', []))}"


def flow_rows(status: Status, previous: Status | None, elapsed: float) -> list[list[str]]:
    """target, age, rate up/down, bytes up/down: the rate since the last look (top) or
    over the flow's life (status)."""
    before = {f["flow"]: f for f in (previous or {}).get("top_flows", [])}
    rows = []
    for flow in status["top_flows"]:
        old = before.get(flow["flow"])
        span = elapsed if old else max(flow["age_s"], 1e-3)
        up = flow["up_bytes"] - (old["up_bytes"] if old else 0)
        down = flow["down_bytes"] - (old["down_bytes"] if old else 0)
        rows.append(
            [
                f"flow{flow['flow']}",
                flow["target"],
                f"{flow['age_s']:.0f}s",
                f"{format_bytes(int(up / span))}/s",
                f"{format_bytes(int(down / span))}/s",
                format_bytes(flow["up_bytes"]),
                format_bytes(flow["down_bytes"]),
            ]
        )
    return rows


FLOW_HEADER = ["flow", "target", "age", "up/s", "down/s", "up", "down"]


def summary_lines(status: Status) -> list[str]:
    config = status["config"]
    cap = config["max_connections"] or "unlimited"
    rejected = status["counters"]["rejected"]
    queued = status["queued_bytes"]
    lines = [
        f"fyntr {status['version']}, up {format_duration(status['uptime_s'])}",
        f"tunnels  {status['active_flows']} active ({status['spliced_flows']} spliced), "
        f"{status['pending_handshakes']} pending, cap {cap}, {status['cap_waiters']} waiting "
        f"at the cap, {status['connect_waiters']} waiting to connect",
        f"relayed  up {format_bytes(status['bytes']['up'])}, "
        f"down {format_bytes(status['bytes']['down'])}; queued up "
        f"{format_bytes(queued['up'])}, down {format_bytes(queued['down'])}",
    ]
    lines += [direction_line(name, status["rates"][name]) for name in ("upload", "download")]
    lines.append(direction_line("connect", status["rates"]["connect"]))
    refused = ", ".join(f"{k} {v}" for k, v in sorted(rejected.items())) or "none"
    lines.append(f"refused  {refused}")
    clients = status.get("clients", [])  # an older fyntr reports none
    if clients:
        lines.append(
            "clients  "
            + ", ".join(
                f"{c['client']} {format_bytes(c['up_bytes'] + c['down_bytes'])} "
                f"({c['active']} open)"
                for c in clients[:TOP_CLIENTS_SHOWN]
            )
        )
    return lines


def format_duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def render_text(status: Status, previous: Status | None = None, elapsed: float = 1.0) -> str:
    lines = summary_lines(status)
    rows = flow_rows(status, previous, elapsed)
    if rows:
        table = [FLOW_HEADER, *rows]
        widths = [max(len(r[i]) for r in table) for i in range(len(FLOW_HEADER))]
        lines.append("")
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in table]
    else:
        lines.append("no tunnels")
    return "\n".join(lines)


def render_rich(status: Status, previous: Status | None, elapsed: float) -> Any:
    from rich.console import Group  # noqa: PLC0415  (the top extra)
    from rich.table import Table  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    head = Text("\n".join(summary_lines(status)))
    flows = Table(*FLOW_HEADER, title="top flows", title_justify="left", expand=False)
    for row in flow_rows(status, previous, elapsed):
        flows.add_row(*row)
    return Group(head, flows, Text("q quits", style="dim"))


def rich_available() -> bool:
    try:
        import rich  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def keys() -> Iterator[Any]:
    """stdin in cbreak mode (a key at a time, no echo), restored afterwards."""
    import termios  # noqa: PLC0415  (POSIX terminals only)
    import tty  # noqa: PLC0415

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    try:
        yield fd
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def quit_pressed(fd: int, timeout: float) -> bool:
    ready, _, _ = select.select([fd], [], [], timeout)
    return bool(ready) and os.read(fd, 1) in (b"q", b"Q")


def run_top(bind: str, port: int) -> int:
    if not (sys.stdout.isatty() and sys.stdin.isatty()):
        previous, last = None, time.monotonic()
        while True:  # a pipe or a log: plain text, a screen a second, until interrupted
            status = fetch(bind, port)
            now = time.monotonic()
            print(render_text(status, previous, now - last) + "\n", flush=True)
            previous, last = status, now
            time.sleep(REFRESH_S)
    status = fetch(bind, port)
    previous, last = None, time.monotonic()
    with keys() as fd, screen() as show:
        show(status, None, 1.0)
        while not quit_pressed(fd, REFRESH_S):
            previous, status = status, fetch(bind, port)
            now = time.monotonic()
            show(status, previous, now - last)
            last = now
    return 0


Show = Callable[[Status, Status | None, float], None]
# Home, then erase the screen (ECMA-48 CUP and ED): each refresh replaces the last.
REDRAW = "\x1b[H\x1b[2J"


@contextlib.contextmanager
def screen() -> Iterator[Show]:
    """A terminal screen redrawn in place: rich's tables with the top extra, else the
    plain text under a clear-screen code (any terminal since the VT100 has it)."""
    if rich_available():
        from rich.live import Live  # noqa: PLC0415

        with Live(auto_refresh=False) as live:
            yield lambda status, previous, elapsed: live.update(
                render_rich(status, previous, elapsed), refresh=True
            )
        return

    def redraw(status: Status, previous: Status | None, elapsed: float) -> None:
        text = render_text(status, previous, elapsed)
        sys.stdout.write(f"{REDRAW}{text}\n\nq quits\n")
        sys.stdout.flush()

    yield redraw


def run_status(bind: str, port: int) -> int:
    status = fetch(bind, port)
    if sys.stdout.isatty() and rich_available():
        from rich.console import Console  # noqa: PLC0415

        Console().print(render_rich(status, None, 1.0))
    else:
        print(render_text(status))
    return 0


def main(command: str, argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog=f"fyntr {command}",
        description="Show what a running fyntr is doing, from its /status.",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=os.environ.get("FYNTR_METRICS_PORT"),
        help="the --metrics-port the fyntr to watch was started with (FYNTR_METRICS_PORT)",
    )
    parser.add_argument(
        "--metrics-bind",
        default=os.environ.get("FYNTR_METRICS_BIND", limits.DEFAULT_METRICS_BIND),
        help="its --metrics-bind (default 127.0.0.1)",
    )
    args = parser.parse_args(argv)
    if args.metrics_port is None:
        print(
            f"fyntr {command}: error: give the --metrics-port the running fyntr was started "
            "with (or FYNTR_METRICS_PORT); fyntr serves /status only with --metrics-port",
            file=sys.stderr,
        )
        return 2
    try:
        port = int(args.metrics_port)
        return (
            run_top(args.metrics_bind, port)
            if command == "top"
            else run_status(args.metrics_bind, port)
        )
    except Unreachable as exc:
        print(f"fyntr {command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
