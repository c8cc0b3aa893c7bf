"""The pre-fork worker supervision of the daemons."""

from __future__ import annotations

import asyncio
import os

from mailroom import daemon


def test_workers_that_keep_dying_at_start_stop_the_daemon() -> None:
    async def broken(stop: asyncio.Event) -> None:
        raise RuntimeError("cannot serve")

    pid = os.fork()
    if pid == 0:  # the daemon's parent process, in a child so that this test survives it
        try:
            daemon.run_workers(2, broken)
        except SystemExit as exc:
            os._exit(int(exc.code or 0))
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 1
