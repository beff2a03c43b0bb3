"""What the plain HTTP machine (wire/plain_http.py) and its driver
(net/forward/session.py) say to each other: the events it is fed, the commands it hands
out, and what it asks of the rest of fyntr (``HostCheck``, ``Users``)."""

from __future__ import annotations

from collections import deque
from typing import NamedTuple, Protocol

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
class Request(NamedTuple):
    """A request head; the time and the lanes' byte counts it began at (for its log)."""

    head: Head
    now: float
    up_mark: int
    down_mark: int


class Body(NamedTuple):
    data: bytes


class RequestEnd(NamedTuple):
    """The request's body is complete."""


class ClientEof(NamedTuple):
    pending: bool  # events of the client not handed in yet (a pipelined request)


class ClientError(NamedTuple):
    """What the client sent may not be forwarded (400, 414, 431)."""

    error: HandshakeError


class HeadTimeout(NamedTuple):
    limit: float  # the header budget that passed


class Shutdown(NamedTuple):
    """No further request: close between exchanges, or after the one under way."""


class Reached(NamedTuple):
    """An origin connection serves the exchange: ``reused`` one that served before
    (from the pool), ``via`` the parent proxy it goes through."""

    reused: bool
    via: Parent | None


class Unreached(NamedTuple):
    """Checking, pacing or dialing refused the request."""

    error: HandshakeError


class Response(NamedTuple):
    """What the origin's bytes completed (Head, body bytes, END), in order."""

    events: deque[Event]
    upload_queued: bool  # request bytes still wait to go to the origin


class OriginEof(NamedTuple):
    upload_queued: bool


class OriginFailed(NamedTuple):
    detail: str


# --- commands ----------------------------------------------------------------------------
class Own(NamedTuple):
    """Schedule the connection as this user from now on (docs/house.md)."""

    user: str


class Reach(NamedTuple):
    """An origin for the exchange: a kept connection, checked again, or a dial; with
    ``fresh``, a dial. Answered with Reached or Unreached. ``no_body``: the request is a
    HEAD, whose response has no body whatever its head says (RFC 9110 §9.3.2)."""

    dest: Destination
    no_body: bool
    fresh: bool = False


class ToOrigin(NamedTuple):
    data: bytes


class ToClient(NamedTuple):
    data: bytes


class Release(NamedTuple):
    """The exchange's origin: to the pool (``keep``), or closed with what was still
    queued for it."""

    keep: bool


class Served(NamedTuple):
    """An exchange ended with ``status``: count it, and log it with its bytes."""

    exchange: Exchange
    status: int


class Finish(NamedTuple):
    """Close the client once everything queued for it is written."""

    reason: str


class Abort(NamedTuple):
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
