"""Writing a folder's ``mailroom-state`` without replacing its inode each time.

The state file is rewritten after every change to the folder (a flag change, an APPEND, an
expunge), under the folder lock. Readers never lock: they open the name and read it, so a new
state must appear at the name whole. The usual way, a temporary file renamed over the old one,
frees the old inode with every write, and on ext4 that is slow: the rename flushes the new
file's delayed allocation, and freeing the old block issues a discard where the file system is
mounted with ``discard`` (90-170 µs a write on our test VM, most of the time of a flag change).

Instead two inodes take turns, each kept alive by a name of its own (``mailroom-state.a``,
``mailroom-state.b``): the new state is written in place into the one that ``mailroom-state``
does not name, padded to a fixed size so it never shrinks, then given the name by a link and a
rename (5 µs). No inode is freed and no block is allocated after the first two writes.

A reader that opened the name just before a swap and reads while the next write overwrites
that inode may get a mixture; every reader treats the bytes only as a hint that something
changed (the folder's warm check, the IDLE watcher) or reads under the folder lock, which
writers hold. A crash may leave the name on either inode and either inode torn; the state is
healed from the names, the uidlist and the high-water mark as before (folder.py, Rebuild).
"""

from __future__ import annotations

import contextlib
import os

from ..fsutil import fsync_dir, write_synced

STATE_FILE = "mailroom-state"
SLOTS = (f"{STATE_FILE}.a", f"{STATE_FILE}.b")
SIZE = 128  # the longest state (20-digit HIGHESTMODSEQ) is 88 bytes; newlines pad it


def write_state_file(folder: str, raw: bytes, durable: bool) -> bytes:
    """Make raw the content of folder/mailroom-state (the folder lock held); if durable, on disk
    before this returns. Returns the bytes the file now reads (raw padded with newlines)."""
    path = os.path.join(folder, STATE_FILE)
    data = raw.ljust(SIZE, b"\n")
    try:
        active = os.stat(path).st_ino
    except FileNotFoundError:
        active = None
    slot_path, fd, size = _free_slot(folder, active)
    try:
        if os.pwrite(fd, data, 0) != len(data):
            raise OSError(f"short write to {slot_path}")
        if size > len(data):
            os.ftruncate(fd, len(data))
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    tmp = path + ".tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # left by a crash between the link and the rename
    try:
        os.link(slot_path, tmp)
    except OSError:  # a file system without hard links: a copy renamed over the name instead
        if durable:
            write_synced(tmp, data)
        else:
            _write_new(tmp, data)
    os.replace(tmp, path)
    if durable:
        fsync_dir(folder)
    return data


def _write_new(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _free_slot(folder: str, active: int | None) -> tuple[str, int, int]:
    """(path, open fd, size) of the slot whose inode the name does not have; made if missing."""
    for slot in SLOTS:
        slot_path = os.path.join(folder, slot)
        fd = os.open(slot_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        st = os.fstat(fd)
        if st.st_ino != active:
            return slot_path, fd, st.st_size
        os.close(fd)
    # Both slots are the inode the name has (linked so by hand): slot a gets an inode of its own.
    slot_path = os.path.join(folder, SLOTS[0])
    os.unlink(slot_path)
    return slot_path, os.open(slot_path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600), 0
