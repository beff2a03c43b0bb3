"""The one vocabulary of how a relay ended (wire/ends.py), shared by both engines."""

from __future__ import annotations

import errno

import pytest

from fyntr.wire.ends import Side, end_reason


@pytest.mark.parametrize(
    ("side", "exc", "reason"),
    [
        (Side.CLIENT, None, "client_closed"),
        (Side.UPSTREAM, ConnectionResetError(errno.ECONNRESET, "reset"), "upstream_reset"),
        # A write after the peer's RST: a reset too, on the transports as under splice.
        (Side.CLIENT, BrokenPipeError(errno.EPIPE, "Broken pipe"), "client_reset"),
        (
            Side.UPSTREAM,
            TimeoutError(errno.ETIMEDOUT, "Connection timed out"),
            "upstream_error: [Errno 110] Connection timed out",
        ),
    ],
)
def test_end_reason(side: Side, exc: BaseException | None, reason: str) -> None:
    assert end_reason(side, exc) == reason
