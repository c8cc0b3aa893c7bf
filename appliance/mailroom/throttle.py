"""Login throttling: escalating delays on failures, then a temporary lockout.

Counted per client IP and per account, so one attacker cannot try many
accounts and many attackers cannot hammer one account. State lives in the
daemon process; a restart forgives (the argon2id cost still bounds guessing).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

FREE_FAILURES = 3  # failures answered without delay (typos happen)
MAX_DELAY = 8.0  # seconds before a failure is answered
LOCKOUT_FAILURES = 10  # failures within WINDOW that lock the key out
LOCKOUT_SECONDS = 900.0
WINDOW = 900.0
MAX_KEYS = 100_000  # bound the memory an attack can make us spend


@dataclass
class _Record:
    failures: int = 0
    first: float = 0.0
    locked_until: float = 0.0


@dataclass
class LoginThrottle:
    clock: object = field(default=time.monotonic)
    _records: dict[str, _Record] = field(default_factory=dict)

    def _now(self) -> float:
        return self.clock()  # type: ignore[operator,no-any-return]

    def _record(self, key: str) -> _Record | None:
        record = self._records.get(key)
        if record and self._now() - record.first > WINDOW and record.locked_until <= self._now():
            del self._records[key]
            return None
        return record

    def locked(self, *keys: str) -> bool:
        """True when any key (ip:..., user:...) is locked out right now."""
        now = self._now()
        return any((r := self._record(k)) is not None and r.locked_until > now for k in keys)

    def failure(self, *keys: str) -> float:
        """Count a failure for each key; return how long to wait before answering."""
        now = self._now()
        delay = 0.0
        if len(self._records) >= MAX_KEYS:
            self._expire(now)
        for key in keys:
            record = self._record(key) or self._records.setdefault(key, _Record(first=now))
            record.failures += 1
            if record.failures >= LOCKOUT_FAILURES:
                record.locked_until = now + LOCKOUT_SECONDS
            extra = record.failures - FREE_FAILURES
            if extra > 0:
                delay = max(delay, min(MAX_DELAY, 0.5 * 2 ** (extra - 1)))
        return delay

    def success(self, *keys: str) -> None:
        for key in keys:
            self._records.pop(key, None)

    def _expire(self, now: float) -> None:
        for key in [k for k, r in self._records.items() if now - r.first > WINDOW and r.locked_until <= now]:
            del self._records[key]
        while len(self._records) >= MAX_KEYS:  # still full: forget the oldest
            del self._records[next(iter(self._records))]
