"""``--auth-file`` (docs/house.md, "Authentication"): the htpasswd file, read at start and
again on SIGHUP, and bcrypt's check, run in a thread once per credential; what was
decided, and the back-off, are kept by policy/auth.py."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType

from fyntr.errors import ConfigError
from fyntr.limits import AUTH_CHECK_THREADS, BCRYPT_PASSWORD_MAX_BYTES
from fyntr.log import log
from fyntr.policy.auth import BCRYPT_HASH, AuthBook, Credentials, Verdict, parse_htpasswd


def _bcrypt() -> ModuleType:
    try:
        import bcrypt  # noqa: PLC0415  (an extra: only --auth-file needs it)
    except ImportError:
        raise ConfigError("--auth-file needs bcrypt: pip install 'fyntr[auth]'") from None
    return bcrypt


class _Turn:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0  # checks from the address under way or waiting


class Authenticator:
    """The users of ``path``; ``verdict`` answers at once when it can, ``check`` runs the
    hash. A credential under check is checked once, however many connections bring it."""

    def __init__(self, path: str, clock: Callable[[], float]) -> None:
        self.path = path
        self.clock = clock
        self._bcrypt = _bcrypt()
        self.book = self._load()
        self._executor = ThreadPoolExecutor(AUTH_CHECK_THREADS, thread_name_prefix="fyntr-auth")
        self._checking: dict[bytes, asyncio.Future[bool]] = {}
        self.checked = 0  # hashes checked: once per credential while its verdict is kept
        self._turns: dict[str, _Turn] = {}  # addresses with a check under way or waiting

    def _load(self) -> AuthBook:
        """Raises ConfigError naming the file and the line."""
        try:
            with open(self.path, encoding="utf-8") as file:
                if os.name == "posix" and os.fstat(file.fileno()).st_mode & 0o077:
                    log.warning(
                        "--auth-file %s can be read by other users of this machine: its "
                        "hashes can be guessed offline (chmod 600 %s)",
                        self.path,
                        self.path,
                    )
                text = file.read()
        except OSError as exc:
            raise ConfigError(f"--auth-file {self.path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"--auth-file {self.path}: not UTF-8 text") from None
        users = parse_htpasswd(text, self.path)
        # An unknown user's password is checked against a hash of the same cost as the
        # first user's, so that the answer's time does not tell which names exist.
        match = BCRYPT_HASH.fullmatch(next(iter(users.values())).decode())
        assert match is not None
        decoy = self._bcrypt.hashpw(os.urandom(16), self._bcrypt.gensalt(int(match[1])))
        log.info("authentication: %d users from %s", len(users), self.path)
        return AuthBook(users, decoy)

    def reload(self) -> None:
        """SIGHUP: the file again; every verdict is forgotten. A file that cannot be used
        keeps the users read before."""
        try:
            self.book = self._load()
        except ConfigError as exc:
            log.error("auth file reload failed, keeping the previous users: %s", exc)

    def verdict(self, address: str, credentials: Credentials) -> Verdict | None:
        """Without checking a hash: cached, or the address is waiting out its back-off."""
        return self.book.lookup(address, credentials, self.clock())

    @property
    def generation(self) -> object:
        """Changes when the file is read again (wire/plain_http.py ``Users``)."""
        return self.book

    def judge(
        self, address: str, credentials: Credentials, then: Callable[[Verdict], None]
    ) -> Verdict | asyncio.Task[None]:
        """The verdict at once when it is known (cached, or the address is waiting out
        its back-off); else a task that checks the hash and hands ``then`` the verdict."""
        verdict = self.verdict(address, credentials)
        if verdict is not None:
            return verdict

        async def check() -> None:
            then(await self.check(address, credentials))

        return asyncio.get_running_loop().create_task(check(), name="fyntr-auth-check")

    async def check(self, address: str, credentials: Credentials) -> Verdict:
        """One check at a time per address: the attempts that came meanwhile are judged
        after it, so a burst of guesses meets the back-off the first ones earned."""
        turn = self._turns.get(address)
        if turn is None:
            turn = self._turns[address] = _Turn()
        turn.users += 1
        try:
            async with turn.lock:
                verdict = self.verdict(address, credentials)
                return verdict if verdict is not None else await self._check(address, credentials)
        finally:
            turn.users -= 1
            if not turn.users:
                del self._turns[address]

    async def _check(self, address: str, credentials: Credentials) -> Verdict:
        book = self.book
        key = book.digest(credentials)
        checking = self._checking.get(key)
        if checking is None:
            checking = asyncio.get_running_loop().run_in_executor(
                self._executor, self._matches, credentials.password, book.hash_for(credentials.user)
            )
            self._checking[key] = checking
            self.checked += 1
            checking.add_done_callback(lambda _: self._checking.pop(key, None))
        ok = await asyncio.shield(checking)  # a client gone does not cancel the others' check
        if book is not self.book:  # reloaded meanwhile: the new users decide
            return await self._check(address, credentials)
        return book.settle(address, credentials, ok, self.clock())

    def _matches(self, password: bytes, hashed: bytes) -> bool:
        """In a thread: bcrypt releases the GIL while it hashes."""
        checked: bool = self._bcrypt.checkpw(password[:BCRYPT_PASSWORD_MAX_BYTES], hashed)
        return checked

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
