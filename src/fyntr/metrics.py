"""Counters the proxy keeps about itself (SPEC §6). Rendering lives with the endpoint."""

from __future__ import annotations


class Stats:
    """Plain integers bumped on connection events; never touched per chunk."""

    __slots__ = (
        "accepted",
        "closed_down_bytes",
        "closed_up_bytes",
        "dial_failures",
        "rejections",
        "threat_matches",
        "tunnels_opened",
    )

    def __init__(self) -> None:
        self.accepted = 0
        self.tunnels_opened = 0
        self.dial_failures = 0
        self.threat_matches = 0
        self.rejections: dict[str, int] = {}
        self.closed_up_bytes = 0  # bytes of tunnels that have closed; live ones are added
        self.closed_down_bytes = 0

    def rejected(self, reason: str) -> None:
        self.rejections[reason] = self.rejections.get(reason, 0) + 1

    @property
    def rejected_total(self) -> int:
        return sum(self.rejections.values())
