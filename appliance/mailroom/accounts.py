"""Accounts: who receives mail here and how a password is checked.

One service for SMTP AUTH, IMAP and POP3. Password hashes are argon2id.
Verification is deliberately slow (tens of milliseconds), so callers on an event
loop use :meth:`Directory.authenticate`, which runs it in a worker thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass

import argon2

from .config import Config, User, split_address

# RFC 9106 "second recommended option" (64 MiB, 3 passes, 4 lanes): argon2-cffi's default.
_HASHER = argon2.PasswordHasher()
# Verified against when the user is unknown, so both answers take about as long.
_DUMMY_HASH = _HASHER.hash("mailroom-dummy-password")


def hash_password(password: str, *, address: str, salt_key: bytes) -> str:
    """Hash a password with a salt derived from a site secret and the address.

    The salt is unique per address and unpredictable without the key, and the
    same inputs give the same hash, so re-rendering the configuration on every
    playbook run changes nothing while the password stays the same.
    """
    if len(salt_key) < 16:
        raise ValueError("the salt key must be at least 16 bytes")
    salt = hmac.new(salt_key, address.lower().encode("utf-8"), hashlib.sha256).digest()[:16]
    return _HASHER.hash(password, salt=salt)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash, password)
    except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
        return False


MAX_ALIAS_DEPTH = 10


@dataclass(frozen=True)
class Resolution:
    """Where mail to one address goes: local mailboxes and addresses elsewhere."""

    local: tuple[User, ...] = ()
    remote: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.local or self.remote)


class Directory:
    """The accounts of one configuration: users, aliases and catch-alls, looked up by address."""

    def __init__(self, config: Config) -> None:
        self.domains = frozenset(config.domains)
        self._users = {user.address: user for user in config.users}
        self._aliases = {alias.address: alias.targets for alias in config.aliases}

    def is_local_domain(self, domain: str) -> bool:
        return domain.lower() in self.domains

    def user(self, address: str) -> User | None:
        """The active user with this login address, if any."""
        user = self._users.get(address.lower())
        return user if user and user.state == "active" else None

    def resolve(self, address: str) -> Resolution:
        """Expand an address through aliases (and the catch-all) to mailboxes and remote addresses.

        An empty resolution means nobody here takes mail for the address. Alias
        loops and chains deeper than MAX_ALIAS_DEPTH end where they are.
        """
        local: dict[str, User] = {}
        remote: dict[str, None] = {}
        self._expand(address.lower(), local, remote, depth=0, seen=set())
        return Resolution(tuple(local.values()), tuple(remote))

    def _expand(
        self, address: str, local: dict[str, User], remote: dict[str, None], depth: int, seen: set[str]
    ) -> None:
        if address in seen or depth > MAX_ALIAS_DEPTH:
            return
        seen.add(address)
        localpart, domain = split_address(address)
        if domain not in self.domains:
            remote[address] = None
            return
        user = self._users.get(address)
        if user is not None:
            if user.state == "active":
                local[address] = user
            return
        targets = self._aliases.get(address)
        if targets is None and localpart:
            targets = self._aliases.get("@" + domain)  # the domain's catch-all
        for target in targets or ():
            self._expand(target, local, remote, depth + 1, seen)

    def may_send_as(self, user: User, address: str) -> bool:
        """A logged-in user may send as their own address and any alias that reaches their mailbox."""
        address = address.lower()
        if address == user.address:
            return True
        if split_address(address)[1] not in self.domains or address in self._users:
            return False
        return address in self._aliases and user in self.resolve(address).local

    async def authenticate(
        self, address: str, password: str, meanwhile: Callable[[User], object] | None = None
    ) -> User | None:
        """The active user with this address and password, else None. meanwhile(user), for an
        active user, once the hash (the slow part, in a thread) is under way: what a login
        does next can overlap it. Neither the reply nor its timing depends on meanwhile."""
        user = self.user(address)
        stored = user.password_hash if user else _DUMMY_HASH
        verifying = asyncio.get_running_loop().run_in_executor(None, verify_password, stored, password)
        if user is not None and meanwhile is not None:
            meanwhile(user)
        ok = await verifying
        return user if ok and user else None
