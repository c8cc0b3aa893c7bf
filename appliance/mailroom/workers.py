"""Worker threads for blocking calls (store, delivery), with a cheaper hand-off than
loop.run_in_executor(): the daemons make one such trip per IMAP command and per message."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

DEFAULT_SIZE = min(32, (os.cpu_count() or 1) + 4)  # as many as asyncio's default executor


_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[[], Any]]


class _Idle:
    """A thread waiting for work: its own lock, released to hand it a job."""

    __slots__ = ("job", "wake")

    def __init__(self) -> None:
        self.job: _Job | None = None
        self.wake = threading.Lock()
        self.wake.acquire()


class WorkerThreads:
    """Threads that run the sessions' blocking calls, shared by the process.

    A lighter hand-off than loop.run_in_executor(): the call goes to a thread with the asyncio
    future it settles, and the thread settles that future through call_soon_threadsafe, with no
    concurrent.futures.Future chained to it (every IMAP command and every message received makes
    one such trip; this halves the CPU each costs).

    Each idle thread waits on a lock of its own, and a call wakes exactly one: the thread that
    went idle last, whose stack and data are the likeliest to be still in the CPU's caches. (With
    one queue that every idle thread waits on, as queue.SimpleQueue has it, each call woke a
    second thread for nothing, which then fought the first for the GIL.) The threads start as
    calls need them, up to size, and live as long as the process; calls beyond that wait in order.
    """

    def __init__(self, size: int, name: str) -> None:
        self.size = size
        self.name = name
        self._reset()
        # A forked child has none of the parent's threads: it starts its own on first use.
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[_Idle] = []  # a stack: the last to go idle is woken first
        self._backlog: collections.deque[_Job] = collections.deque()
        self._threads = 0

    def run(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        """fn() in a worker thread; await the result (or the exception it raised)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        job: _Job = (loop, future, fn)
        with self._lock:
            if self._idle:
                idle = self._idle.pop()
                idle.job = job
                idle.wake.release()
                return future
            if self._threads >= self.size:
                self._backlog.append(job)
                return future
            self._threads += 1
            number = self._threads
        try:
            threading.Thread(
                target=self._work, args=(job,), name=f"{self.name}-{number}", daemon=True
            ).start()
        except RuntimeError as exc:  # no thread to be had: this call fails rather than waits forever
            with self._lock:
                self._threads -= 1
            future.set_exception(exc)
        return future

    def _work(self, job: _Job | None) -> None:
        me = _Idle()
        while job is not None:
            loop, settle = self._one(*job)
            job = None  # its references (the call, its result) go now, not at the next job
            with self._lock:
                if self._backlog:
                    job = self._backlog.popleft()
                else:
                    self._idle.append(me)
            # Settled only now that this thread is ready for more: the loop, woken by it, finds
            # it at the top of the idle stack for its next call instead of waking another.
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                loop.call_soon_threadsafe(settle)
            del loop, settle
            if job is None:
                me.wake.acquire()
                job, me.job = me.job, None

    @staticmethod
    def _one(
        loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], fn: Callable[[], Any]
    ) -> tuple[asyncio.AbstractEventLoop, Callable[[], None]]:
        """fn(), and what settles its future with the result (or the exception it raised)."""
        try:
            result = fn()
        except BaseException as exc:  # the awaiting coroutine gets it, as from run_in_executor
            return loop, functools.partial(_fail, future, exc)
        return loop, functools.partial(_succeed, future, result)


def _succeed(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():  # cancelled meanwhile (the session ended)
        future.set_result(result)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
