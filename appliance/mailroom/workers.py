"""Worker threads for blocking calls (store, delivery), with a cheaper hand-off than
loop.run_in_executor(): the daemons make one such trip per IMAP command and per message."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

DEFAULT_SIZE = min(32, (os.cpu_count() or 1) + 4)  # as many as asyncio's default executor


class WorkerThreads:
    """Threads that run the sessions' blocking calls, shared by the process.

    A lighter hand-off than loop.run_in_executor(): the call goes on a queue with the asyncio
    future it settles, and the thread settles that future through call_soon_threadsafe, with no
    concurrent.futures.Future chained to it (every IMAP command and every message received makes
    one such trip; this halves the CPU each costs). The threads start on first use and live as
    long as the process.
    """

    def __init__(self, size: int, name: str) -> None:
        self.size = size
        self.name = name
        self._reset()
        # A forked child has none of the parent's threads: it starts its own on first use.
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._queue: queue.SimpleQueue[
            tuple[asyncio.AbstractEventLoop, asyncio.Future[Any], Callable[[], Any]]
        ]
        self._queue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._started = False

    def run(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        """fn() in a worker thread; await the result (or the exception it raised)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if not self._started:
            self._start()
        self._queue.put((loop, future, fn))
        return future

    def _start(self) -> None:
        with self._lock:
            if not self._started:
                for n in range(self.size):
                    threading.Thread(target=self._work, name=f"{self.name}-{n}", daemon=True).start()
                self._started = True

    def _work(self) -> None:
        while True:
            self._one(*self._queue.get())  # the item's references die with _one's frame

    @staticmethod
    def _one(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], fn: Callable[[], Any]) -> None:
        try:
            result = fn()
        except BaseException as exc:  # the awaiting coroutine gets it, as from run_in_executor
            settle = functools.partial(_fail, future, exc)
        else:
            settle = functools.partial(_succeed, future, result)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(settle)


def _succeed(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():  # cancelled meanwhile (the session ended)
        future.set_result(result)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
