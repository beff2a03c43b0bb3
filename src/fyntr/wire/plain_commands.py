"""What the plain HTTP machine (wire/plain_http.py) and its driver
(net/forward/session.py) say to each other: the events it is fed, the commands it hands
out, and what it asks of the rest of fyntr (``HostCheck``, ``Users``). Slotted dataclasses,
not NamedTuples: a plain HTTP exchange makes a dozen of them, and one costs 110 ns to
make against a NamedTuple's 250."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Protocol

from fyntr.errors import HandshakeError
from fyntr.wire.commands import Arm, Authenticate, Log, Refused, Requester
from fyntr.wire.exchange import Exchange
from fyntr.wire.http_forward import Event, Head
from fyntr.wire.http_rewrite import Destination
from fyntr.wire.parent import Parent
from fyntr.wire.target import Target


class HostCheck(Protocol):
    """The threat feeds, as a request's host is judged before DNS."""

    def check_host(self, who: Requester, target: Target) -> None: ...


class Users(Protocol):
    """--auth-file: ``generation`` changes when the file is read again."""

    @property
    def generation(self) -> object: ...


# --- events ------------------------------------------------------------------------------
@dataclass(slots=True)
class Request:
    """A request head; the time and the lanes' byte counts it began at (for its log)."""

    head: Head
    now: float
    up_mark: int
    down_mark: int


@dataclass(slots=True)
class Body:
    data: bytes


@dataclass(slots=True)
class RequestEnd:
    """The request's body is complete."""


REQUEST_END = RequestEnd()


@dataclass(slots=True)
class ClientEof:
    pending: bool  # events of the client not handed in yet (a pipelined request)


@dataclass(slots=True)
class ClientError:
    """What the client sent may not be forwarded (400, 414, 431)."""

    error: HandshakeError


@dataclass(slots=True)
class HeadTimeout:
    limit: float  # the header budget that passed


@dataclass(slots=True)
class Shutdown:
    """No further request: close between exchanges, or after the one under way."""


@dataclass(slots=True)
class Reached:
    """An origin connection serves the exchange: ``reused`` one that served before
    (from the pool), ``via`` the parent proxy it goes through."""

    reused: bool
    via: Parent | None


@dataclass(slots=True)
class Unreached:
    """Checking, pacing or dialing refused the request."""

    error: HandshakeError


@dataclass(slots=True)
class Response:
    """What the origin's bytes completed (Head, body bytes, END), in order."""

    events: deque[Event]
    upload_queued: bool  # request bytes still wait to go to the origin


@dataclass(slots=True)
class OriginEof:
    upload_queued: bool


@dataclass(slots=True)
class OriginFailed:
    detail: str


# --- commands ----------------------------------------------------------------------------
@dataclass(slots=True)
class Own:
    """Schedule the connection as this user from now on (docs/house.md)."""

    user: str


@dataclass(slots=True)
class Reach:
    """An origin for the exchange: a kept connection, checked again, or a dial; with
    ``fresh``, a dial. Answered with Reached or Unreached. ``no_body``: the request is a
    HEAD, whose response has no body whatever its head says (RFC 9110 §9.3.2)."""

    dest: Destination
    no_body: bool
    fresh: bool = False


@dataclass(slots=True)
class ToOrigin:
    data: bytes


@dataclass(slots=True)
class ToClient:
    data: bytes


@dataclass(slots=True)
class Release:
    """The exchange's origin: to the pool (``keep``), or closed with what was still
    queued for it."""

    keep: bool


@dataclass(slots=True)
class Served:
    """An exchange ended with ``status``: count it, and log it with its bytes."""

    exchange: Exchange
    status: int


@dataclass(slots=True)
class Finish:
    """Close the client once everything queued for it is written."""

    reason: str


@dataclass(slots=True)
class Abort:
    reason: str


Command = (
    Arm
    | Authenticate
    | Log
    | Refused
    | Own
    | Reach
    | ToOrigin
    | ToClient
    | Release
    | Served
    | Finish
    | Abort
)
