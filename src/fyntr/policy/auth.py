"""Who may use fyntr when ``--auth-file`` is given (docs/house.md, "Authentication"): the
htpasswd file, Basic credentials (RFC 7617), the verdicts already reached and the
back-off of an address that keeps failing. Pure: the clock is passed in, and the hash
check itself (bcrypt, slow on purpose) is run off the loop by net/front/auth.py.

Nothing here keeps or returns a password: the cache is keyed by a MAC of the user name
and password under a key made at start, and no text it returns holds either.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import os
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, NamedTuple

from fyntr.errors import ConfigError, HandshakeError, auth_required
from fyntr.limits import (
    AUTH_BACKOFF_FIRST_S,
    AUTH_BACKOFF_MAX_S,
    AUTH_CACHE_ENTRIES,
    AUTH_CACHE_TTL_S,
    AUTH_FAILURE_MEMORY_S,
    AUTH_FAILURES_TRACKED,
    AUTH_FREE_FAILURES,
    AUTH_NAME_MAX_BYTES,
)

# The back-off reaches its maximum after this many doublings; the count goes on.
_DOUBLINGS_TO_MAX: Final = math.ceil(math.log2(AUTH_BACKOFF_MAX_S / AUTH_BACKOFF_FIRST_S))
# What `htpasswd -B` writes ($2y$, cost 5 by default), and the other spellings of bcrypt:
# version, two-digit cost, 22 characters of salt and 31 of hash.
BCRYPT_HASH: Final = re.compile(r"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}")


class Credentials(NamedTuple):
    user: str
    password: bytes


class Verdict(NamedTuple):
    """A credential judged: the user it names, or None and why not (for the log and the
    refusal counter; never the password, nor the user name a failure gave)."""

    user: str | None
    reason: str = ""
    detail: str = ""


def parse_htpasswd(text: str, source: str) -> dict[str, bytes]:
    """``user:hash`` lines as `htpasswd -B` writes them; blank lines and ``#`` comments
    are skipped. Raises ConfigError naming the line (never its hash)."""
    users: dict[str, bytes] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        entry = raw.strip()
        if not entry or entry.startswith("#"):
            continue
        user, sep, hashed = entry.partition(":")
        where = f"{source}, line {number}"
        if not sep or not user:
            raise ConfigError(f"{where}: not a user:hash line")
        if len(user.encode()) > AUTH_NAME_MAX_BYTES:
            raise ConfigError(f"{where}: user name longer than {AUTH_NAME_MAX_BYTES} bytes")
        if not BCRYPT_HASH.fullmatch(hashed):
            raise ConfigError(
                f"{where}: the entry of {user!r} is not a bcrypt hash: only bcrypt entries "
                "are read (htpasswd -B)"
            )
        if user in users:
            raise ConfigError(f"{where}: {user!r} has an entry already")
        users[user] = hashed.encode("ascii")
    if not users:
        raise ConfigError(f"{source}: no users: nobody could use the proxy")
    return users


def basic_credentials(value: bytes | None) -> Credentials:
    """The user name and password of a Proxy-Authorization value (RFC 7617), or the 407
    to answer: none given, or not Basic credentials."""
    if value is None:
        raise auth_required("auth_missing", "no Proxy-Authorization: credentials are needed")
    scheme, _, token = value.strip().partition(b" ")
    decoded = None
    if scheme.lower() == b"basic":
        try:
            decoded = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            decoded = None
    user, sep, password = (decoded or b"").partition(b":")
    if not sep:
        raise auth_required("auth_malformed", "Proxy-Authorization is not Basic credentials")
    return socks_credentials(user, password)


def socks_credentials(user: bytes, password: bytes) -> Credentials:
    """RFC 1929's UNAME and PASSWD, as Basic's (RFC 7617: UTF-8)."""
    try:
        return Credentials(user.decode("utf-8"), password)
    except UnicodeDecodeError:
        raise auth_required("auth_malformed", "the user name is not UTF-8") from None


def refused(err: HandshakeError) -> Verdict:
    return Verdict(None, err.reason, err.detail)


@dataclass(slots=True)
class _Failures:
    count: int
    last: float
    until: float  # no credential from the address is checked before this


def _remembered(failures: _Failures | None, now: float) -> _Failures | None:
    """An address's failures, unless forgotten: long after the last one."""
    if failures is not None and now - failures.last > AUTH_FAILURE_MEMORY_S:
        return None
    return failures


class AuthBook:
    """The users, and what was already decided: ``lookup`` answers at once when it can
    (a verdict cached, or an address waiting out its back-off); else the caller checks
    the hash (``hash_for``) and reports it (``settle``)."""

    def __init__(self, users: Mapping[str, bytes], decoy: bytes) -> None:
        self.users = dict(users)
        self.decoy = decoy  # checked for an unknown user: it costs what a known one does
        self._key = os.urandom(32)
        self._verdicts: OrderedDict[bytes, tuple[str | None, float]] = OrderedDict()
        self._failures: OrderedDict[str, _Failures] = OrderedDict()

    def __len__(self) -> int:
        """Entries held: verdicts and addresses with failures (both bounded)."""
        return len(self._verdicts) + len(self._failures)

    def digest(self, credentials: Credentials) -> bytes:
        # Keyed BLAKE2b is a MAC (RFC 7693 §2.5), 0.9 us against HMAC-SHA256's 2.2.
        message = credentials.user.encode() + b"\0" + credentials.password
        return hashlib.blake2b(message, key=self._key, digest_size=32).digest()

    def hash_for(self, user: str) -> bytes:
        return self.users.get(user, self.decoy)

    def lookup(self, address: str, credentials: Credentials, now: float) -> Verdict | None:
        """The verdict without a hash check, or None: the hash is to be checked."""
        failures = _remembered(self._failures.get(address), now)
        if failures is not None and now < failures.until:
            # Every credential waits, a right one too: else guesses would run at full
            # speed against the ones cached.
            return Verdict(
                None,
                "auth_backoff",
                f"{failures.count} failed attempts from this address: "
                f"wait {failures.until - now:.0f}s",
            )
        key = self.digest(credentials)
        cached = self._verdicts.get(key)
        if cached is None or cached[1] <= now:
            return None
        self._verdicts.move_to_end(key)
        return self._record(address, cached[0], now)

    def settle(self, address: str, credentials: Credentials, ok: bool, now: float) -> Verdict:
        """A hash checked: remember the verdict, and count a failure against the address."""
        user = credentials.user if ok and credentials.user in self.users else None
        verdicts = self._verdicts
        verdicts[self.digest(credentials)] = (user, now + AUTH_CACHE_TTL_S)
        if len(verdicts) > AUTH_CACHE_ENTRIES:
            verdicts.popitem(last=False)
        return self._record(address, user, now)

    def _record(self, address: str, user: str | None, now: float) -> Verdict:
        failures = self._failures
        entry = _remembered(failures.pop(address, None), now)
        if user is not None:
            return Verdict(user)
        entry = entry or _Failures(0, now, now)
        entry.count += 1
        entry.last = now
        beyond = entry.count - AUTH_FREE_FAILURES
        if beyond > 0:
            doublings = min(beyond - 1, _DOUBLINGS_TO_MAX)
            entry.until = now + min(AUTH_BACKOFF_FIRST_S * 2**doublings, AUTH_BACKOFF_MAX_S)
        failures[address] = entry  # the most recent last
        if len(failures) > AUTH_FAILURES_TRACKED:
            failures.popitem(last=False)
        return Verdict(None, "auth_failed", "wrong user name or password")
