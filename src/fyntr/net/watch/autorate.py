"""``--upload-rate auto`` and ``--download-rate auto`` on the loop: samples of the
upstream sockets in, a rate per direction out.

Every ``AUTORATE_TICK_S`` while relays are open, each direction's sampler reads the
upstream sockets that moved data (``TCP_INFO``; net/kernel/tcpinfo.py): what the network
delivered since the last tick (bytes the origins acknowledged, on an upload; bytes
received, on a download) and, from the sockets that carried data, the recent RTT above
the socket's own floor (the queueing delay). The pure controller (sched/autorate.py)
turns that into a rate for the direction's pump. Relays to this machine cross no router
and are left out. No timer runs while no relay is open.

* Upload: the RTT is the sender's (the kernel's smoothing undone), and the pump is the
  lever: with ``TCP_NOTSENT_LOWAT`` on upstream sockets, what fyntr has not written out
  is what the link has not been given.
* Download: fyntr is the receiver, so the RTT is the kernel's receiver estimate (from the
  timestamps the origin's data echoes; it crosses the downlink's queue with the data),
  and the receive windows are the lever: an origin sends as far as they reach, whatever
  fyntr reads, and bytes that reached fyntr have crossed the downlink already, so
  holding them back would only delay them. While a download rate is in force each busy
  upstream socket's window is clamped (its buffer) to its share of the rate
  times the RTT floor plus half the threshold: what the flows have in flight is then
  about the link's rate over its base RTT plus that much queue. The download pump is
  never limited by auto; "the rate" is what the windows are sized for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection

from fyntr.config import AUTO, Settings
from fyntr.limits import (
    AUTORATE_TICK_S,
)
from fyntr.log import format_bytes, log
from fyntr.metrics import RateInfo
from fyntr.net.kernel import tcpinfo
from fyntr.net.kernel.sockopt import UNSENT_READABLE
from fyntr.net.out.dialer import Dialed
from fyntr.net.relay.pump import Pump
from fyntr.net.relay.tunnel import Relay
from fyntr.net.watch.samplers import DownloadSampler, Sampler, Samples, UploadSampler
from fyntr.sched.autorate import Phase, RateController
from fyntr.sched.measure import weighted_median


class RateLoop:
    __slots__ = (
        "_clock",
        "_last",
        "_loop",
        "_relays",
        "_timer",
        "baseline_s",
        "controller",
        "sampler",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        clock: Callable[[], float],
        relays: Collection[Relay],
        sampler: Sampler,
    ) -> None:
        """``clock``: the server's (the loop's time in production), so that the
        controller's history and /status's ages are read on one clock."""
        self._loop = loop
        self._clock = clock
        self._relays = relays
        self.sampler = sampler
        self.controller = RateController(clock())
        self.baseline_s: float | None = None  # the median floor of the sampled sockets
        self._timer: asyncio.TimerHandle | None = None
        self._last = clock()

    def wake(self) -> None:
        """A relay started: tick while there are relays."""
        if self._timer is None:
            self._last = self._clock()
            self._timer = self._loop.call_later(AUTORATE_TICK_S, self._tick)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def sample(self) -> tuple[int, Samples, Samples]:
        return self.sampler.sample(self._relays)

    def dialed(self, dialed: Dialed) -> None:
        """A new upstream socket that crosses a router: the sampler's options, and, for
        the upload, the start of a burst (sched/autorate.RateController.start)."""
        self.sampler.dialed(dialed.transport)
        if not self.sampler.starts:
            return
        controller = self.controller
        before = controller.phase
        rate = controller.start(self._clock(), dialed.connect_s)
        if controller.phase is not before:
            self.sampler.steer(rate, self.baseline_s)
            self._log_phase(before)

    def _tick(self) -> None:
        self._timer = None
        now = self._clock()
        moved, delays, floors = self.sample()
        elapsed = max(now - self._last, 1e-3)
        self._last = now
        controller = self.controller
        before = controller.phase
        self.baseline_s = weighted_median(floors) if floors else self.baseline_s
        rate = controller.update(
            now,
            weighted_median(delays),
            moved / elapsed,
            self.baseline_s or 0.0,
            backlogged=self.sampler.holding(),
        )
        self.sampler.steer(rate, self.baseline_s)
        if controller.phase is not before:
            self._log_phase(before)
        if self._relays:
            self._timer = self._loop.call_later(AUTORATE_TICK_S, self._tick)

    def info(self, now: float) -> RateInfo:
        controller = self.controller
        return RateInfo(
            rate=controller.rate,
            auto=True,
            phase=controller.phase.value,
            queueing_delay_s=controller.delay_s,
            baseline_rtt_s=self.baseline_s,
            achieved=round(controller.achieved),
            history=[
                (round(now - p.at, 3), p.rate, round(p.achieved), p.delay_s)
                for p in controller.history
            ],
        )

    def _log_phase(self, before: Phase) -> None:
        """One INFO line when shaping starts, when it takes its rate, and when it stops;
        DEBUG otherwise (a burst starting held back, every step)."""
        controller = self.controller
        name = self.sampler.name
        phase = controller.phase
        delay = "n/a" if controller.delay_s is None else f"{controller.delay_s * 1000:.0f}ms"
        achieved = f"{format_bytes(int(controller.achieved))}/s"
        if phase is Phase.STARTING:  # every burst after a quiet spell: not news
            log.debug(
                "auto %s rate: a burst across a router begins; releasing it from %s/s up",
                name,
                format_bytes(int(controller.rate or 0)),
            )
        elif phase is Phase.DRAINING:
            log.info(
                "auto %s rate: queueing delay %s at %s; holding %ss back until the queue drains",
                name,
                delay,
                achieved,
                name,
            )
        elif phase is Phase.UNSHAPED:
            log.info("auto %s rate: no queueing for a while; unlimited", name)
        elif before in (Phase.DRAINING, Phase.STARTING):
            assert controller.rate is not None
            log.info("auto %s rate: shaping at %s/s", name, format_bytes(int(controller.rate)))
        else:
            log.debug("auto %s rate: %s, queueing delay %s", name, phase.value, delay)


class AutoRates:
    """The auto rate of each direction that has one (None: a fixed rate or unlimited)."""

    __slots__ = ("download", "drivers", "upload")

    def __init__(self, upload: RateLoop | None, download: RateLoop | None) -> None:
        self.upload = upload
        self.download = download
        # Once, not on every tunnel's start and dial.
        self.drivers = tuple(d for d in (upload, download) if d is not None)

    def wake(self) -> None:
        for driver in self.drivers:
            driver.wake()

    def close(self) -> None:
        for driver in self.drivers:
            driver.close()

    def dialed(self, dialed: Dialed) -> None:
        if dialed.routed:
            for driver in self.drivers:
                driver.dialed(dialed)


def pumps_for(
    loop: asyncio.AbstractEventLoop,
    clock: Callable[[], float],
    settings: Settings,
    relays: Collection[Relay],
) -> tuple[tuple[Pump, Pump], AutoRates]:
    """One pump per direction at its configured rate; a direction set to auto is driven
    by its auto rate where the kernel gives its samples (else unlimited, said once)."""
    upload, download = settings.upload_rate, settings.download_rate
    pumps = (
        Pump(loop, 0 if upload == AUTO else upload),
        Pump(loop, 0 if download == AUTO else download),
    )

    def driver(setting: int | str, available: bool, sampler: Sampler) -> RateLoop | None:
        if setting != AUTO:
            return None
        if not available:
            why = "the kernel keeps no receiver RTT" if tcpinfo.AVAILABLE else "no TCP_INFO"
            log.warning("--%s-rate auto: %s here; unlimited", sampler.name, why)
            return None
        return RateLoop(loop, clock, relays, sampler)

    autos = AutoRates(
        driver(upload, tcpinfo.AVAILABLE, UploadSampler(pumps[0])),
        driver(download, tcpinfo.RECEIVER_RTT, DownloadSampler()),
    )
    pumps[0].watches_unsent = autos.upload is not None and UNSENT_READABLE
    return pumps, autos
