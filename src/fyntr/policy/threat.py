"""Threat feeds -> an index of domains and IPs (docs/original.md §5). Pure but for reading files."""

from __future__ import annotations

from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum

from fyntr.errors import ConfigError, TargetError
from fyntr.limits import THREAT_FEED_SLICE_LINES
from fyntr.wire.target import Host, IPAddress, normalize_lenient, parse_ip


class ThreatAction(Enum):
    WARN = "warn"
    BLOCK = "block"


@dataclass(frozen=True, slots=True)
class FeedStats:
    path: str
    domains: int
    ips: int
    skipped: int


@dataclass(slots=True)
class ThreatIndex:
    domains: frozenset[str] = field(default_factory=frozenset)
    ips: frozenset[IPAddress] = field(default_factory=frozenset)
    files: tuple[FeedStats, ...] = ()

    @property
    def skipped(self) -> int:
        return sum(f.skipped for f in self.files)

    def match_domain(self, ascii_name: str) -> str | None:
        """Longest feed entry that is ``ascii_name`` or a suffix of it on a label boundary."""
        name = ascii_name
        while True:
            if name in self.domains:
                return name
            dot = name.find(".")
            if dot < 0:
                return None
            name = name[dot + 1 :]

    def match_host(self, host: Host) -> str | None:
        """Host-level check before DNS: a domain walks its suffixes, a literal IP is exact."""
        if host.ip is not None:  # an empty set first: an address hashes in Python
            return str(host.ip) if self.ips and host.ip in self.ips else None
        assert host.domain is not None
        return self.match_domain(host.domain) if self.domains else None

    def match_ips(self, addrs: Iterable[IPAddress]) -> list[IPAddress]:
        return [ip for ip in addrs if ip in self.ips]


def classify_line(line: str) -> str | None:
    """The entry text of one feed line, ``""`` for an ignored line, None for a skipped one."""
    text = line.strip()
    if not text or text[0] in "!#":
        return ""
    if text.startswith("@@") or "$" in text:
        return None
    if text.startswith("||"):
        rest = text[2:]
        entry, caret, tail = rest.partition("^")
        if not caret or tail:
            return None
        return entry
    if any(c in text for c in "/*^"):
        return None
    return text


def parse_feed(
    path: str, lines: Iterable[str], domains: set[str], ips: set[IPAddress]
) -> Iterator[FeedStats | None]:
    """Adds one feed's entries to ``domains`` and ``ips``, a line at a time (each may end
    in LF or CRLF). Yields None after every THREAT_FEED_SLICE_LINES lines, so that a
    caller on the event loop can let it turn, then the feed's counts."""
    before = len(domains), len(ips)
    skipped = 0
    for number, line in enumerate(lines, 1):
        if number % THREAT_FEED_SLICE_LINES == 0:
            yield None
        entry = classify_line(line.rstrip("\n").removesuffix("\r"))
        if entry == "":
            continue
        if entry is None:
            skipped += 1
            continue
        try:
            value = normalize_lenient(entry)
        except TargetError:
            skipped += 1
            continue
        if isinstance(value, str):
            domains.add(value)
        else:
            ips.add(value)
    yield FeedStats(path, len(domains) - before[0], len(ips) - before[1], skipped)


def index_steps(feeds: Iterable[tuple[str, Iterable[str]]]) -> Generator[None, None, ThreatIndex]:
    """Merge (path, lines) feeds, yielding between slices of lines; returns the index.
    An index with no entry at all is an error (docs/original.md §5.1)."""
    domains: set[str] = set()
    ips: set[IPAddress] = set()
    stats: list[FeedStats] = []
    for path, lines in feeds:
        for step in parse_feed(path, lines, domains, ips):
            if step is None:
                yield
            else:
                stats.append(step)
    if not domains and not ips:
        raise ConfigError("threat feeds contain no supported entries")
    return ThreatIndex(frozenset(domains), frozenset(ips), tuple(stats))


def build_index(feeds: Iterable[tuple[str, Iterable[str]]]) -> ThreatIndex:
    """``index_steps`` at once."""
    steps = index_steps(feeds)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


def read_lines(path: str) -> Iterator[str]:
    """A feed file a line at a time (LF-separated, as the original reads it): a feed of
    400,000 lines is never held whole as text."""
    try:
        with open(path, encoding="utf-8", newline="\n") as f:
            yield from f
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read threat feed file {path}: {exc}") from None


def load_feed_files(paths: Sequence[str]) -> ThreatIndex:
    return build_index((path, read_lines(path)) for path in paths)


_SCRIPTS = ("LATIN", "CYRILLIC", "GREEK")


def _script(char: str) -> str | None:
    # The Unicode Script property is not in the standard library; the character name
    # starts with the script for every letter of these three scripts.
    import unicodedata  # noqa: PLC0415  (only for non-ASCII hosts)

    name = unicodedata.name(char, "")
    for script in _SCRIPTS:
        if name.startswith(script + " "):
            return script
    return None


def is_mixed_script(raw_host: str) -> bool:
    """A label mixing Latin, Cyrillic and Greek letters (docs/original.md §5.5), e.g.
    ``f\\u0430ke``."""
    if raw_host.isascii() or parse_ip(raw_host.strip("[]")) is not None:
        return False
    for label in raw_host.split("."):
        scripts = {s for s in map(_script, label) if s is not None}
        if len(scripts) >= 2:
            try:
                normalize_lenient(raw_host)
            except TargetError:
                return False
            return True
    return False
