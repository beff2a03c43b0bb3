"""What the proxy reports of itself: the snapshot behind /metrics and /status, and the
stats line logged once a minute while bytes move."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Collection
from dataclasses import dataclass

from fyntr._version import __version__
from fyntr.config import AUTO, Settings
from fyntr.limits import STATS_INTERVAL_S, STATUS_TOP_FLOWS
from fyntr.log import format_bytes, log
from fyntr.metrics import FlowInfo, RateInfo, Snapshot, Stats
from fyntr.net.autorate import AutoRateDriver
from fyntr.net.dialer import DialStats
from fyntr.net.forward import OriginPool
from fyntr.net.gate import Gate
from fyntr.net.pacing import ConnectGate
from fyntr.net.pump import Pump
from fyntr.net.relay import Relay
from fyntr.net.splice import Splicer


def settings_dict(settings: Settings) -> dict[str, object]:
    """The effective configuration, JSON-ready."""
    out: dict[str, object] = {}
    for key, value in dataclasses.asdict(settings).items():
        out[key] = value.value if isinstance(value, enum.Enum) else value
    return out


@dataclass(eq=False)
class Status:
    """A read-only view of the running proxy's parts."""

    settings: Settings
    clock: Callable[[], float]  # of tunnel ages and uptime (virtual in tests)
    loop_time: Callable[[], float]  # of the rate controllers
    metrics: Stats
    dial_stats: Callable[[], DialStats]  # the dialer's, whichever dialer is in use
    gate: Gate
    pacing: ConnectGate
    pumps: tuple[Pump, Pump]
    relays: Collection[Relay]
    handshakes: Collection[object]
    pool: OriginPool
    splicer: Splicer | None
    autorate: AutoRateDriver | None
    started_at: float = 0.0
    _last_stats: tuple[float, int] = (0.0, 0)

    def __post_init__(self) -> None:
        self.started_at = self.clock()
        self._last_stats = (self.started_at, 0)  # the first stats line comes after a minute

    def totals(self) -> tuple[int, int]:
        up = self.metrics.closed_up_bytes + sum(t.up.nbytes for t in self.relays)
        down = self.metrics.closed_down_bytes + sum(t.down.nbytes for t in self.relays)
        return up, down

    def snapshot(self) -> Snapshot:
        now = self.clock()
        up, down = self.totals()
        stats, dial = self.metrics, self.dial_stats()
        top = sorted(self.relays, key=lambda t: t.activity, reverse=True)[:STATUS_TOP_FLOWS]
        return Snapshot(
            version=__version__,
            uptime_s=now - self.started_at,
            config=settings_dict(self.settings),
            active_flows=len(self.relays),
            spliced_flows=self.splicer.active if self.splicer is not None else 0,
            pending_handshakes=len(self.handshakes),
            connect_waiters=self.pacing.waiters,
            cap_waiters=len(self.gate.admission.waiting),
            queued_up_bytes=self.pumps[0].queued_bytes,
            queued_down_bytes=self.pumps[1].queued_bytes,
            up_bytes=up,
            down_bytes=down,
            accepted=stats.accepted,
            tunnels_opened=stats.tunnels_opened,
            dial_failures=stats.dial_failures,
            threat_matches=stats.threat_matches,
            rejections=dict(stats.rejections),
            handshake_buckets=list(stats.handshake_buckets),
            handshake_count=stats.handshake_count,
            handshake_sum=stats.handshake_sum,
            top_flows=[
                FlowInfo(t.flow_id, t.target, round(now - t.started, 3), t.up.nbytes, t.down.nbytes)
                for t in top
            ],
            rates=self._rates(self.loop_time()),
            dns_lookups=dial.lookups,
            dns_lookups_coalesced=dial.lookups_coalesced,
            dns_lookup_failures=dial.lookups_failed,
            connect_attempts={f"ipv{v}": n for v, n in dial.attempts.items()},
            connect_wins={f"ipv{v}": n for v, n in dial.wins.items()},
            http_responses=dict(stats.http_responses),
            closed=dict(stats.closed),
            closed_spliced=stats.closed_spliced,
            pooled_connections=len(self.pool),
        )

    def _rates(self, now: float) -> dict[str, RateInfo]:
        upload, download = self.pumps
        auto_up = self.settings.upload_rate == AUTO
        return {
            "upload": (
                self.autorate.info(now)
                if self.autorate is not None
                else RateInfo(upload.rate, auto_up, "unavailable" if auto_up else None)
            ),
            "download": RateInfo(download.rate, auto=False),
            "connect": self.pacing.info(),
        }

    def log_stats(self, now: float) -> None:
        """Once a minute at most, and only when bytes moved since the last line."""
        last_time, last_bytes = self._last_stats
        if now - last_time < STATS_INTERVAL_S:
            return
        up, down = self.totals()
        if up + down == last_bytes:
            return
        self._last_stats = (now, up + down)
        log.info(
            "stats: active_flows=%d pending_handshakes=%d up_bytes=%s down_bytes=%s "
            "queued_up=%d queued_down=%d rejections=%d",
            len(self.relays),
            len(self.handshakes),
            format_bytes(up),
            format_bytes(down),
            self.pumps[0].queued_bytes,
            self.pumps[1].queued_bytes,
            self.metrics.rejected_total,
        )
