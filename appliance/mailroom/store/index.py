"""The persistent index of a folder: its listing saved to disk, so a new process opens a big
folder without listing and parsing every file name in cur/.

It is a cache and nothing else. The names in cur/ and the state file stay the truth: the index
records the state file's bytes and cur/'s inode and mtime at the moment it was written, and is
trusted as it stands only if both are still the same (the same check a warm listing makes, see
folder.py "Cheap re-check"). Otherwise its names serve as the previous listing that a rescan
compares cur/ with, so only names added since are parsed. A missing, torn or foreign index is
ignored; deleting it is always safe.

Layout of ``mailroom-index`` (native byte order, recorded in the header):

    mailroom-index 3 <byteorder> <count> <cur ino> <cur mtime_ns> <state len> <table len>
        <names len> <crc32 of state to fids> <crc32 of the modseqs> <crc32 of the names>\\n
    the state file's bytes
    the flag table: the distinct info-letter strings, joined by "\\n"
    uids: count x uint32, ascending
    flag ids: count x uint32, indexes into the flag table
    modseqs: count x uint64 (read only when a MODSEQ is needed)
    names: count file names joined by "\\n" (read only when a name is needed)

Opening reads the header, the UIDs and the flag ids (8 bytes per message: what SELECT needs)
and keeps the file open; the modseqs (8 bytes per message, for CONDSTORE) and the names (about
60 bytes per message) are read from that same open file the first time they are needed, so a
replaced index never mixes with the one the columns came from.
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
_VERSION = b"3"
_HEADER_MAX = 512


@dataclass
class Columns:
    """A listing as parallel columns, by ascending UID."""

    uids: array  # "I"
    modseqs: array | None  # "Q"; None in a SavedIndex until SavedIndex.modseqs()
    fids: array  # "I", into table
    table: list[str]  # info letters per flag id


@dataclass
class SavedIndex:
    """An index read from disk: its snapshot, its columns, and the way to its names."""

    state: bytes
    cur_ino: int
    cur_mtime_ns: int
    columns: Columns
    _handle: BinaryIO | None
    _modseqs_at: int
    _modseqs_crc: int
    _names_len: int
    _names_crc: int
    _unread: int = 2  # parts still to read: the modseqs and the names

    def modseqs(self) -> array | None:
        """The modseq column; None if it cannot be read back intact."""
        size = 8 * len(self.columns.uids)
        raw = self._read(self._modseqs_at, size)
        if raw is None or len(raw) != size or zlib.crc32(raw) != self._modseqs_crc:
            return None
        modseqs = array("Q")
        modseqs.frombytes(raw)
        return modseqs

    def names(self) -> list[str] | None:
        """The file names, in column order; None if they cannot be read back intact."""
        raw = self._read(self._modseqs_at + 8 * len(self.columns.uids), self._names_len)
        if raw is None or len(raw) != self._names_len or zlib.crc32(raw) != self._names_crc:
            return None
        names = raw.decode("utf-8", "surrogateescape").split("\n") if raw else []
        return names if len(names) == len(self.columns.uids) else None

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


def read_index(folder: str) -> SavedIndex | None:
    """The folder's saved index, or None if there is none or it does not read back intact."""
    try:
        # Unbuffered: a buffered file reads ahead into the modseqs, which a cold SELECT would
        # wait for on the disk without needing them.
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
    if len(fields) != 12 or fields[0] != _MAGIC or fields[1] != _VERSION:
        return None
    if fields[2].decode("ascii") != sys.byteorder:
        return None
    count, ino, mtime, state_len, table_len, names_len, crc_head, crc_modseqs, crc_names = map(
        int, fields[3:]
    )
    if min(count, state_len, table_len, names_len) < 0 or state_len > 4096:
        return None
    size = state_len + table_len + count * 8
    raw = chunk[end + 1 : end + 1 + size]
    if len(raw) < size:
        raw += handle.read(size - len(raw)) or b""
    if len(raw) != size or zlib.crc32(raw) != crc_head:
        return None
    state = raw[:state_len]
    at = state_len + table_len
    table = raw[state_len:at].decode("ascii").split("\n")
    uids, fids = array("I"), array("I")
    uids.frombytes(raw[at : at + 4 * count])
    raw_fids = raw[at + 4 * count :]
    if not _fids_valid(raw_fids, len(table)):
        return None
    fids.frombytes(raw_fids)
    return SavedIndex(
        state,
        ino,
        mtime,
        Columns(uids, None, fids, table),
        handle,
        end + 1 + size,
        crc_modseqs,
        names_len,
        crc_names,
    )


def _fids_valid(raw: bytes, table_len: int) -> bool:
    """Every flag id indexes the table (checked without a Python loop over 100,000 ids)."""
    if not raw:
        return True
    if table_len > 256 or sys.byteorder != "little":
        fids = array("I")
        fids.frombytes(raw)
        return max(fids) < table_len
    # Each id is below 256: its three high bytes are zero and its low byte is a table index.
    return (
        not raw[1::4].strip(b"\0")
        and not raw[2::4].strip(b"\0")
        and not raw[3::4].strip(b"\0")
        and (not raw[0::4].translate(None, bytes(range(table_len))))
    )


def write_index(
    folder: str, state: bytes, cur_ino: int, cur_mtime_ns: int, columns: Columns, names: list[str]
) -> None:
    """Replace the folder's index (tmp + rename, no fsync: a lost or torn index is only rebuilt)."""
    table = "\n".join(columns.table).encode("ascii")
    head = state + table + columns.uids.tobytes() + columns.fids.tobytes()
    if columns.modseqs is None:
        raise ValueError("an index is written from a listing with its modseqs")
    modseqs = columns.modseqs.tobytes()
    names_raw = "\n".join(names).encode("utf-8", "surrogateescape")
    header = b" ".join(
        [
            _MAGIC,
            _VERSION,
            sys.byteorder.encode("ascii"),
            *(
                b"%d" % n
                for n in (
                    len(columns.uids),
                    cur_ino,
                    cur_mtime_ns,
                    len(state),
                    len(table),
                    len(names_raw),
                    zlib.crc32(head),
                    zlib.crc32(modseqs),
                    zlib.crc32(names_raw),
                )
            ),
        ]
    )
    path = os.path.join(folder, INDEX_FILE)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with open(fd, "wb") as out:
            out.write(header + b"\n" + head + modseqs + names_raw)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
