"""Threat feeds on the handshake path (upstream §5): loading and reloading the index
(SIGHUP), the mixed-script warning, and the checks of the requested host (before DNS)
and of its resolved addresses, each match logged and counted, refused under ``block``."""

from __future__ import annotations

from collections.abc import Sequence

from fyntr.config import Settings
from fyntr.errors import ConfigError, forbidden
from fyntr.log import log
from fyntr.metrics import Stats
from fyntr.policy.threat import ThreatAction, ThreatIndex, is_mixed_script, load_feed_files
from fyntr.wire.handshake import Requester
from fyntr.wire.target import IPAddress, Target


class ThreatGuard:
    def __init__(self, settings: Settings, stats: Stats) -> None:
        self.settings = settings
        self.stats = stats
        self.index = ThreatIndex()

    def load(self) -> None:
        """At start-up: ConfigError (exit 1) when a feed cannot be used."""
        self.index = self._load()

    def reload(self) -> None:
        """SIGHUP: a feed that fails to load keeps the previous index."""
        try:
            self.index = self._load()
        except ConfigError as exc:
            log.error("threat feed reload failed, keeping the previous index: %s", exc)

    def _load(self) -> ThreatIndex:
        settings = self.settings
        if settings.threat_action is ThreatAction.BLOCK and not settings.threat_feed_files:
            raise ConfigError("--threat-action block needs at least one --threat-feed-file")
        if not settings.threat_feed_files:
            return ThreatIndex()
        index = load_feed_files(settings.threat_feed_files)
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
