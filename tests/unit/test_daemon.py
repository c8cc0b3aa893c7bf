"""The pre-fork worker supervision of the daemons."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

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


def test_the_log_formatter_writes_what_the_standard_one_writes() -> None:
    """asctime is formatted once a second; the lines must not differ from logging's own."""
    import logging
    import time

    ours, standard = daemon.LogFormatter(daemon.LOG_FORMAT), logging.Formatter(daemon.LOG_FORMAT)
    start = int(time.time())
    for created in (start + 0.001, start + 0.999, start + 1.5, start + 1.25, start - 3600.5, start + 2.0):
        record = logging.LogRecord("mailroom.smtp", logging.INFO, __file__, 1, "id=%s", ("x",), None)
        record.created, record.msecs = created, (created - int(created)) * 1000
        assert ours.format(record) == standard.format(record)
    record.created = start + 7.25
    assert ours.formatTime(record, "%H") == standard.formatTime(record, "%H")


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
@pytest.mark.parametrize("pin", [True, False])
def test_pinned_workers_each_run_on_one_cpu_round_robin(tmp_path, pin: bool) -> None:  # type: ignore[no-untyped-def]
    """run_workers(pin=True): worker i and the threads it starts later on the i-th allowed CPU."""
    import multiprocessing
    import threading

    cpus = sorted(os.sched_getaffinity(0))
    count = len(cpus) + 1  # one more than CPUs: the last shares the first CPU

    async def main(stop: asyncio.Event) -> None:
        seen: list[set[int]] = []
        thread = threading.Thread(target=lambda: seen.append(os.sched_getaffinity(0)))
        thread.start()
        thread.join()
        index = daemon._ThisWorker.index
        (tmp_path / f"worker-{index}").write_text(f"{sorted(os.sched_getaffinity(0))} {sorted(seen[0])}")
        await stop.wait()

    def supervise() -> None:
        daemon.run_workers(count, main, pin=pin)

    parent = multiprocessing.get_context("fork").Process(target=supervise)
    parent.start()
    deadline = time.monotonic() + 30
    while len(list(tmp_path.glob("worker-*"))) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.1)  # the last file's text is written
    os.kill(parent.pid, signal.SIGTERM)  # the parent stops every worker
    parent.join(30)
    assert parent.exitcode == 0
    for index in range(count):
        text = (tmp_path / f"worker-{index}").read_text()
        expected = [cpus[index % len(cpus)]] if pin else cpus
        assert text == f"{expected} {expected}"
