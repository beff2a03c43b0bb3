"""What not every platform has, and what stands in for it (the original runs on Linux,
macOS and Windows): each piece is optional at import and at run time, and the stand-ins
in use are named in one log line at start-up.

* uvloop: the standard asyncio loop (cli.py picks the loop);
* ``os.splice``: bulk tunnels stay on the loop's transports (net/relay/splice.py);
* ``loop.add_signal_handler`` (missing on Windows' loops, refused off the main thread):
  ``signal.signal`` with a handler that wakes the loop;
* ``resource`` (POSIX): no FD limit step;
* ``TCP_INFO`` / ``TCP_CONNECTION_INFO``: the auto rates mean unlimited (net/kernel/tcpinfo.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from types import FrameType, ModuleType
from typing import Any

from fyntr.net.kernel import tcpinfo
from fyntr.net.relay import splice

resource: ModuleType | None
try:
    import resource
except ImportError:  # Windows
    resource = None

SignalHandler = Callable[[int, FrameType | None], Any] | int | None


def fallbacks(loop: asyncio.AbstractEventLoop, signals_on_loop: bool) -> list[str]:
    """The stand-ins in use, for the start-up line."""
    out = []
    if not type(loop).__module__.startswith("uvloop"):
        out.append("no uvloop: the asyncio event loop")
    if not splice.AVAILABLE:
        out.append("no splice(): bulk tunnels stay on the transports")
    if not signals_on_loop:
        out.append("no loop signal handlers: signal.signal, waking the loop")
    if resource is None:
        out.append("no resource module: the FD limit is left as it is")
    if not tcpinfo.AVAILABLE:
        out.append("no TCP_INFO: upload, download and connect auto mean unlimited")
    return out


class Signals:
    """Signal handlers for the proxy's lifetime; the previous ones come back after."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._previous: dict[int, SignalHandler] = {}
        self._on_loop: set[int] = set()
        self.on_loop = True  # every handler went through loop.add_signal_handler

    def add(self, sig: int, callback: Callable[..., object], *args: object) -> None:
        self._previous[sig] = signal.getsignal(sig)
        try:
            self._loop.add_signal_handler(sig, callback, *args)
        except (NotImplementedError, RuntimeError, AttributeError):
            self.on_loop = False
            loop = self._loop

            def wake(_signum: int, _frame: FrameType | None) -> None:
                loop.call_soon_threadsafe(callback, *args)

            signal.signal(sig, wake)
        else:
            self._on_loop.add(sig)

    def restore(self) -> None:
        for sig, previous in self._previous.items():
            if sig in self._on_loop:
                self._loop.remove_signal_handler(sig)
            with contextlib.suppress(TypeError, ValueError, OSError):
                signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()
        self._on_loop.clear()
