"""The one periodic sweep: handshake deadlines, connections waiting at the cap, idle
relays, idle pooled connections, the stats line, and memory given back after a load."""

from __future__ import annotations

import asyncio

from fyntr.limits import SWEEP_INTERVAL_MAX_S
from fyntr.log import log
from fyntr.net.kernel.memory import release_memory
from fyntr.net.parts import Parts
from fyntr.net.watch.status import Reporter


class Sweeper:
    def __init__(self, parts: Parts, status: Reporter) -> None:
        self.parts = parts
        self.status = status
        self._handle: asyncio.TimerHandle | None = None
        self._accepted_at_release = 0  # connections accepted when memory was last released
        t = parts.settings.timeouts
        candidates = [SWEEP_INTERVAL_MAX_S, t.request_line_s / 4, t.headers_s / 4]
        if parts.settings.idle_timeout_s > 0:
            candidates.append(parts.settings.idle_timeout_s / 4)
        self.interval = max(0.01, min(candidates))

    def start(self) -> None:
        self._handle = self.parts.loop.call_later(self.interval, self._tick)

    def _tick(self) -> None:
        self.sweep()
        self.start()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()

    def sweep(self) -> None:
        parts = self.parts
        now = parts.clock()
        for inbound in [h for h in parts.handshakes if h.deadline <= now]:
            inbound.on_deadline()
        parts.gate.expire(now)
        idle = parts.settings.idle_timeout_s
        for relay in list(parts.relays):
            if relay.deadline <= now:
                relay.on_deadline()
                continue
            activity = relay.activity
            if activity != relay.idle_mark:
                relay.idle_mark = activity
                relay.idle_since = now
            elif 0 < relay.idle_limit(idle) <= now - relay.idle_since:
                log.info(
                    "flow%d: idle timeout after %.2fs; closing",
                    relay.flow_id,
                    now - relay.idle_since,
                )
                relay.abort("idle_timeout")
        parts.pool.expire(now)
        self.status.log_stats(now)
        accepted = parts.metrics.accepted
        if accepted != self._accepted_at_release and not (parts.relays or parts.handshakes):
            self._accepted_at_release = accepted  # once per stretch of traffic
            release_memory()
