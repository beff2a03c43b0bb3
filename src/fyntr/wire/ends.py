"""How a relayed connection ends, in one vocabulary for both engines (the loop's
transports, net/relay/tunnel.py; the kernel's splice, net/relay/splice.py): which side did what. The
reasons are the ``reason`` of the close log line and the metrics' label."""

from __future__ import annotations

import errno
from enum import Enum
from typing import Final

BOTH_CLOSED: Final = "closed"  # each side sent its FIN, and each FIN was passed on


class Side(Enum):
    CLIENT = "client"
    UPSTREAM = "upstream"


def is_reset(exc: BaseException) -> bool:
    """A reset by the peer: ECONNRESET on a read, EPIPE on a write after its RST."""
    return isinstance(exc, ConnectionResetError) or (
        isinstance(exc, OSError) and exc.errno == errno.EPIPE
    )


def end_reason(side: Side, exc: BaseException | None) -> str:
    """``side`` closed (None), was reset, or failed with ``exc``."""
    if exc is None:
        return f"{side.value}_closed"
    if is_reset(exc):
        return f"{side.value}_reset"
    return f"{side.value}_error: {exc}"
