"""Socket options fyntr sets on the loop's transports and on the sockets it splices."""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import struct
import sys
from collections.abc import Callable, Sized
from types import ModuleType
from typing import Final, cast

from fyntr.limits import HIGH_WATERMARK_BYTES, LOW_WATERMARK_BYTES

fcntl: ModuleType | None
try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

_LINGER_RST: Final = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a RST
# SIOCOUTQNSD (linux/sockios.h): the bytes a TCP socket holds that it has not sent yet.
_SIOCOUTQNSD: Final = 0x894B
_INT: Final = struct.Struct("i")
UNSENT_READABLE: Final = fcntl is not None and sys.platform.startswith("linux")


def tune_transport(transport: asyncio.BaseTransport) -> None:
    """Our write watermarks. TCP_NODELAY (TLS records must not wait for Nagle) is set by
    the loop on dialled sockets and by the server on accepted ones; a test checks both."""
    cast(asyncio.WriteTransport, transport).set_write_buffer_limits(
        high=HIGH_WATERMARK_BYTES, low=LOW_WATERMARK_BYTES
    )


def send_rst_on_close(sock: socket.socket | None) -> None:
    """Closing ``sock`` sends a RST, not a FIN: a peer's reset is passed on as a reset, so
    a truncated stream never looks complete to the other peer. ``sock`` may be a
    transport's socket (``get_extra_info("socket")``: None once the transport is gone)."""
    if sock is None:
        return
    # uvloop's stand-in for a closed transport's socket raises RuntimeError; a socket
    # that its own reset already closed refuses the option with OSError.
    with contextlib.suppress(OSError, RuntimeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)


def limit_unsent(transport: asyncio.WriteTransport, limit: int) -> None:
    """Keep what waits to be sent below ``limit`` bytes, in the kernel (TCP_NOTSENT_LOWAT:
    send() takes no more, Linux, macOS) and in the transport's write buffer alike: the
    rest waits in fyntr's queues, where the shaper and DRR decide. Bytes already handed
    to the kernel or the transport are out of a rate's reach once one is put in force."""
    transport.set_write_buffer_limits(high=limit, low=limit // 4)
    option = getattr(socket, "TCP_NOTSENT_LOWAT", None)
    sock = transport.get_extra_info("socket")
    if sock is None or option is None:
        return
    with contextlib.suppress(OSError, RuntimeError):
        sock.setsockopt(socket.IPPROTO_TCP, option, limit)


def unsent_bytes(fd: int) -> int:
    """What the socket ``fd`` holds that it has not sent yet (Linux only): unlike
    TCP_NOTSENT_LOWAT, which the kernel checks only as it starts a new segment buffer,
    this is exact. -1 once the socket is gone."""
    assert fcntl is not None
    try:
        return int(_INT.unpack(fcntl.ioctl(fd, _SIOCOUTQNSD, _INT.pack(0)))[0])
    except OSError:
        return -1


# The kernel's own window clamp with window scaling (U16_MAX << TCP_MAX_WSCALE,
# tcp_select_initial_window): none beyond the buffer's.
_NO_WINDOW_CLAMP: Final = 65535 << 14
_RCVBUF_UNCLAMPED: Final = 4 * 1024 * 1024  # asked for; the kernel caps it at rmem_max


def clamp_window(sock: socket.socket, window: int) -> None:
    """Advertise at most about ``window`` bytes of receive window (Linux). The buffer
    (SO_RCVBUF) is the bound that holds: the kernel resets TCP_WINDOW_CLAMP from the
    buffer whenever the buffer autotunes or its truesize ratio changes (a 16 KiB clamp
    was 128 KB after 8 MiB on loopback, on 6.18). Setting SO_RCVBUF ends autotuning for
    the socket's life."""
    option = getattr(socket, "TCP_WINDOW_CLAMP", None)
    if option is None:
        return
    with contextlib.suppress(OSError, RuntimeError, ValueError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, window)  # the kernel doubles it
        sock.setsockopt(socket.IPPROTO_TCP, option, window)


def unclamp_window(sock: socket.socket) -> None:
    """As large a window as the buffer allows again: autotuning stays off, so the buffer
    is at most 2 x net.core.rmem_max (416 KiB by default)."""
    option = getattr(socket, "TCP_WINDOW_CLAMP", None)
    if option is None:
        return
    with contextlib.suppress(OSError, RuntimeError, ValueError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF_UNCLAMPED)
        sock.setsockopt(socket.IPPROTO_TCP, option, _NO_WINDOW_CLAMP)


def unread_probe(sock: socket.socket | None) -> Callable[[int], Sized]:
    """A probe of socket ``sock``: called with 0, it returns something non-empty when the
    kernel holds bytes, a FIN or an error the loop has not delivered yet. A pooled
    connection may serve again only with nothing received since its last response
    (docs/plain-http.md). It is a poll object's own ``poll`` with the descriptor
    registered once, so asking is one call and one poll(2) with no wait (under 2 us; a borrowed
    socket object for recv(MSG_PEEK) cost 12 us of a 120 us request). No socket to ask
    counts as holding something."""
    if sock is None:
        return _holding
    fd = sock.fileno()
    if not hasattr(select, "poll"):  # Windows: select, whose descriptors stay below 512
        return lambda wait: select.select((fd,), (), (), wait)[0]
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return poller.poll


def _holding(_wait: int) -> Sized:
    return (True,)
