"""Login throttling: escalating delays on failures, then a temporary lockout.

Counted per client IP and per account, so one attacker cannot try many
accounts and many attackers cannot hammer one account. The counts live in a
SharedTable: the daemons map one file in their runtime directory, so every
worker of every protocol sees the same counts, and a daemon restart forgives
nothing (a reboot does: the runtime directory is a tmpfs).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable

from .accounts import Directory
from .config import User
from .shared import Record, SharedTable

log = logging.getLogger("mailroom.auth")

FREE_FAILURES = 3  # failures answered without delay (typos happen)
MAX_DELAY = 8.0  # seconds before a failure is answered
LOCKOUT_FAILURES = 10  # failures within WINDOW that lock the key out
LOCKOUT_SECONDS = 900.0
WINDOW = 900.0


class LoginThrottle:
    """Records: a = failures, t1 = first failure of the window, t2 = locked until."""

    def __init__(self, table: SharedTable | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.table = table or SharedTable(4096)
        self.clock = clock

    def _current(self, key: str, now: float) -> Record:
        record = self.table.get("login:" + key)
        if record is None or (now - record.t1 > WINDOW and record.t2 <= now):
            return Record(t1=now)
        return record

    def locked(self, *keys: str) -> bool:
        """True when any key (ip:..., user:...) is locked out right now."""
        now = self.clock()
        with self.table.locked():
            return any(self._current(key, now).t2 > now for key in keys)

    def failure(self, *keys: str) -> float:
        """Count a failure for each key; return how long to wait before answering."""
        now = self.clock()
        delay = 0.0
        with self.table.locked():
            for key in keys:
                record = self._current(key, now)
                record.a += 1
                if record.a >= LOCKOUT_FAILURES:
                    record.t2 = now + LOCKOUT_SECONDS
                self.table.put("login:" + key, record)
                extra = record.a - FREE_FAILURES
                if extra > 0:
                    delay = max(delay, min(MAX_DELAY, 0.5 * 2 ** (extra - 1)))
        return delay

    def success(self, *keys: str) -> None:
        with self.table.locked():
            for key in keys:
                if self.table.get("login:" + key) is not None:
                    self.table.put("login:" + key, Record())


class Outcome(enum.Enum):
    OK = "success"
    FAILED = "failure"  # unknown user, disabled user or wrong password: the same to the client
    LOCKED = "locked"


async def throttled_login(
    directory: Directory,
    throttle: LoginThrottle,
    ip: str,
    login: str,
    password: str,
    protocol: str,
    meanwhile: Callable[[User], object] | None = None,
) -> tuple[Outcome, User | None]:
    """One login attempt as every protocol makes it: lockout check, verification, delay on failure.

    The caller maps the outcome to its protocol's reply and metric. A failure is
    answered only after the throttle's delay, so guessing gets slower and slower.
    meanwhile: see Directory.authenticate; never called for a locked-out attempt.
    """
    keys = (f"ip:{ip}", f"user:{login.lower()}")
    if throttle.locked(*keys):
        log.warning("%s login locked out peer=%s login=%r", protocol, ip, login)
        return Outcome.LOCKED, None
    user = await directory.authenticate(login, password, meanwhile)
    if user is None:
        delay = throttle.failure(*keys)
        log.warning("%s login failed peer=%s login=%r", protocol, ip, login)
        if delay:
            await asyncio.sleep(delay)
        return Outcome.FAILED, None
    throttle.success(keys[1])
    return Outcome.OK, user
