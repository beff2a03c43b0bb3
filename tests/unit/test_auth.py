"""The pure part of --auth-file (policy/auth.py): the htpasswd file, Basic credentials,
and the verdicts and back-off of ``AuthBook``, on a clock passed in."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fyntr.errors import ConfigError, HandshakeError, Status
from fyntr.limits import (
    AUTH_BACKOFF_FIRST_S,
    AUTH_BACKOFF_MAX_S,
    AUTH_CACHE_ENTRIES,
    AUTH_CACHE_TTL_S,
    AUTH_FAILURE_MEMORY_S,
    AUTH_FAILURES_TRACKED,
    AUTH_FREE_FAILURES,
)
from fyntr.policy.auth import AuthBook, Credentials, basic_credentials, parse_htpasswd

HASH = "$2y$05$I0WDMhCDFQFHajSDcMnj1e6J7mjti94XjqQeJsNB5KpILuuIOQAWG"  # htpasswd -B
ALICE = Credentials("alice", b"s3cret")
GUESS = Credentials("alice", b"guess")


def test_htpasswd_reads_bcrypt_entries_comments_and_blank_lines() -> None:
    text = f"# the house\n\nalice:{HASH}\nbob:{HASH.replace('$2y$', '$2b$')}\n"
    assert parse_htpasswd(text, "users") == {
        "alice": HASH.encode(),
        "bob": HASH.replace("$2y$", "$2b$").encode(),
    }


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("alice:$apr1$salt$hash\n", "users, line 1: the entry of 'alice' is not a bcrypt hash"),
        ("alice:{SHA}abc=\n", "only bcrypt entries are read (htpasswd -B)"),
        (f"alice:{HASH[:-1]}\n", "not a bcrypt hash"),
        (f"alice:{HASH}\nalice:{HASH}\n", "line 2: 'alice' has an entry already"),
        ("just-a-name\n", "line 1: not a user:hash line"),
        (f":{HASH}\n", "not a user:hash line"),
        ("# nobody\n", "no users"),
    ],
)
def test_htpasswd_refuses_what_it_cannot_use_naming_the_line(text: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_htpasswd(text, "users")
    assert says in str(info.value)
    assert HASH[10:] not in str(info.value)  # never the hash


def basic(text: bytes) -> bytes:
    return b"Basic " + base64.b64encode(text)


@given(st.text(st.characters(exclude_characters=":"), max_size=20), st.binary(max_size=40))
def test_basic_credentials_round_trip(user: str, password: bytes) -> None:
    value = basic(user.encode() + b":" + password)
    assert basic_credentials(value) == Credentials(user, password)
    assert basic_credentials(b"bAsIc  " + value[6:]) == Credentials(user, password)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "auth_missing"),
        (b"Bearer abc", "auth_malformed"),
        (b"Basic !!!", "auth_malformed"),
        (basic(b"no colon"), "auth_malformed"),
        (basic(b"\xff:pw"), "auth_malformed"),
    ],
)
def test_unusable_credentials_are_a_407(value: bytes | None, reason: str) -> None:
    with pytest.raises(HandshakeError) as info:
        basic_credentials(value)
    assert info.value.status is Status.PROXY_AUTH_REQUIRED
    assert info.value.reason == reason


def book() -> AuthBook:
    return AuthBook({"alice": HASH.encode()}, b"decoy")


def test_a_verdict_is_kept_for_its_time() -> None:
    b = book()
    assert b.lookup("10.0.0.2", ALICE, 0.0) is None  # to be checked
    assert b.settle("10.0.0.2", ALICE, True, 0.0).user == "alice"
    assert b.lookup("10.0.0.3", ALICE, AUTH_CACHE_TTL_S - 1) == ("alice", "", "")
    assert b.lookup("10.0.0.3", ALICE, AUTH_CACHE_TTL_S) is None  # expired: checked again


def test_an_unknown_user_is_checked_against_the_decoy_and_never_passes() -> None:
    b = book()
    assert b.hash_for("mallory") == b"decoy"
    assert b.settle("10.0.0.2", Credentials("mallory", b"x"), True, 0.0).user is None


def test_failures_from_one_address_earn_a_doubling_wait_that_holds_every_credential() -> None:
    b = book()
    b.settle("10.0.0.2", ALICE, True, 0.0)
    now = 1.0
    for _ in range(AUTH_FREE_FAILURES):
        assert b.settle("10.0.0.2", GUESS, False, now).reason == "auth_failed"
    assert b.lookup("10.0.0.2", Credentials("alice", b"new"), now) is None  # no wait yet
    b.settle("10.0.0.2", GUESS, False, now)  # beyond the free failures: a wait
    waiting = b.lookup("10.0.0.2", ALICE, now + AUTH_BACKOFF_FIRST_S / 2)
    assert waiting is not None and waiting.reason == "auth_backoff"  # the right one too
    assert b.lookup("10.0.0.3", ALICE, now) == ("alice", "", "")  # another address: served
    later = now + AUTH_BACKOFF_FIRST_S
    assert b.lookup("10.0.0.2", ALICE, later) == ("alice", "", "")  # over; success resets
    waits = []
    for i in range(AUTH_FREE_FAILURES + 20):
        b.settle("10.0.0.4", GUESS, False, 0.0)
        verdict = b.lookup("10.0.0.4", Credentials("alice", b"%d" % i), 0.0)
        if i >= AUTH_FREE_FAILURES:
            assert verdict is not None
            waits.append(float(verdict.detail.split("wait ")[1].rstrip("s")))
    assert waits[:3] == [AUTH_BACKOFF_FIRST_S, 2 * AUTH_BACKOFF_FIRST_S, 4 * AUTH_BACKOFF_FIRST_S]
    assert max(waits) == AUTH_BACKOFF_MAX_S


def test_failures_are_forgotten_after_a_while() -> None:
    b = book()
    for _ in range(AUTH_FREE_FAILURES + 1):
        b.settle("10.0.0.2", GUESS, False, 0.0)
    assert b.lookup("10.0.0.2", GUESS, 0.5) is not None  # waiting
    # Long after: the count starts again, and a failure costs no wait.
    b.settle("10.0.0.2", GUESS, False, AUTH_FAILURE_MEMORY_S + 1)
    assert b.lookup("10.0.0.2", ALICE, AUTH_FAILURE_MEMORY_S + 1) is None


def test_what_the_book_remembers_is_bounded() -> None:
    b = book()
    for i in range(AUTH_CACHE_ENTRIES + AUTH_FAILURES_TRACKED + 10):
        b.settle(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", Credentials("x", b"%d" % i), False, 0)
    assert len(b) == AUTH_CACHE_ENTRIES + AUTH_FAILURES_TRACKED


def test_the_cache_holds_no_password() -> None:
    b = book()
    b.settle("10.0.0.2", ALICE, True, 0.0)
    assert b"s3cret" not in repr(vars(b)).encode()
