"""The persistent index of a folder: its listing saved to disk, so a new process opens a big
folder without listing and parsing every file name in cur/.

It is a cache and nothing else. The names in cur/ and the state file stay the truth: the index
records the state file's bytes and cur/'s inode and mtime at the moment it was written, and is
trusted as it stands only if both are still the same (the same check a warm listing makes, see
folder.py "Cheap re-check"). Otherwise its names serve as the previous listing that a rescan
compares cur/ with, so only names added since are parsed. A missing, torn or foreign index is
ignored; deleting it is always safe.

Layout of ``mailroom-index`` (native byte order, recorded in the header):

    mailroom-index 2 <byteorder> <count> <cur ino> <cur mtime_ns> <state len> <table len>
        <names len> <crc32 of the columns> <crc32 of the names>\\n     (one line)
    the state file's bytes
    the flag table: the distinct info-letter strings, joined by "\\n"
    uids: count x uint32, ascending
    modseqs: count x uint64
    flag ids: count x uint32, indexes into the flag table
    names: count file names joined by "\\n" (read only when a name is needed)

Opening reads the header and the columns (13 bytes per message) and keeps the file open; the
names (about 60 bytes per message) are read from that same open file the first time a name is
needed, so a replaced index never mixes with the one the columns came from.
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
_VERSION = b"2"
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
    """An index read from disk: its snapshot, its columns, and the way to its names."""

    state: bytes
    cur_ino: int
    cur_mtime_ns: int
    columns: Columns
    _handle: BinaryIO | None
    _names_at: int
    _names_len: int
    _names_crc: int

    def names(self) -> list[str] | None:
        """The file names, in column order; None if they cannot be read back intact."""
        handle, self._handle = self._handle, None
        if handle is None:
            return None
        try:
            handle.seek(self._names_at)
            raw = handle.read(self._names_len)
        except OSError:
            return None
        finally:
            handle.close()
        if len(raw) != self._names_len or zlib.crc32(raw) != self._names_crc:
            return None
        names = raw.decode("utf-8", "surrogateescape").split("\n") if raw else []
        return names if len(names) == len(self.columns.uids) else None

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def read_index(folder: str) -> SavedIndex | None:
    """The folder's saved index, or None if there is none or it does not read back intact."""
    try:
        handle = open(os.path.join(folder, INDEX_FILE), "rb")  # noqa: SIM115 - kept open for names()
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
    fields = handle.readline(_HEADER_MAX).split()
    if len(fields) != 11 or fields[0] != _MAGIC or fields[1] != _VERSION:
        return None
    if fields[2].decode("ascii") != sys.byteorder:
        return None
    count, ino, mtime, state_len, table_len, names_len, crc_cols, crc_names = map(int, fields[3:])
    if min(count, state_len, table_len, names_len) < 0 or state_len > 4096:
        return None
    size = state_len + table_len + count * 16
    raw = handle.read(size)
    if len(raw) != size or zlib.crc32(raw) != crc_cols:
        return None
    state = raw[:state_len]
    at = state_len + table_len
    table = raw[state_len:at].decode("ascii").split("\n")
    uids, modseqs, fids = array("I"), array("Q"), array("I")
    uids.frombytes(raw[at : at + 4 * count])
    modseqs.frombytes(raw[at + 4 * count : at + 12 * count])
    fids.frombytes(raw[at + 12 * count : at + 16 * count])
    if fids and max(fids) >= len(table):
        return None
    names_at = handle.tell()
    return SavedIndex(
        state, ino, mtime, Columns(uids, modseqs, fids, table), handle, names_at, names_len, crc_names
    )


def write_index(
    folder: str, state: bytes, cur_ino: int, cur_mtime_ns: int, columns: Columns, names: list[str]
) -> None:
    """Replace the folder's index (tmp + rename, no fsync: a lost or torn index is only rebuilt)."""
    table = "\n".join(columns.table).encode("ascii")
    body = state + table + columns.uids.tobytes() + columns.modseqs.tobytes() + columns.fids.tobytes()
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
                    zlib.crc32(body),
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
            out.write(header + b"\n" + body + names_raw)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
