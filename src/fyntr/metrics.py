"""What the proxy counts about itself (docs/observability.md), and its /metrics and /status
renderings.

Counters are plain integers bumped on connection events, never per chunk. The Prometheus
text comes from ``prometheus-client``, imported only when the metrics port is enabled.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from fyntr.tally import ClientInfo, ClientTally

# Handshake-to-200 latency buckets, seconds: loopback set-ups take about a millisecond,
# a paced or slow-DNS one up to the 30 s budget.
HANDSHAKE_BUCKETS_S = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


class _Counted(Protocol):
    @property
    def nbytes(self) -> int: ...


class ClosedFlow(Protocol):
    """What the counters take of a relay that ended (net/relay.Relay)."""

    @property
    def up(self) -> _Counted: ...

    @property
    def down(self) -> _Counted: ...

    @property
    def reason(self) -> str | None: ...

    @property
    def client_key(self) -> object: ...

    @property
    def spliced(self) -> bool: ...


class Stats:
    __slots__ = (
        "accepted",
        "clients",
        "closed",
        "closed_down_bytes",
        "closed_spliced",
        "closed_up_bytes",
        "dial_failures",
        "handshake_buckets",
        "handshake_count",
        "handshake_sum",
        "http_responses",
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
        self.http_responses: defaultdict[int, int] = defaultdict(int)  # plain HTTP, by code
        self.closed_up_bytes = 0  # bytes of tunnels that have closed; live ones are added
        self.closed_down_bytes = 0
        self.closed: dict[str, int] = {}  # relays that ended, by reason
        self.closed_spliced = 0  # of them, those that ended spliced (net/relay/splice.py)
        self.handshake_buckets = [0] * len(HANDSHAKE_BUCKETS_S)  # not cumulative
        self.handshake_count = 0
        self.handshake_sum = 0.0
        self.clients = ClientTally()

    def rejected(self, reason: str) -> None:
        self.rejections[reason] = self.rejections.get(reason, 0) + 1

    def flow_closed(self, relay: ClosedFlow) -> None:
        self.closed_up_bytes += relay.up.nbytes
        self.closed_down_bytes += relay.down.nbytes
        reason = relay.reason or "closed"
        self.closed[reason] = self.closed.get(reason, 0) + 1
        self.closed_spliced += relay.spliced
        if relay.client_key is not None:
            self.clients.ended(str(relay.client_key), relay.up.nbytes, relay.down.nbytes)

    def http_response(self, status: int) -> None:
        self.http_responses[status] += 1

    @property
    def rejected_total(self) -> int:
        return sum(self.rejections.values())

    def observe_handshake(self, seconds: float) -> None:
        i = bisect.bisect_left(HANDSHAKE_BUCKETS_S, seconds)
        if i < len(self.handshake_buckets):
            self.handshake_buckets[i] += 1
        self.handshake_count += 1
        self.handshake_sum += seconds


@dataclass(frozen=True)
class FlowInfo:
    flow: int
    target: str
    age_s: float
    up_bytes: int
    down_bytes: int


@dataclass(frozen=True)
class RateInfo:
    """A direction's rate (or the connect rate) and, under auto, its controller."""

    rate: float | None  # in force now: bytes/s (connects/s); None: unlimited
    auto: bool
    phase: str | None = None  # the auto controller's phase
    queueing_delay_s: float | None = None  # the last tick's, auto upload
    baseline_rtt_s: float | None = None  # the sampled sockets' median floor
    achieved: float | None = None  # bytes/s acknowledged, smoothed
    history: list[tuple[float, float | None, float, float | None]] = field(default_factory=list)
    # (seconds ago, rate, achieved, queueing delay) per tick, the last minute


@dataclass(frozen=True)
class Snapshot:
    """Everything /metrics and /status show, taken at one moment."""

    version: str
    uptime_s: float
    config: dict[str, Any]
    active_flows: int
    spliced_flows: int  # of active_flows, those spliced in the kernel (net/relay/splice.py)
    pending_handshakes: int
    connect_waiters: int
    cap_waiters: int
    queued_up_bytes: int
    queued_down_bytes: int
    up_bytes: int
    down_bytes: int
    accepted: int
    tunnels_opened: int
    dial_failures: int
    threat_matches: int
    rejections: dict[str, int]
    handshake_buckets: list[int]
    handshake_count: int
    handshake_sum: float
    top_flows: list[FlowInfo] = field(default_factory=list)
    rates: dict[str, RateInfo] = field(default_factory=dict)  # upload, download, connect
    dns_lookups: int = 0  # resolver calls
    dns_lookups_coalesced: int = 0  # tunnels that waited for a lookup under way instead
    dns_lookups_cached: int = 0  # tunnels answered from a recent lookup's answer
    dns_lookup_failures: int = 0
    connect_attempts: dict[str, int] = field(default_factory=dict)  # by family: ipv4, ipv6
    connect_wins: dict[str, int] = field(default_factory=dict)  # the attempts that connected
    http_responses: dict[str, int] = field(default_factory=dict)  # plain HTTP, by code
    closed: dict[str, int] = field(default_factory=dict)  # relays that ended, by reason
    closed_spliced: int = 0  # of them, those spliced when they ended
    pooled_connections: int = 0  # idle plain-HTTP upstream connections kept
    clients: list[ClientInfo] = field(default_factory=list)  # the busiest, then "other"


def render_status(snap: Snapshot) -> bytes:
    import json  # noqa: PLC0415  (only when /status is asked for: 0.1 MB of RSS)

    data = asdict(snap)
    data["handshake_seconds"] = {
        "count": data.pop("handshake_count"),
        "sum": data.pop("handshake_sum"),
        "buckets": dict(
            zip([str(b) for b in HANDSHAKE_BUCKETS_S], data.pop("handshake_buckets"), strict=True)
        ),
    }
    data["queued_bytes"] = {
        "up": data.pop("queued_up_bytes"),
        "down": data.pop("queued_down_bytes"),
    }
    data["bytes"] = {"up": data.pop("up_bytes"), "down": data.pop("down_bytes")}
    data["counters"] = {
        "accepted": data.pop("accepted"),
        "tunnels_opened": data.pop("tunnels_opened"),
        "dial_failures": data.pop("dial_failures"),
        "threat_matches": data.pop("threat_matches"),
        "rejected": data.pop("rejections"),
    }
    return json.dumps(data, indent=2, sort_keys=True).encode() + b"\n"


def _by_family(name: str, doc: str, counts: dict[str, int], label: str = "family") -> Any:
    from prometheus_client.core import CounterMetricFamily  # noqa: PLC0415

    family = CounterMetricFamily(name, doc, labels=[label])
    for value, count in sorted(counts.items()):
        family.add_metric([value], count)
    return family


def _rate_families(snap: Snapshot) -> list[Any]:
    from prometheus_client.core import GaugeMetricFamily  # noqa: PLC0415

    rate = GaugeMetricFamily(
        "fyntr_rate",
        "Rate in force: bytes/s (upload, download), connections/s (connect); 0 = unlimited.",
        labels=["direction", "mode"],
    )
    delay = GaugeMetricFamily(
        "fyntr_autorate_queueing_delay_seconds",
        "Auto rate: RTT above the upstream sockets' floor, the last tick.",
        labels=["direction"],
    )
    baseline = GaugeMetricFamily(
        "fyntr_autorate_baseline_rtt_seconds",
        "Auto rate: the sampled upstream sockets' RTT floor (median).",
        labels=["direction"],
    )
    for name, info in sorted(snap.rates.items()):
        rate.add_metric([name, "auto" if info.auto else "fixed"], info.rate or 0)
        if info.queueing_delay_s is not None:
            delay.add_metric([name], info.queueing_delay_s)
        if info.baseline_rtt_s is not None:
            baseline.add_metric([name], info.baseline_rtt_s)
    return [rate, delay, baseline]


def render_prometheus(snap: Snapshot) -> bytes:
    from prometheus_client.core import (  # noqa: PLC0415  (only with --metrics-port)
        CollectorRegistry,
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )
    from prometheus_client.exposition import generate_latest  # noqa: PLC0415

    def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
        return CounterMetricFamily(name, doc, value=value)

    def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, value=value)

    rejected = CounterMetricFamily(
        "fyntr_connections_rejected", "Connections refused, by reason.", labels=["reason"]
    )
    for reason, count in sorted(snap.rejections.items()):
        rejected.add_metric([reason], count)
    moved = CounterMetricFamily(
        "fyntr_relayed_bytes", "Bytes relayed, by direction.", labels=["direction"]
    )
    moved.add_metric(["up"], snap.up_bytes)
    moved.add_metric(["down"], snap.down_bytes)
    by_client = CounterMetricFamily(
        "fyntr_client_relayed_bytes",
        "Bytes relayed, by client (the busiest by address, the rest as other).",
        labels=["client", "direction"],
    )
    active = GaugeMetricFamily(
        "fyntr_client_active_flows", "Relays open now, by client.", labels=["client"]
    )
    for client in snap.clients:
        by_client.add_metric([client.client, "up"], client.up_bytes)
        by_client.add_metric([client.client, "down"], client.down_bytes)
        active.add_metric([client.client], client.active)
    queued = GaugeMetricFamily(
        "fyntr_queued_bytes",
        "Bytes waiting in the scheduler, by direction.",
        labels=["direction"],
    )
    queued.add_metric(["up"], snap.queued_up_bytes)
    queued.add_metric(["down"], snap.queued_down_bytes)
    cumulative, running = [], 0
    for bound, count in zip(HANDSHAKE_BUCKETS_S, snap.handshake_buckets, strict=True):
        running += count
        cumulative.append((repr(bound), running))
    cumulative.append(("+Inf", snap.handshake_count))
    families = [
        counter("fyntr_connections_accepted", "Connections accepted.", snap.accepted),
        rejected,
        counter("fyntr_tunnels_opened", "Tunnels established.", snap.tunnels_opened),
        moved,
        by_client,
        active,
        counter(
            "fyntr_dial_failures", "Upstream dials that failed every attempt.", snap.dial_failures
        ),
        counter("fyntr_threat_matches", "Threat feed matches.", snap.threat_matches),
        gauge("fyntr_active_flows", "Established tunnels.", snap.active_flows),
        gauge(
            "fyntr_spliced_flows",
            "Established tunnels relayed by splice() in the kernel.",
            snap.spliced_flows,
        ),
        gauge("fyntr_pending_handshakes", "Handshakes in progress.", snap.pending_handshakes),
        gauge(
            "fyntr_connect_waiters",
            "Dials waiting for a --connect-rate token.",
            snap.connect_waiters,
        ),
        gauge(
            "fyntr_cap_waiters",
            "Connections held at the cap by --max-connections-wait.",
            snap.cap_waiters,
        ),
        queued,
        HistogramMetricFamily(
            "fyntr_handshake_seconds",
            "Accept to tunnel established.",
            buckets=cumulative,
            sum_value=snap.handshake_sum,
        ),
        gauge("fyntr_uptime_seconds", "Seconds since start.", snap.uptime_s),
        *_rate_families(snap),
        counter("fyntr_dns_lookups", "DNS lookups made.", snap.dns_lookups),
        counter(
            "fyntr_dns_lookups_coalesced",
            "Tunnels that waited for a lookup of the same name under way.",
            snap.dns_lookups_coalesced,
        ),
        counter(
            "fyntr_dns_lookups_cached",
            "Tunnels answered from a recent lookup of the same name.",
            snap.dns_lookups_cached,
        ),
        counter("fyntr_dns_lookup_failures", "DNS lookups that failed.", snap.dns_lookup_failures),
        _by_family("fyntr_connect_attempts", "Upstream connect attempts.", snap.connect_attempts),
        _by_family("fyntr_connect_wins", "Upstream connects that won.", snap.connect_wins),
        _by_family("fyntr_flows_closed", "Relays that ended, by reason.", snap.closed, "reason"),
        counter(
            "fyntr_spliced_flows_closed",
            "Relays that ended while spliced in the kernel.",
            snap.closed_spliced,
        ),
        _by_family(
            "fyntr_http_requests",
            "Plain HTTP requests answered, by status code.",
            snap.http_responses,
            "code",
        ),
        gauge(
            "fyntr_http_pooled_connections",
            "Idle plain-HTTP upstream connections kept for reuse.",
            snap.pooled_connections,
        ),
    ]

    class _Collector:
        def collect(self) -> list[Any]:
            return families

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector())
    return generate_latest(registry)
