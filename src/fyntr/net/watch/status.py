"""What the proxy reports of itself: the snapshot behind /metrics and /status, and the
stats line logged once a minute while bytes move."""

from __future__ import annotations

import dataclasses
import enum

from fyntr._version import __version__
from fyntr.config import AUTO, Settings
from fyntr.limits import STATS_INTERVAL_S, STATUS_TOP_CLIENTS, STATUS_TOP_FLOWS
from fyntr.log import format_bytes, log
from fyntr.metrics import FlowInfo, RateInfo, Snapshot
from fyntr.net.parts import Parts


def settings_dict(settings: Settings) -> dict[str, object]:
    """The effective configuration, JSON-ready."""
    out: dict[str, object] = {}
    for key, value in dataclasses.asdict(settings).items():
        out[key] = value.value if isinstance(value, enum.Enum) else value
    return out


class Reporter:
    """A read-only view of the running proxy's parts."""

    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        self.started_at = parts.clock()
        self._last_stats = (self.started_at, 0)  # the first stats line comes after a minute

    def totals(self) -> tuple[int, int]:
        up = self.parts.metrics.closed_up_bytes + sum(t.up.nbytes for t in self.parts.relays)
        down = self.parts.metrics.closed_down_bytes + sum(t.down.nbytes for t in self.parts.relays)
        return up, down

    def snapshot(self) -> Snapshot:
        now = self.parts.clock()
        up, down = self.totals()
        stats, dial = self.parts.metrics, self.parts.dialer.stats
        top = sorted(self.parts.relays, key=lambda t: t.activity, reverse=True)[:STATUS_TOP_FLOWS]
        return Snapshot(
            version=__version__,
            uptime_s=now - self.started_at,
            config=settings_dict(self.parts.settings),
            active_flows=len(self.parts.relays),
            spliced_flows=self.parts.splicer.active if self.parts.splicer is not None else 0,
            pending_handshakes=len(self.parts.handshakes),
            connect_waiters=self.parts.pacing.waiters,
            cap_waiters=len(self.parts.gate.admission.waiting),
            queued_up_bytes=self.parts.pumps[0].queued_bytes,
            queued_down_bytes=self.parts.pumps[1].queued_bytes,
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
            rates=self._rates(now),
            dns_lookups=dial.lookups,
            dns_lookups_coalesced=dial.lookups_coalesced,
            dns_lookups_cached=dial.lookups_cached,
            dns_lookup_failures=dial.lookups_failed,
            connect_attempts={f"ipv{v}": n for v, n in dial.attempts.items()},
            connect_wins={f"ipv{v}": n for v, n in dial.wins.items()},
            http_responses={str(code): n for code, n in stats.http_responses.items()},
            closed=dict(stats.closed),
            closed_spliced=stats.closed_spliced,
            pooled_connections=len(self.parts.pool),
            clients=stats.clients.top(
                (
                    (str(t.client_key), t.up.nbytes, t.down.nbytes)
                    for t in self.parts.relays
                    if t.client_key is not None
                ),
                STATUS_TOP_CLIENTS,
            ),
        )

    def _rates(self, now: float) -> dict[str, RateInfo]:
        settings, autorates = self.parts.settings, self.parts.autorates
        rates = {}
        for name, pump, driver, setting in (
            ("upload", self.parts.pumps[0], autorates.upload, settings.upload_rate),
            ("download", self.parts.pumps[1], autorates.download, settings.download_rate),
        ):
            auto = setting == AUTO
            rates[name] = (
                driver.info(now)
                if driver is not None
                else RateInfo(pump.rate, auto, "unavailable" if auto else None)
            )
        rates["connect"] = self.parts.pacing.info()
        return rates

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
            len(self.parts.relays),
            len(self.parts.handshakes),
            format_bytes(up),
            format_bytes(down),
            self.parts.pumps[0].queued_bytes,
            self.parts.pumps[1].queued_bytes,
            self.parts.metrics.rejected_total,
        )
