"""Accounts: who receives mail here and how a password is checked.

One service for SMTP AUTH, IMAP and POP3. Password hashes are argon2id.
Verification is deliberately slow (tens of milliseconds), so callers on an event
loop use :meth:`Directory.authenticate`, which runs it in a worker thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
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


@dataclass(frozen=True)
class Recipient:
    """Where a local address is delivered."""

    user: User


class Directory:
    """The accounts of one configuration, looked up by address."""

    def __init__(self, config: Config) -> None:
        self.domains = frozenset(config.domains)
        self._users = {user.address: user for user in config.users}

    def is_local_domain(self, domain: str) -> bool:
        return domain.lower() in self.domains

    def resolve(self, address: str) -> Recipient | None:
        """The local mailbox for an address, or None when nobody has it."""
        localpart, domain = split_address(address)
        user = self._users.get(f"{localpart.lower()}@{domain}")
        return Recipient(user) if user else None

    async def authenticate(self, address: str, password: str) -> User | None:
        user = self._users.get(address.lower())
        stored = user.password_hash if user else _DUMMY_HASH
        ok = await asyncio.get_running_loop().run_in_executor(None, verify_password, stored, password)
        return user if ok and user else None
