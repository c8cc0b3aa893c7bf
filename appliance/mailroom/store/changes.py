"""The kernel's notice of changes to the folders a process has open (inotify), where it is whole.

`Folder.quiet` runs on the event loop before nearly every IMAP command, to tell that nothing
changed since the folder's last look without a trip to a worker thread. Looking means a stat of
`cur/` and `new/` and a read of the state file: five system calls, each several times dearer
right after a big FETCH has pushed everything out of the CPU's caches. With a watch on the
folder's directory (where the state file is rewritten at every change Mailroom makes) and on
`new/` (deliveries), one read that finds no event and a stat of `cur/` (for other Maildir tools)
say the same thing. `cur/` itself is not watched: a watch on a directory makes the kernel mark
each of its cached entries, 10 ms for 100,000 messages at a folder's first open.

The kernel queues an event inside the system call that makes the change, before that call
returns: whatever a client was told had happened before it sent its command has its event
waiting by the time the command is read. A watch is used only on the local file systems listed
below, where every change goes through this kernel; elsewhere (NFS, FUSE) and when watches run
out, the folder is looked at as before. Overflow of the event queue counts as a change to every
folder.

Events that change nothing IMAP reports (the index saved, a lock file closed) only make the next
command take the long way once.
"""

from __future__ import annotations

import collections
import ctypes
import errno
import os
import struct
import threading
from dataclasses import dataclass, field

# Linux <sys/inotify.h>
IN_MODIFY = 0x002
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_UNMOUNT = 0x2000
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

WATCHED = IN_MODIFY | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF
GONE = IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT | IN_IGNORED
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of name (NAME_MAX 255)
READ_SIZE = 65536

# statfs f_type of the file systems where every change is made by this kernel.
LOCAL_FILE_SYSTEMS = frozenset(
    {
        0xEF53,  # ext2, ext3, ext4
        0x58465342,  # xfs
        0x9123683E,  # btrfs
        0x01021994,  # tmpfs
        0xF2F52010,  # f2fs
        0x2FC12FC1,  # zfs
        0x794C7630,  # overlayfs (a container's root)
    }
)


@dataclass(eq=False)
class Watch:
    """The watches of one folder: changes counts every event on any of them."""

    wds: list[int] = field(default_factory=list)
    changes: int = 0
    gone: bool = False  # a watched directory went away: the count means nothing any more


class FolderChanges:
    """One inotify instance per process, read by whichever thread asks first (under a lock)."""

    def __init__(self) -> None:
        self._fd: int | None = None
        # Whether this process's folders are watched at all (see prepare).
        self.wanted = False
        self._reset()
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        """A worker gets an instance of its own; the parent's must not lose events to it. The
        watches of listings the parent had open count nothing here: they are gone."""
        for watch in self._by_wd.values():
            watch.gone = True
        if self._fd is not None:
            os.close(self._fd)
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        # Watches of listings that were dropped, removed at the next call that holds the lock:
        # a listing can be freed by the garbage collector in any thread at any allocation,
        # including one that holds the lock already.
        self._dropped: collections.deque[Watch] = collections.deque()
        self._fd: int | None = None
        self._broken = False  # no inotify here: never try again
        self._by_wd: dict[int, Watch] = {}
        self._overflows = 0

    def prepare(self) -> None:
        """Watch this process's folders from now on (folder.py _notice), and make its inotify
        instance now (a worker at start), not at the first open of a folder, which a client is
        waiting for (0.1-0.4 ms with loading libc's functions). Only a process whose event loop
        asks whether a folder changed (imapd's workers: Folder.quiet) gains by the counts; in
        others (pop3d, the CLI) a look at the folder serves as well, and costs no watch."""
        self.wanted = True
        _local("/")
        with self._lock:
            self._instance()

    def watch(self, path: str) -> Watch | None:
        """Watch the folder at path (its directory and new/); None where that cannot be
        trusted or done (another file system, no watches left): look at the folder instead."""
        if not _local(path):
            return None
        watch = Watch()
        with self._lock:
            self._remove_dropped()
            fd = self._instance()
            if fd is None:
                return None
            libc = _libc()
            for sub in ("", "/new"):
                wd = libc.inotify_add_watch(fd, os.fsencode(path + sub), WATCHED | IN_ONLYDIR)
                if wd < 0 or wd in self._by_wd:  # out of watches; or the same directory twice
                    self._remove(watch)
                    return None
                watch.wds.append(wd)
                self._by_wd[wd] = watch
        return watch

    def unwatch(self, watch: Watch) -> None:
        """Stop watching (soon: see _dropped); the watch counts as gone at once."""
        watch.gone = True
        self._dropped.append(watch)

    def count(self, watch: Watch, *, wait: bool = True) -> int | None:
        """The folder's changes so far (a number that only grows); None if the watch is gone or,
        with wait=False (on the event loop), if another thread is reading the events right now
        or more are queued than one read takes (a flood of deliveries: read them elsewhere)."""
        if not self._lock.acquire(blocking=wait):
            return None
        try:
            self._remove_dropped()
            drained = self._drain(None if wait else 1)
            return None if watch.gone or not drained else watch.changes + self._overflows
        finally:
            self._lock.release()

    # ----------------------------------------------------------------- lock held

    def _instance(self) -> int | None:
        if self._fd is None and not self._broken:
            try:
                fd = _libc().inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
            except (OSError, AttributeError):
                fd = -1
            if fd < 0:
                self._broken = True
            else:
                self._fd = fd
        return self._fd

    def _remove_dropped(self) -> None:
        while self._dropped:
            self._remove(self._dropped.popleft())

    def _remove(self, watch: Watch) -> None:
        watch.gone = True
        for wd in watch.wds:
            if self._by_wd.pop(wd, None) is watch and self._fd is not None:
                _libc().inotify_rm_watch(self._fd, wd)  # EINVAL if the kernel dropped it: fine
        watch.wds.clear()

    def _drain(self, reads: int | None) -> bool:
        """Count the queued events, in at most `reads` reads; whether the queue is now empty."""
        if self._fd is None:
            return True
        while reads is None or reads > 0:
            try:
                data = os.read(self._fd, READ_SIZE)
            except BlockingIOError:
                return True
            except OSError as exc:  # pragma: no cover - an inotify read does not fail otherwise
                if exc.errno == errno.EINTR:
                    continue
                raise
            self._count(data)
            if len(data) <= READ_SIZE - _EVENT.size - 256:  # room for one more: that was all
                return True
            if reads is not None:
                reads -= 1
        return False

    def _count(self, data: bytes) -> None:
        at = 0
        while at + _EVENT.size <= len(data):
            wd, mask, _cookie, size = _EVENT.unpack_from(data, at)
            at += _EVENT.size + size
            if mask & IN_Q_OVERFLOW:
                self._overflows += 1
                continue
            watch = self._by_wd.get(wd)
            if watch is None:
                continue
            watch.changes += 1
            if mask & GONE:
                if mask & IN_IGNORED:
                    self._by_wd.pop(wd, None)
                watch.gone = True


def _local(path: str) -> bool:
    """Whether path is on one of LOCAL_FILE_SYSTEMS."""
    buf = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on 64-bit Linux
    try:
        if _libc().statfs(os.fsencode(path), buf) != 0:
            return False
    except (OSError, AttributeError):
        return False
    return struct.unpack_from("l", buf.raw)[0] in LOCAL_FILE_SYSTEMS


_LIBC: list[ctypes.CDLL] = []


def _libc() -> ctypes.CDLL:
    # The process's own symbols, which include libc's: ctypes.util.find_library would run
    # ldconfig in a subprocess, milliseconds at a folder's first open.
    if not _LIBC:
        _LIBC.append(ctypes.CDLL(None, use_errno=True))
    return _LIBC[0]


CHANGES = FolderChanges()
