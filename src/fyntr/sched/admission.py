"""Connection admission: pending handshakes and live tunnels share the cap (upstream §2.2).

Pure. A slot is reserved at accept, converted when the tunnel starts and released when
the handshake fails or the tunnel closes. ``limit == 0`` means unlimited.
"""

from __future__ import annotations


class Admission:
    __slots__ = ("active", "limit", "pending")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.pending = 0
        self.active = 0

    @property
    def full(self) -> bool:
        return self.limit > 0 and self.pending + self.active >= self.limit

    def try_reserve(self) -> bool:
        if self.full:
            return False
        self.pending += 1
        return True

    def release_pending(self) -> None:
        self.pending = max(0, self.pending - 1)

    def activate(self) -> None:
        """A reserved handshake became a tunnel: the slot changes kind, not count."""
        self.release_pending()
        self.active += 1

    def release_active(self) -> None:
        self.active = max(0, self.active - 1)
