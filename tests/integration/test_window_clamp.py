"""Download auto's lever (net/sockopt.clamp_window): a receive window bound that the
kernel does not lift during a bulk transfer, and that comes off again."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

import pytest

from fyntr.net.kernel.sockopt import clamp_window, unclamp_window

pytestmark = pytest.mark.skipif(
    not hasattr(socket, "TCP_WINDOW_CLAMP"), reason="TCP_WINDOW_CLAMP is Linux's"
)

WINDOW = 16384


def _clamp_option_only(sock: socket.socket, window: int) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_WINDOW_CLAMP, window)


def _transfer(clamp: Callable[[socket.socket, int], None]) -> tuple[socket.socket, int]:
    """8 MiB to a receiver clamped before the first byte; returns the receiver (still
    open) and the window clamp the kernel holds for it afterwards."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        sender = socket.create_connection(server.getsockname())
        receiver, _ = server.accept()
    clamp(receiver, WINDOW)
    total = 8 << 20

    def send() -> None:
        sender.sendall(bytes(total))
        sender.close()

    writer = threading.Thread(target=send)
    writer.start()
    got = 0
    while got < total:
        got += len(receiver.recv(1 << 16))
    writer.join()
    return receiver, receiver.getsockopt(socket.IPPROTO_TCP, socket.TCP_WINDOW_CLAMP)


def test_a_clamped_window_holds_through_a_bulk_transfer_and_comes_off() -> None:
    receiver, clamp = _transfer(clamp_window)
    with receiver:
        assert clamp <= 2 * WINDOW  # the buffer (2 x SO_RCVBUF) bounds what it is reset to
        unclamp_window(receiver)
        assert receiver.getsockopt(socket.IPPROTO_TCP, socket.TCP_WINDOW_CLAMP) > 1 << 29
        assert receiver.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) > 8 * WINDOW


def test_the_clamp_option_alone_is_lifted_by_the_kernel() -> None:
    """Why clamp_window bounds the buffer: the kernel resets TCP_WINDOW_CLAMP from it."""
    receiver, clamp = _transfer(_clamp_option_only)
    with receiver:
        assert clamp > 2 * WINDOW
