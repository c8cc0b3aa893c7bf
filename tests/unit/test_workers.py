"""The worker threads that run the daemons' blocking calls (workers.WorkerThreads): imapd's
store calls, smtpd's deliveries."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from mailroom.imap.base import WORKERS
from mailroom.smtp.handler import DELIVERY
from mailroom.workers import WorkerThreads


def test_results_and_exceptions_reach_the_awaiting_coroutine_from_other_threads() -> None:
    workers = WorkerThreads(3, "test")
    main = threading.get_ident()

    def boom() -> None:
        raise FileNotFoundError("gone")

    async def run() -> None:
        results = await asyncio.gather(
            *(workers.run(lambda n=n: (n * n, threading.get_ident())) for n in range(50))
        )
        assert [square for square, _ in results] == [n * n for n in range(50)]
        threads = {ident for _, ident in results}
        assert main not in threads and 1 <= len(threads) <= 3
        with pytest.raises(FileNotFoundError, match="gone"):
            await workers.run(boom)

    asyncio.run(run())
    asyncio.run(run())  # a second event loop is served by the same threads


def test_one_call_at_a_time_goes_to_the_thread_that_went_idle_last() -> None:
    workers = WorkerThreads(3, "test")
    started = threading.Barrier(3)

    async def run() -> set[int]:
        # Three calls at once start all three threads.
        await asyncio.gather(*(workers.run(lambda: started.wait(5)) for _ in range(3)))
        # Then, one at a time, every call is for the same thread: the others stay asleep. (A
        # thread is back among the idle before it settles its call, so the next call finds it.)
        return {await workers.run(threading.get_ident) for _ in range(20)}

    assert len(asyncio.run(run())) == 1


def test_calls_beyond_the_size_wait_their_turn() -> None:
    workers = WorkerThreads(2, "test")
    release = threading.Event()
    running: set[int] = set()

    def call(n: int) -> int:
        running.add(threading.get_ident())
        release.wait(5)
        return n

    async def run() -> list[int]:
        futures = [workers.run(lambda n=n: call(n)) for n in range(6)]
        await asyncio.sleep(0.1)
        assert len(running) == 2  # two threads, the other four calls wait
        release.set()
        return list(await asyncio.gather(*futures))

    assert asyncio.run(run()) == list(range(6))


def test_a_call_fails_when_no_thread_can_be_started(monkeypatch: pytest.MonkeyPatch) -> None:
    workers = WorkerThreads(1, "test")

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    async def run() -> None:
        with monkeypatch.context() as patch:
            patch.setattr(threading.Thread, "start", refuse)
            with pytest.raises(RuntimeError, match="start new thread"):
                await workers.run(lambda: 1)
        # The pool does not count the thread it failed to start: the next call gets one.
        assert await asyncio.wait_for(workers.run(lambda: 2), 5) == 2

    asyncio.run(run())


def test_a_cancelled_wait_leaves_the_call_to_finish_quietly() -> None:
    workers = WorkerThreads(1, "test")
    release, finished = threading.Event(), threading.Event()
    errors: list[dict] = []

    def slow() -> str:
        release.wait(5)
        finished.set()
        return "late"

    async def run() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, context: errors.append(context))
        future = workers.run(slow)
        future.cancel()
        release.set()
        assert await asyncio.to_thread(finished.wait, 5)
        await asyncio.sleep(0.05)  # the settling callback runs on this loop, finds it cancelled
        assert await workers.run(lambda: "next") == "next"

    asyncio.run(run())
    assert errors == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
@pytest.mark.parametrize("workers", [WORKERS, DELIVERY], ids=["imap-store", "smtp-delivery"])
def test_a_forked_child_starts_its_own_threads(workers: WorkerThreads) -> None:
    async def call() -> int:
        return await workers.run(os.getpid)

    assert asyncio.run(call()) == os.getpid()  # the parent's threads are running
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        try:
            ok = asyncio.run(asyncio.wait_for(call(), 5)) == os.getpid()
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.close(read)
    os.waitpid(pid, 0)
    assert answer == b"1"
