"""Logging set-up: one line per event to stderr, ``flow<N>:`` prefix, key=value fields."""

from __future__ import annotations

import asyncio
import logging
import sys
import time

LOGGER_NAME = "fyntr"
log = logging.getLogger(LOGGER_NAME)


class _Formatter(logging.Formatter):
    """``[2026-07-05T12:00:00Z INFO  fyntr] message``: env_logger's shape, UTC, WARN.
    The stamp is made once a second: strftime was a sixth of a tunnel's logging; so is
    the head of fyntr's own lines per level: a line took 0.47 us to make, 0.25 now."""

    def __init__(self) -> None:
        super().__init__()
        self.second = -1
        self.stamp = ""
        self.heads: dict[int, str] = {}  # level -> the head of fyntr's lines this second

    def format(self, record: logging.LogRecord) -> str:
        return self.line(record.levelno, record.getMessage(), record.created, record.name)

    def line(self, level: int, text: str, created: float, name: str = LOGGER_NAME) -> str:
        second = int(created)
        if second != self.second:
            self.second = second
            self.stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))
            self.heads.clear()
        if name == LOGGER_NAME:
            head = self.heads.get(level)
            if head is None:
                head = self.heads[level] = self._head(level, name)
            return head + text
        return self._head(level, name) + text

    def _head(self, level: int, name: str) -> str:
        word = "WARN" if level == logging.WARNING else logging.getLevelName(level)
        return f"[{self.stamp} {word:<5} {name}] "


class _TurnHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The lines of one turn of the event loop go out in one write: a tunnel logs four
    (accepted, CONNECT, connected, closed), and a write(2) each cost a fifth of the
    set-up rate at the default level (benchmarks/run.py ``setups``). A WARNING or worse
    is written at once with what came before it; so is everything while no loop is
    attached (start-up, shutdown), and ``flush`` runs at exit (logging.shutdown)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.lines: list[str] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.scheduled = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # logging's own contract: report, never raise
            self.handleError(record)
            return
        self.add(record.levelno, text)

    def add(self, level: int, text: str) -> None:
        self.lines.append(text)
        loop = self.loop
        if level >= logging.WARNING or loop is None or loop.is_closed():
            self.flush()
        elif not self.scheduled:
            self.scheduled = True
            loop.call_soon(self.flush)

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self.scheduled = False
            if self.lines:
                text = "\n".join(self.lines) + "\n"
                self.lines.clear()
                self.stream.write(text)
                self.stream.flush()


_formatter = _Formatter()
_handler = _TurnHandler()
_handler.setFormatter(_formatter)
_direct = False  # fyntr's handler alone takes its lines (setup_logging): line() may skip logging


def setup_logging(level: str) -> None:
    global _direct  # noqa: PLW0603  (set once, at start)
    # No process, thread or caller lookups per record: the lines show none of them, and
    # the process field alone was a getpid(2) per record. (_srcfile None: no findCaller.)
    logging.logProcesses = logging.logThreads = logging.logMultiprocessing = False
    logging._srcfile = None
    log.handlers[:] = [_handler]
    log.setLevel(level.upper())
    log.propagate = False
    _direct = True


def line(level: int, msg: str, *args: object) -> None:
    """A line of the hot path (a tunnel's four, a request's two), as ``log.log`` would
    write it but without a LogRecord: making one was most of what logging cost a kept
    request (benchmarks/instructions.py). Through the logging module while other
    handlers take fyntr's lines (tests that capture them)."""
    if not log.isEnabledFor(level):
        return
    if not _direct:
        log.log(level, msg, *args)
        return
    _handler.add(level, _formatter.line(level, msg % args if args else msg, time.time()))


def attach_loop(loop: asyncio.AbstractEventLoop | None) -> None:
    """Batch the lines per turn of ``loop`` from now on; None: write each at once again
    (after flushing what waits)."""
    _handler.flush()
    _handler.loop = loop


def format_bytes(n: float) -> str:
    """Decimal units as docs/original.md §3.5: ``2.00 KB``, ``512 B``."""
    for factor, unit in ((1e9, "GB"), (1e6, "MB"), (1e3, "KB")):
        if n >= factor:
            return f"{n / factor:.2f} {unit}"
    return f"{int(n)} B"
