from __future__ import annotations

import hashlib

import pytest

from mailroom import throttle
from mailroom.throttle import LoginThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_first_failures_are_free_then_delays_grow_to_a_cap() -> None:
    t = LoginThrottle(clock=Clock())
    delays = [t.failure("ip:1", "user:a") for _ in range(9)]
    assert delays[: throttle.FREE_FAILURES] == [0.0] * throttle.FREE_FAILURES
    grown = delays[throttle.FREE_FAILURES :]
    assert grown == sorted(grown) and grown[0] > 0
    assert max(grown) <= throttle.MAX_DELAY


def test_lockout_after_many_failures_then_it_expires() -> None:
    clock = Clock()
    t = LoginThrottle(clock=clock)
    for _ in range(throttle.LOCKOUT_FAILURES):
        t.failure("ip:1", "user:a")
    assert t.locked("ip:1")
    assert t.locked("ip:2", "user:a")  # the account is locked from anywhere
    assert not t.locked("ip:2", "user:b")
    clock.now += throttle.LOCKOUT_SECONDS + throttle.WINDOW + 1
    assert not t.locked("ip:1", "user:a")


def test_success_clears_the_account_but_not_the_address() -> None:
    t = LoginThrottle(clock=Clock())
    for _ in range(throttle.LOCKOUT_FAILURES - 1):
        t.failure("ip:1", "user:a")
    t.success("user:a")
    assert t.failure("ip:9", "user:a") == 0.0
    assert t.failure("ip:1", "user:b") > 0  # the address keeps its record


def test_memory_is_bounded_and_recent_keys_survive_a_flood() -> None:
    from mailroom.shared import SharedTable

    clock = Clock()
    table = SharedTable(64)
    t = LoginThrottle(table, clock=clock)
    for _ in range(throttle.LOCKOUT_FAILURES):
        t.failure("user:victim")
    for i in range(5000):  # a flood of other keys cannot grow the table
        clock.now += 0.001
        t.failure(f"ip:{i}")
    assert table.used() <= 64
    assert t.locked("ip:4999") is False  # one failure each: not locked
    assert t.failure("ip:4999") == 0.0


def test_state_is_shared_between_processes() -> None:
    import os

    t = LoginThrottle()
    pid = os.fork()
    if pid == 0:  # a second worker process counts failures
        for _ in range(throttle.LOCKOUT_FAILURES):
            t.failure("user:a")
        os._exit(0)
    os.waitpid(pid, 0)
    assert t.locked("user:a")


def test_a_table_file_is_shared_by_separate_daemons(tmp_path: object) -> None:
    import os
    from pathlib import Path

    from mailroom.shared import SharedTable

    path = Path(str(tmp_path)) / "run" / "login-throttle"
    pid = os.fork()
    if pid == 0:  # another daemon (say pop3d) opens the same file on its own
        other = LoginThrottle(SharedTable(256, path=path))
        for _ in range(throttle.LOCKOUT_FAILURES):
            other.failure("user:shared")
        os._exit(0)
    os.waitpid(pid, 0)
    mine = LoginThrottle(SharedTable(256, path=path))  # smtpd, opened later
    assert mine.locked("user:shared")
    assert not mine.locked("user:other")


def test_the_shared_table_remembers_key_hashes_within_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hashes are remembered per process (a connection hashes the same keys again and again);
    a remembered hash is the one blake2b gives, and the memory stays bounded."""
    from mailroom import shared
    from mailroom.shared import Record, SharedTable

    monkeypatch.setattr(shared, "_HASHES_KEPT", 8)
    table = SharedTable(64)

    def blake2b(key: str) -> int:
        digest = hashlib.blake2b(key.encode(), digest_size=8, key=table._salt).digest()
        return int.from_bytes(digest, "little") or 1

    keys = [f"key:{i}" for i in range(20)] * 2  # the second time from memory where remembered
    assert [table._hash(key) for key in keys] == [blake2b(key) for key in keys]
    assert 0 < len(table._hashes) <= 8
    with table.locked():
        for i in range(20):
            table.put(f"key:{i}", Record(a=i))
        assert [table.get(f"key:{i}").a for i in range(20)] == list(range(20))  # type: ignore[union-attr]


def test_a_locked_out_login_is_not_verified_and_reads_nothing_ahead() -> None:
    import asyncio
    from typing import Any

    class Directory:
        def __init__(self) -> None:
            self.asked: list[str] = []

        async def authenticate(self, login: str, password: str, meanwhile: Any = None) -> None:
            self.asked.append(login)
            if meanwhile is not None:
                meanwhile(login)

    t = LoginThrottle(clock=Clock())
    for _ in range(throttle.LOCKOUT_FAILURES):
        t.failure("ip:1", "user:a")
    directory = Directory()
    never: list[object] = []
    outcome, user = asyncio.run(
        throttle.throttled_login(directory, t, "1", "a", "pw", "imap", meanwhile=never.append)  # type: ignore[arg-type]
    )
    assert outcome is throttle.Outcome.LOCKED and user is None
    assert directory.asked == [] and never == []
    asyncio.run(throttle.throttled_login(directory, t, "2", "b", "pw", "imap", meanwhile=never.append))  # type: ignore[arg-type]
    assert directory.asked == ["b"] and never == ["b"]
