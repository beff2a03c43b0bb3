"""Socket options fyntr sets on the loop's transports and on the sockets it splices."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import Final, cast

from fyntr.limits import HIGH_WATERMARK_BYTES, LOW_WATERMARK_BYTES

_LINGER_RST: Final = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a RST


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
