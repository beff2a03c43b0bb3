"""Per-client figures (docs/house.md): the bytes each way and the connections of each
client address, for /status and /metrics. Bounded: the ``CLIENTS_TRACKED`` most recently
active addresses are kept; older ones are folded into one ``other`` entry."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from fyntr.limits import CLIENTS_TRACKED

OTHER = "other"  # the entry of every client not shown on its own


@dataclass(frozen=True)
class ClientInfo:
    client: str  # its address, or "other"
    up_bytes: int
    down_bytes: int
    connections: int  # relays it has had, open ones included
    active: int  # relays open now


class ClientTally:
    """What the relays that ended moved, per client; the live ones are added at read."""

    __slots__ = ("_ended", "_other", "limit")

    def __init__(self, limit: int = CLIENTS_TRACKED) -> None:
        self.limit = limit
        self._ended: OrderedDict[str, list[int]] = OrderedDict()  # up, down, connections
        self._other = [0, 0, 0]

    def ended(self, client: str, up: int, down: int) -> None:
        figures = self._ended.pop(client, None) or [0, 0, 0]
        figures[0] += up
        figures[1] += down
        figures[2] += 1
        self._ended[client] = figures  # the most recent last
        if len(self._ended) > self.limit:
            _oldest, folded = self._ended.popitem(last=False)
            for i, value in enumerate(folded):
                self._other[i] += value

    def top(self, live: Iterable[tuple[str, int, int]], n: int) -> list[ClientInfo]:
        """The ``n`` clients that moved the most, live relays (client, up, down)
        included, then ``other`` for the rest when there is any."""
        figures = {client: [*values, 0] for client, values in self._ended.items()}
        for client, up, down in live:
            entry = figures.setdefault(client, [0, 0, 0, 0])
            entry[0] += up
            entry[1] += down
            entry[2] += 1
            entry[3] += 1
        ranked = sorted(figures.items(), key=lambda item: item[1][0] + item[1][1], reverse=True)
        out = [ClientInfo(client, *values) for client, values in ranked[:n]]
        rest = [
            sum(v[i] for _c, v in ranked[n:]) + (self._other[i] if i < 3 else 0) for i in range(4)
        ]
        if any(rest):
            out.append(ClientInfo(OTHER, *rest))
        return out
