"""The kernel's notice of changes to open folders (store/changes.py), on a real inotify."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import shutil
import struct
from pathlib import Path

import pytest

from mailroom.store import changes
from mailroom.store.changes import IN_Q_OVERFLOW, FolderChanges
from tests.conftest import held_elsewhere


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "alice"
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True)
    if not changes._local(str(path)):
        pytest.skip("the test folder is not on a file system the notice trusts")
    return path


def test_deliveries_and_state_writes_count_and_reading_does_not(folder: Path) -> None:
    """What the watches see: new/ and the folder's directory. cur/ is left to a stat (a watch on
    a directory marks every cached entry of it: 10 ms for 100,000 messages)."""
    watcher = FolderChanges()
    watch = watcher.watch(str(folder))
    assert watch is not None
    start = watcher.count(watch)
    assert start is not None

    def counted(action: object) -> int:
        before = watcher.count(watch)
        assert before is not None
        action()  # type: ignore[operator]
        after = watcher.count(watch)
        assert after is not None
        return after - before

    (folder / "tmp" / "m1").write_bytes(b"x")
    assert counted(lambda: os.rename(folder / "tmp" / "m1", folder / "new" / "m1")) > 0  # delivery
    assert counted(lambda: os.rename(folder / "new" / "m1", folder / "cur" / "m1:2,")) > 0
    assert counted(lambda: os.rename(folder / "cur" / "m1:2,", folder / "cur" / "m1:2,S")) == 0
    state = folder / "mailroom-state.a"
    state.write_bytes(b"1\n")
    assert counted(lambda: state.write_bytes(b"2\n")) > 0  # the state rewritten in place
    assert counted(lambda: os.link(state, folder / "mailroom-state.tmp")) > 0
    assert counted(lambda: os.replace(folder / "mailroom-state.tmp", folder / "mailroom-state")) > 0

    def read_everything() -> None:
        os.listdir(folder / "cur")
        state.read_bytes()
        fd = os.open(folder / "mailroom-lock", os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.close(fd)

    read_everything()  # creates the lock file: counted once
    assert counted(read_everything) == 0


def test_a_folder_that_goes_away_has_no_count(folder: Path) -> None:
    watcher = FolderChanges()
    watch = watcher.watch(str(folder))
    assert watch is not None and watcher.count(watch) is not None
    shutil.rmtree(folder / "new")
    assert watcher.count(watch) is None
    assert watcher.count(watch) is None  # for good, even with the events read


def test_unwatched_and_untrusted_folders(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    watcher = FolderChanges()
    watch = watcher.watch(str(folder))
    assert watch is not None
    watcher.unwatch(watch)
    assert watcher.count(watch) is None
    assert watch.wds == []  # removed from the kernel at that next call
    assert watcher.watch(str(folder / "missing")) is None
    monkeypatch.setattr(changes, "LOCAL_FILE_SYSTEMS", frozenset())  # say, NFS
    assert watcher.watch(str(folder)) is None


def test_a_busy_reader_makes_the_loop_look_instead_of_wait(folder: Path) -> None:
    watcher = FolderChanges()
    watch = watcher.watch(str(folder))
    assert watch is not None
    with held_elsewhere(watcher._lock):
        assert watcher.count(watch, wait=False) is None
    assert watcher.count(watch, wait=False) is not None


def test_an_overflow_of_the_queue_counts_as_a_change_everywhere(tmp_path: Path, folder: Path) -> None:
    other = tmp_path / "bob"
    for sub in ("cur", "new"):
        (other / sub).mkdir(parents=True)
    watcher = FolderChanges()
    a, b = watcher.watch(str(folder)), watcher.watch(str(other))
    assert a is not None and b is not None
    before = watcher.count(a), watcher.count(b)
    with watcher._lock:
        watcher._count(struct.pack("iIII", -1, IN_Q_OVERFLOW, 0, 0))
    after = watcher.count(a), watcher.count(b)
    assert after[0] == before[0] + 1 and after[1] == before[1] + 1  # type: ignore[operator]


def test_a_forked_worker_has_an_instance_of_its_own(folder: Path) -> None:
    watcher = FolderChanges()
    watch = watcher.watch(str(folder))
    assert watch is not None
    parent_fd = watcher._fd
    result = multiprocessing.get_context("fork").Queue()

    def child() -> None:
        inherited = watcher.count(watch)  # the parent's watch counts nothing here
        mine = watcher.watch(str(folder))
        before = None if mine is None else watcher.count(mine)
        (folder / "new" / "from-child").write_bytes(b"x")
        after = None if mine is None else watcher.count(mine)
        result.put((watcher._fd != parent_fd or parent_fd is None, inherited, before, after))

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    process.join(30)
    assert process.exitcode == 0
    own_instance, inherited, before, after = result.get(timeout=5)
    assert own_instance and inherited is None
    assert before is not None and after is not None and after > before
    assert (watcher.count(watch) or 0) > 0  # the parent's instance saw the change too


def test_a_flood_of_events_is_left_to_a_thread_that_may_wait(folder: Path) -> None:
    """The event loop reads at most one buffer of events; more means 'do not know'."""
    watcher = FolderChanges()
    watch = watcher.watch(str(folder))
    assert watch is not None and watcher.count(watch) == 0
    for i in range(1500):  # each creation is an event of 16 + about 64 octets
        (folder / "new" / f"{i:060d}").touch()
    assert watcher.count(watch, wait=False) is None
    total = watcher.count(watch)
    assert total is not None and total >= 1500
    assert watcher.count(watch, wait=False) == total


def test_prepared_early_the_instance_is_there_before_any_watch() -> None:
    watcher = FolderChanges()
    assert watcher._fd is None
    watcher.prepare()
    assert watcher._fd is not None and watcher._by_wd == {}
