"""Threat feeds on the handshake path (docs/original.md §5): loading and reloading the index
(SIGHUP), the mixed-script warning, and the checks of the requested host (before DNS)
and of its resolved addresses, each match logged and counted, refused under ``block``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence

from fyntr.config import Settings
from fyntr.errors import ConfigError, forbidden
from fyntr.log import log
from fyntr.metrics import Stats
from fyntr.net.kernel.memory import release_memory
from fyntr.policy.threat import (
    ThreatAction,
    ThreatIndex,
    build_index,
    index_steps,
    is_mixed_script,
    read_lines,
)
from fyntr.wire.commands import Requester
from fyntr.wire.target import IPAddress, Target


class ThreatGuard:
    def __init__(self, settings: Settings, stats: Stats) -> None:
        self.settings = settings
        self.stats = stats
        self.index = ThreatIndex()
        self._reloading: asyncio.Task[None] | None = None
        self._again = False  # a SIGHUP came during a reload

    def load(self) -> None:
        """At start-up: ConfigError (exit 1) when a feed cannot be used."""
        feeds = self._feeds()
        if self.settings.threat_feed_files:
            self.index = self._finish(build_index(feeds))

    def reload(self) -> asyncio.Task[None]:
        """SIGHUP: parse the files again in slices between the loop's turns (a
        400,000-line feed takes seconds), then put the new index in place; a feed that
        fails to load keeps the previous index. A SIGHUP during a reload asks for one
        more after it. The task ends when the last index asked for is in place."""
        if self._reloading is None:
            self._reloading = asyncio.get_running_loop().create_task(
                self._reload(), name="fyntr-threat-feed-reload"
            )
        else:
            self._again = True
        return self._reloading

    async def _reload(self) -> None:
        try:
            again = True
            while again and self.settings.threat_feed_files:
                self._again = False
                try:
                    steps = index_steps(self._feeds())
                    while True:
                        next(steps)
                        await asyncio.sleep(0)
                except StopIteration as built:
                    self.index = self._finish(built.value)
                except ConfigError as exc:
                    log.error("threat feed reload failed, keeping the previous index: %s", exc)
                again = self._again
        finally:
            self._reloading = None
        release_memory()  # the previous index, and what parsing the files left

    def _feeds(self) -> Iterator[tuple[str, Iterator[str]]]:
        settings = self.settings
        if settings.threat_action is ThreatAction.BLOCK and not settings.threat_feed_files:
            raise ConfigError("--threat-action block needs at least one --threat-feed-file")
        return ((path, read_lines(path)) for path in settings.threat_feed_files)

    def _finish(self, index: ThreatIndex) -> ThreatIndex:
        for f in index.files:
            log.info(
                "loaded threat feed file=%s domains=%d ips=%d skipped=%d",
                f.path,
                f.domains,
                f.ips,
                f.skipped,
            )
            if f.skipped:
                log.warning(
                    "skipped unsupported threat feed rules file=%s skipped=%d", f.path, f.skipped
                )
        log.info(
            "built threat feed index files=%d domains=%d ips=%d skipped=%d",
            len(index.files),
            len(index.domains),
            len(index.ips),
            index.skipped,
        )
        return index

    def check_host(self, inbound: Requester, target: Target) -> None:
        """Mixed-script warning and host-level threat check, before headers and DNS."""
        host = target.host
        if host.domain is not None and is_mixed_script(host.raw):
            log.warning(
                "flow%d: mixed_script=true reason=mixed_script_host raw_host=%s ascii_host=%s "
                "%s=%s client_addr=%s",
                inbound.flow_id,
                host.raw,
                host.domain,
                inbound.TARGET_KEY,
                target.authority,
                inbound.peer,
            )
        matched = self.index.match_host(host)
        if matched is None:
            return
        kind = "ip" if host.ip is not None else "domain"
        extra = (
            f"matched_ip={matched}"
            if host.ip is not None
            else (f"ascii_host={host.domain} matched_domain={matched}")
        )
        self._log(inbound, target, kind, extra)
        if self.settings.threat_action is ThreatAction.BLOCK:
            raise forbidden("threat_blocked", "blocked by threat feed")

    def _log(self, inbound: Requester, target: Target, kind: str, extra: str) -> None:
        self.stats.threat_matches += 1
        log.warning(
            "flow%d: threat_match=true action=%s match_type=%s raw_host=%s %s %s=%s client_addr=%s",
            inbound.flow_id,
            self.settings.threat_action.value,
            kind,
            target.host.raw,
            extra,
            inbound.TARGET_KEY,
            target.authority,
            inbound.peer,
        )

    def check_addresses(
        self, inbound: Requester, target: Target, addrs: Sequence[IPAddress]
    ) -> None:
        """The resolved addresses of a name (an IP literal was checked as the host)."""
        if target.host.ip is not None:
            return
        hits = self.index.match_ips(addrs)
        block = self.settings.threat_action is ThreatAction.BLOCK
        for ip in hits[:1] if block else hits:
            self._log(inbound, target, "ip", f"matched_ip={ip}")
        if hits and block:
            raise forbidden("threat_blocked", "blocked by threat feed (resolved address)")
