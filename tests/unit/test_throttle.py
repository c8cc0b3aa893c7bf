from __future__ import annotations

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


def test_memory_is_bounded(monkeypatch: object) -> None:
    import pytest

    mp = pytest.MonkeyPatch()
    mp.setattr(throttle, "MAX_KEYS", 50)
    try:
        t = LoginThrottle(clock=Clock())
        for i in range(500):
            t.failure(f"ip:{i}")
        assert len(t._records) <= 50
    finally:
        mp.undo()
