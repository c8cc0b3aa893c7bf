"""Durable file writes shared by the store and the queue."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class GroupSync:
    """fsync of one directory, shared by the threads that need it at the same time (group commit).

    A caller that renamed a file into the directory calls sync(); it returns
    once an fsync that *started after* the call has completed. While one fsync
    runs, later callers wait and the next fsync covers all of them: one fsync
    for a batch of concurrently arriving messages instead of one each.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cond = threading.Condition()
        self._requested = 0
        self._completed = 0
        self._running = False

    def sync(self) -> None:
        with self._cond:
            self._requested += 1
            ticket = self._requested
            while self._completed < ticket:
                if self._running:
                    self._cond.wait()
                    continue
                self._running = True
                batch = self._requested  # every rename before this point is covered
                self._cond.release()
                try:
                    fsync_dir(self.path)
                finally:
                    self._cond.acquire()
                    self._running = False
                    self._cond.notify_all()
                # Only reached when fsync succeeded; on failure the caller gets
                # the error and the waiters try again themselves.
                self._completed = max(self._completed, batch)


_group_syncs: dict[Path, GroupSync] = {}
_group_syncs_lock = threading.Lock()


def group_sync(path: Path) -> None:
    """fsync a directory, sharing the fsync with concurrent callers for the same directory."""
    with _group_syncs_lock:
        syncer = _group_syncs.get(path)
        if syncer is None:
            syncer = _group_syncs[path] = GroupSync(path)
    syncer.sync()


def read_small(path: Path | str) -> bytes | None:
    """The first 4096 bytes of a file (the store's small state files); None if it does not exist."""
    # os.open/os.read: a buffered open() adds an fstat, an isatty and a seek, on every check.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        return os.read(fd, 4096)
    finally:
        os.close(fd)


def read_ahead(path: Path | str, size: int) -> None:
    """Have the kernel start reading the first size bytes of a file in the background (a file
    that is missing or cannot be read ahead is simply not)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.posix_fadvise(fd, 0, size, os.POSIX_FADV_WILLNEED)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_synced(path: Path | str, data: bytes) -> None:
    """Create path (which must not exist) with data, fsynced; remove it again on any error."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        raise
    os.close(fd)


def replace_synced(path: Path, data: bytes) -> None:
    """Atomically replace path with data: tmp + fsync + rename + fsync of the directory.

    The caller holds whatever lock guards path: a tmp file left by a crash is removed."""
    tmp = path.with_name(f"{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    write_synced(tmp, data)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize
