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


def test_root_metric_files_go_to_the_daemon_user(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A worker that gets the pid of a root process's metric file must be able to open it."""
    if os.geteuid() != 0:
        import pytest

        pytest.skip("needs root to make root-owned files")
    mine = tmp_path / "counter_4242.db"
    mine.write_bytes(b"\0" * 16)
    other = tmp_path / "gauge_livesum_4243.db"
    other.write_bytes(b"\0" * 16)
    os.chown(other, 65534, 65534)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    daemon.hand_over_metric_files(65533, 65533)
    assert (mine.stat().st_uid, mine.stat().st_gid) == (65533, 65533)
    assert other.stat().st_uid == 65534  # not root's: left as it is
