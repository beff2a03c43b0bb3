"""Giving memory back to the system once a load is over.

A burst leaves the heap fragmented: relayed chunks (up to 256 KiB each) are ``bytes``
that CPython allocates with malloc, and glibc raises its mmap threshold after the first
large free, so later chunks come from the heap, whose free pages glibc keeps. The attack
run's soak (benchmarks/attack.py) left fyntr at 46 MiB with no client left, from 24 MiB
idle. ``malloc_trim(0)`` hands the free pages back (madvise), once, when the proxy goes
idle after traffic: it costs a few milliseconds and nothing while tunnels are open.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable

_trim: Callable[[int], int] | None = None
_loaded = False


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, loaded on first use (ctypes costs 0.7 MiB of RSS): None
    where there is no glibc (macOS, Windows, musl has a no-op)."""
    global _trim, _loaded  # noqa: PLW0603  (a lazily loaded library handle)
    if not _loaded:
        _loaded = True
        if sys.platform.startswith("linux"):
            import ctypes  # noqa: PLC0415

            try:
                _trim = ctypes.CDLL("libc.so.6").malloc_trim
            except (OSError, AttributeError):
                _trim = None
    return _trim


def release_memory() -> None:
    """Collect cycles, then hand free heap pages back to the system."""
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
