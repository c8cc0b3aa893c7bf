"""State that the worker processes of one daemon share: a small table in shared memory.

Login failures and connection counts must be seen by every worker of a
daemon, or an attacker would get one allowance per worker. The table is an
anonymous shared mapping made before the workers fork, so all of them see
the same bytes; a POSIX record lock (lockf) makes updates atomic across
processes and is released by the kernel if a worker dies holding it.

Fixed size, no deletes: a record that has aged out is simply reset by the
code that reads it, and when a key's probe window is full the oldest record
in it is overwritten, so memory stays bounded whatever an attacker sends.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import mmap
import os
import secrets
import struct
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_SLOT = struct.Struct("<Qqqdd")  # key hash (0: free), a, b, t1, t2
_HEADER = 16  # the hash salt
PROBE = 32
_HASHES_KEPT = 4096  # key hashes remembered per process


@dataclass
class Record:
    a: int = 0
    b: int = 0
    t1: float = 0.0
    t2: float = 0.0


class SharedTable:
    def __init__(self, slots: int = 16384, path: Path | None = None) -> None:
        """An anonymous table (shared with forked children), or one in a file at path.

        A file-backed table is shared by every process that opens the same path:
        smtpd and pop3d share their login throttling that way. The file holds the
        hash salt in its first bytes, so all of them hash keys alike.
        """
        self.slots = slots
        self._thread_lock = threading.Lock()
        size = _HEADER + slots * _SLOT.size
        if path is None:
            self._lock_file = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the table
            self._mem = mmap.mmap(-1, size)  # MAP_SHARED | MAP_ANONYMOUS
            self._mem[:_HEADER] = secrets.token_bytes(_HEADER)
        else:
            path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            self._lock_file = os.fdopen(fd, "r+b")
            fcntl.lockf(fd, fcntl.LOCK_EX)
            try:
                if os.fstat(fd).st_size != size:  # new, or from a build with another layout
                    os.ftruncate(fd, 0)
                    os.ftruncate(fd, size)
                    os.pwrite(fd, secrets.token_bytes(_HEADER), 0)
            finally:
                fcntl.lockf(fd, fcntl.LOCK_UN)
            self._mem = mmap.mmap(fd, size)
        self._salt = bytes(self._mem[:_HEADER])  # keys hash unpredictably: no chosen collisions
        self._hashes: dict[str, int] = {}

    def _hash(self, key: str) -> int:
        # Remembered: a connection's admission and release hash the same 20 or so keys, most of
        # them the same for every connection (one per worker), and blake2b is most of their cost.
        found = self._hashes.get(key)
        if found is None:
            if len(self._hashes) >= _HASHES_KEPT:  # many clients or names: stay bounded
                self._hashes.clear()
            digest = hashlib.blake2b(key.encode(), digest_size=8, key=self._salt).digest()
            found = self._hashes[key] = int.from_bytes(digest, "little") or 1
        return found

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the table for several get/put calls that must be atomic together."""
        with self._thread_lock:
            fd = self._lock_file.fileno()
            fcntl.lockf(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.lockf(fd, fcntl.LOCK_UN)

    def _find(self, h: int) -> tuple[int, bool]:
        """(slot, found): the key's slot, else a free one, else the oldest in its window."""
        start = h % self.slots
        oldest, oldest_t = start, float("inf")
        for i in range(PROBE):
            slot = (start + i) % self.slots
            key, _, _, t1, _ = _SLOT.unpack_from(self._mem, _HEADER + slot * _SLOT.size)
            if key == h:
                return slot, True
            if key == 0:
                # Slots are never emptied (a full window evicts, it does not delete), so a key
                # is always stored before the first free slot of its window: it is not here.
                return slot, False
            if t1 < oldest_t:
                oldest, oldest_t = slot, t1
        return oldest, False

    def get(self, key: str) -> Record | None:
        """The record of a key (call inside locked())."""
        slot, found = self._find(self._hash(key))
        if not found:
            return None
        _, a, b, t1, t2 = _SLOT.unpack_from(self._mem, _HEADER + slot * _SLOT.size)
        return Record(a, b, t1, t2)

    def put(self, key: str, record: Record) -> None:
        """Store a record (call inside locked())."""
        h = self._hash(key)
        slot, _ = self._find(h)
        _SLOT.pack_into(self._mem, _HEADER + slot * _SLOT.size, h, record.a, record.b, record.t1, record.t2)

    def used(self) -> int:
        return sum(
            1
            for slot in range(self.slots)
            if _SLOT.unpack_from(self._mem, _HEADER + slot * _SLOT.size)[0] != 0
        )


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
