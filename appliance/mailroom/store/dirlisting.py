"""Listing a big directory that is probably not in the page cache: its blocks read by several
threads at once.

The cur/ directory of 100,000 messages is about 8 MB of blocks. getdents reads them one at a
time, each a synchronous disk read (ext4 walks an indexed directory in hash order, which is not
the order of its blocks on disk, so the kernel reads nothing ahead): about 0.19 s from an empty
page cache on a virtual disk, against 0.04 s cached. Readers that start at different positions
of the directory keep several reads in flight: about 0.08 s with eight (bench/, first open).

The helper threads only bring the blocks into the page cache: getdents64 into a buffer of their
own through ctypes, which lets go of the GIL for the call, so no Python object is made per
name and the thread listing the names is not slowed. The names come from one plain os.listdir,
so what the listing holds never depends on the helpers: where directory positions are not what
we take them for (another filesystem), they read less or nothing, and the listing is the same.

Positions: ext4 with 64-bit hashes (dir_index, the default) gives an entry's position in an
indexed directory as its hash, ((major >> 1) << 32) | minor, up to 2**63 - 1. The helpers take
the segments of that range after the first; os.listdir reads the first and then finds the rest
cached, or waits for the helper still reading it.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from typing import Any

log = logging.getLogger(__name__)

READERS = 8
BIG_DIRECTORY = 1 << 20  # bytes of directory (about 12,000 names): below it, os.listdir alone
_POSITIONS = 1 << 63
_BUFFER = 1 << 16


def _libc_getdents64() -> Any:
    try:
        function = ctypes.CDLL(None, use_errno=True).getdents64  # glibc 2.30 and later
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
    function.restype = ctypes.c_ssize_t
    return function


_getdents64 = _libc_getdents64()


def _read_blocks(getdents64: Any, path: str, start: int, end: int) -> None:
    """Read the directory entries from position start until past end, for the page cache."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.lseek(fd, start, os.SEEK_SET)
        buffer = ctypes.create_string_buffer(_BUFFER)
        while getdents64(fd, buffer, _BUFFER) > 0 and os.lseek(fd, 0, os.SEEK_CUR) < end:
            pass
    except OSError as exc:  # a filesystem that does not seek in directories: nothing read ahead
        log.debug("no parallel read of %s: %s", path, exc)
    finally:
        os.close(fd)


def read_ahead_dir(path: str, readers: int = READERS) -> list[threading.Thread]:
    """Start threads that read the directory's blocks from readers - 1 positions after its
    start; the caller lists it from the start. Returns the threads (they end by themselves)."""
    getdents64 = _getdents64
    if getdents64 is None or readers < 2:
        return []
    step = _POSITIONS // readers
    threads = []
    for segment in range(1, readers):
        end = _POSITIONS if segment == readers - 1 else (segment + 1) * step
        thread = threading.Thread(
            target=_read_blocks,
            args=(getdents64, path, segment * step, end),
            name="dir-read-ahead",
            daemon=True,
        )
        try:
            thread.start()
        except RuntimeError:  # no more threads to be had: os.listdir reads the rest itself
            break
        threads.append(thread)
    return threads


def listdir(path: str, size: int) -> list[str]:
    """os.listdir(path), with the blocks of a big directory (size: its st_size) read in
    parallel: for a listing that may find them out of the page cache (a first open)."""
    if size >= BIG_DIRECTORY:
        read_ahead_dir(path)
    return os.listdir(path)
