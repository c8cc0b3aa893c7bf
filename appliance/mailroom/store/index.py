"""The persistent index of a folder: its listing saved to disk, so a new process opens a big
folder without listing and parsing every file name in cur/.

It is a cache and nothing else. The names in cur/ and the state file stay the truth: the index
records the state file's bytes and cur/'s inode and mtime at the moment it was written, and is
trusted as it stands only if both are still the same (the same check a warm listing makes, see
folder.py "Cheap re-check"). Otherwise its names serve as the previous listing that a rescan
compares cur/ with, so only names added since are parsed. A missing, torn or foreign index is
ignored; deleting it is always safe.

Layout of ``mailroom-index`` (native byte order, recorded in the header):

    mailroom-index 5 <byteorder> <count> <cur ino> <cur mtime_ns> <state len> <table len>
        <names len> <first unseen UID or 0> <new/ mtime_ns when found empty, or 0>
        <crc32 of state to uids> <crc32 of the flag ids> <crc32 of the modseqs>
        <crc32 of the names>\\n
    the state file's bytes
    the flag table: the distinct info-letter strings, joined by "\\n"
    uids: count x uint32, ascending
    flag ids: count x uint32, indexes into the flag table
    modseqs: count x uint64
    names: count file names joined by "\\n"

Opening reads the header and the UIDs (4 bytes per message): all SELECT needs, with the first
message without \\Seen (its UNSEEN) in the header. The flag ids (for FETCH FLAGS and SEARCH), the
modseqs (CONDSTORE) and the names (about 60 bytes per message, for message contents) are read
from that same open file the first time each is needed, so a replaced index never mixes with
the one the UIDs came from. A cold SELECT of 100,000 messages reads 400 KB instead of 1.6 MB.
The first open of a folder in a process asks the kernel to read the head of the index and the
state file in the background (folder.py, _shared_listing), so the disk works on both at once.
The mtime of new/ when it was last found empty spares a new process the listing of new/ (a
disk read when cold) while new/ keeps that mtime; see folder.py _probe for when it is trusted.
"""

from __future__ import annotations

import contextlib
import os
import sys
import zlib
from array import array
from dataclasses import dataclass
from typing import BinaryIO

INDEX_FILE = "mailroom-index"
_MAGIC = b"mailroom-index"
_VERSION = b"5"
_HEADER_MAX = 512


@dataclass
class Columns:
    """A listing as parallel columns, by ascending UID."""

    uids: array  # "I"
    modseqs: array  # "Q"
    fids: array  # "I", into table
    table: list[str]  # info letters per flag id


@dataclass
class SavedIndex:
    """An index read from disk: its snapshot, its UIDs, and the way to its other columns."""

    state: bytes
    cur_ino: int
    cur_mtime_ns: int
    uids: array  # the listing takes this array over and changes it: sizes go by count
    count: int
    table: list[str]
    first_unseen: int  # the UID of the first message without \\Seen; 0: there is none
    new_empty_at: int  # new/'s mtime_ns when it was found empty; 0: not known
    _handle: BinaryIO | None
    _fids_at: int
    _crcs: tuple[int, int, int]  # flag ids, modseqs, names
    _names_len: int
    _unread: int = 3  # parts still to read: flag ids, modseqs, names

    def fids(self) -> array | None:
        """The flag-id column; None if it cannot be read back intact."""
        size = 4 * self.count
        raw = self._read(self._fids_at, size)
        if raw is None or len(raw) != size or zlib.crc32(raw) != self._crcs[0]:
            return None
        if not _fids_valid(raw, len(self.table)):
            return None
        fids = array("I")
        fids.frombytes(raw)
        return fids

    def modseqs(self) -> array | None:
        """The modseq column; None if it cannot be read back intact."""
        size = 8 * self.count
        raw = self._read(self._fids_at + 4 * self.count, size)
        if raw is None or len(raw) != size or zlib.crc32(raw) != self._crcs[1]:
            return None
        modseqs = array("Q")
        modseqs.frombytes(raw)
        return modseqs

    def names(self) -> list[str] | None:
        """The file names, in column order; None if they cannot be read back intact."""
        raw = self._read(self._fids_at + 12 * self.count, self._names_len)
        if raw is None or len(raw) != self._names_len or zlib.crc32(raw) != self._crcs[2]:
            return None
        names = raw.decode("utf-8", "surrogateescape").split("\n") if raw else []
        return names if len(names) == self.count else None

    def _read(self, at: int, size: int) -> bytes | None:
        """One lazily read part (each is read once); the file is closed after the last."""
        handle = self._handle
        if handle is None:
            return None
        self._unread -= 1
        try:
            handle.seek(at)
            return handle.read(size)
        except OSError:
            return None
        finally:
            if self._unread <= 0:
                self.close()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


PREFETCH_BYTES = 512 * 1024  # the header and the UIDs of up to 130,000 messages


def read_index(folder: str) -> SavedIndex | None:
    """The folder's saved index, or None if there is none or it does not read back intact."""
    try:
        # Unbuffered: a buffered file reads ahead into the columns a cold SELECT does not need.
        handle = open(os.path.join(folder, INDEX_FILE), "rb", buffering=0)  # noqa: SIM115 - kept open
    except OSError:
        return None
    try:
        saved = _parse(handle)
    except (OSError, ValueError, IndexError, UnicodeDecodeError):
        saved = None
    if saved is None:
        handle.close()
    return saved


def _parse(handle: BinaryIO) -> SavedIndex | None:
    chunk = handle.read(4096)
    end = chunk.find(b"\n", 0, _HEADER_MAX)
    if end == -1:
        return None
    fields = chunk[:end].split()
    if len(fields) != 15 or fields[0] != _MAGIC or fields[1] != _VERSION:
        return None
    if fields[2].decode("ascii") != sys.byteorder:
        return None
    count, ino, mtime, state_len, table_len, names_len, first_unseen, new_empty_at, crc_head, *crcs = map(
        int, fields[3:]
    )
    if min(count, state_len, table_len, names_len, first_unseen, new_empty_at) < 0 or state_len > 4096:
        return None
    at = end + 1 + state_len + table_len  # where the UIDs begin
    head = chunk[end + 1 : at]
    if len(head) != state_len + table_len:
        return None
    # The UIDs go straight from the file into the array: on a cold start each extra copy of
    # 400 KB costs its page faults (about 0.15 ms per copy here), which is most of a SELECT.
    uids = _read_uids(handle, chunk[at:], count)
    if uids is None or zlib.crc32(uids, zlib.crc32(head)) != crc_head:
        return None
    return SavedIndex(
        state=head[:state_len],
        cur_ino=ino,
        cur_mtime_ns=mtime,
        uids=uids,
        count=count,
        table=head[state_len:].decode("ascii").split("\n"),
        first_unseen=first_unseen,
        new_empty_at=new_empty_at,
        _handle=handle,
        _fids_at=at + 4 * count,
        _crcs=(crcs[0], crcs[1], crcs[2]),
        _names_len=names_len,
    )


def _read_uids(handle: BinaryIO, start: bytes, count: int) -> array | None:
    """count UIDs: those among the bytes read already (start), then the rest read into place."""
    size = 4 * count
    if size > os.fstat(handle.fileno()).st_size:
        return None  # a damaged count: never allocate more than the file holds
    uids = array("I", [0]) * count
    with memoryview(uids) as whole, whole.cast("B") as view:
        done = min(len(start), size)
        view[:done] = start[:done]
        while done < size:
            got = handle.readinto(view[done:])
            if not got:
                return None  # the file ends early: torn
            done += got
    return uids


def _fids_valid(raw: bytes, table_len: int) -> bool:
    """Every flag id indexes the table (checked without a Python loop over 100,000 ids)."""
    if not raw:
        return True
    if table_len > 256 or sys.byteorder != "little":
        fids = array("I")
        fids.frombytes(raw)
        return max(fids) < table_len
    # Each id is below 256: its three high bytes are zero and its low byte is a table index.
    high_bytes_zero = not (raw[1::4].strip(b"\0") or raw[2::4].strip(b"\0") or raw[3::4].strip(b"\0"))
    return high_bytes_zero and not raw[0::4].translate(None, bytes(range(table_len)))


def first_without(columns: Columns, letter: str) -> int:
    """The UID of the first message whose info letters lack `letter`; 0 if every one has it."""
    found = []
    for fid, letters in enumerate(columns.table):
        if letter not in letters:
            with contextlib.suppress(ValueError):
                found.append(columns.fids.index(fid))
    return columns.uids[min(found)] if found else 0


def write_index(
    folder: str,
    state: bytes,
    cur_ino: int,
    cur_mtime_ns: int,
    columns: Columns,
    names: list[str],
    new_empty_at: int | None = None,
) -> None:
    """Replace the folder's index (tmp + rename, no fsync: a lost or torn index is only rebuilt)."""
    table = "\n".join(columns.table).encode("ascii")
    head = state + table + columns.uids.tobytes()
    fids, modseqs = columns.fids.tobytes(), columns.modseqs.tobytes()
    names_raw = "\n".join(names).encode("utf-8", "surrogateescape")
    numbers = (
        len(columns.uids),
        cur_ino,
        cur_mtime_ns,
        len(state),
        len(table),
        len(names_raw),
        first_without(columns, "S"),
        new_empty_at or 0,
        zlib.crc32(head),
        zlib.crc32(fids),
        zlib.crc32(modseqs),
        zlib.crc32(names_raw),
    )
    header = b" ".join([_MAGIC, _VERSION, sys.byteorder.encode("ascii"), *(b"%d" % n for n in numbers)])
    path = os.path.join(folder, INDEX_FILE)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with open(fd, "wb") as out:
            out.write(header + b"\n" + head + fids + modseqs + names_raw)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
