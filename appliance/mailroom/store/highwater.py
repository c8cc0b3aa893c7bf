"""The durable high-water mark of a folder: its UIDNEXT and HIGHESTMODSEQ, written before an expunge.

Why: a UID handed out is proved by the message's name (``U=``) or its uidlist entry, both
durable, so the state file (``mailroom-state``) can be rewritten without an fsync and healed
upwards from them after a crash (folder.py, Durability). An expunge removes that proof, and
bumps HIGHESTMODSEQ for clients that resynchronise (QRESYNC): both values must be on disk
before the first unlink. Writing the state file durably costs two flushes (the file, then its
directory for the rename); this mark costs one, since it is overwritten in place:
``pwrite`` + ``fdatasync`` into blocks allocated when the file was made.

File ``mailroom-highwater``: two slots, SLOT bytes apart, each one line
``mailroom-highwater 1 <seq> <uidvalidity> <uidnext> <highestmodseq> <crc32>``. A write goes to
the slot that does *not* hold the mark read last (the valid slot with the highest seq), with
the next seq, so a write torn by a crash can damage only a slot nothing relies on yet: the
reader takes the valid slot with the highest seq, which is either the new mark or the one
before it (and the unlinks it was written for had not started). The file is made once, whole
and durably (tmp + fsync + rename + fsync of the folder), so later writes change no metadata
that fdatasync would have to flush.

Read when a process first lists the folder and when the state file is missing or damaged: a
crash that took the state file back also ended every process, so a listing that has read the
mark once has seen any state the crash left.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import NamedTuple

from ..fsutil import replace_synced

HIGHWATER_FILE = "mailroom-highwater"
SLOT = 4096  # a slot per block: a torn write cannot reach the other slot's block
_MAGIC = b"mailroom-highwater 1 "


class Mark(NamedTuple):
    uidvalidity: int
    uidnext: int
    highestmodseq: int


def _slot(seq: int, mark: Mark) -> bytes:
    body = _MAGIC + b"%d %d %d %d" % (seq, *mark)
    return body + b" %d\n" % zlib.crc32(body)


def _parse(raw: bytes) -> tuple[int, Mark] | None:
    line, newline, _ = raw.partition(b"\n")
    body, _, crc = line.rpartition(b" ")
    if not newline or not body.startswith(_MAGIC) or not crc.isdigit() or int(crc) != zlib.crc32(body):
        return None
    try:
        seq, uidvalidity, uidnext, highestmodseq = map(int, body[len(_MAGIC) :].split(b" "))
    except ValueError:
        return None
    return seq, Mark(uidvalidity, uidnext, highestmodseq)


def _slots(fd: int) -> list[tuple[int, Mark] | None]:
    return [_parse(os.pread(fd, 128, n * SLOT)) for n in (0, 1)]


def _latest(slots: list[tuple[int, Mark] | None]) -> tuple[int, int, Mark] | None:
    """(slot number, seq, mark) of the valid slot with the highest seq."""
    found = [(entry[0], n, entry[1]) for n, entry in enumerate(slots) if entry is not None]
    if not found:
        return None
    seq, n, mark = max(found)
    return n, seq, mark


def read_highwater(folder: Path | str) -> Mark | None:
    """The folder's latest intact mark; None if it has none (no expunge yet) or both are damaged."""
    try:
        fd = os.open(os.path.join(folder, HIGHWATER_FILE), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        latest = _latest(_slots(fd))
    finally:
        os.close(fd)
    return latest[2] if latest else None


def write_highwater(folder: Path | str, mark: Mark) -> None:
    """Put mark on disk durably (the folder lock held): one fdatasync once the file exists."""
    path = os.path.join(folder, HIGHWATER_FILE)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        pass
    else:
        try:
            if os.fstat(fd).st_size == 2 * SLOT:
                latest = _latest(_slots(fd))
                n, seq = (1 - latest[0], latest[1] + 1) if latest else (0, 1)
                data = _slot(seq, mark)
                if os.pwrite(fd, data, n * SLOT) != len(data):
                    raise OSError(f"short write to {path}")
                os.fdatasync(fd)
                return
        finally:
            os.close(fd)
    # Missing or not of our making (a partial copy): made anew, whole, with the mark in slot 0.
    replace_synced(Path(path), _slot(1, mark).ljust(2 * SLOT, b"\0"))
