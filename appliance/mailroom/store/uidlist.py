"""UIDs of messages that another tool put into cur/ without our U= in their names.

A Maildir filled by an import, a migration or another server has names like
``<base>:2,S``. Giving each a UID by renaming it (``<base>,U=<uid>,M=<modseq>:2,S``) costs one
rename per message: two seconds for a mailbox of 100,000 at its first open. Instead such
messages are adopted in place: their UID and MODSEQ are recorded here, by base name (the name
without the info part after ":", which other Maildir tools change when they change flags), in
one durable write. A message leaves this list by itself when its flags change through us (the
rename gives it a U=); the entries of messages gone meanwhile are dropped at the next rewrite.

File ``mailroom-uidlist``: a first line ``mailroom-uidlist 1``, then ``<uid> <modseq> <base>``
per line. Written durably (tmp + fsync + rename + fsync of the folder), before the
UIDs in it are reported to anyone, so a UID handed out is never given to another message: the
state heals upwards from these entries as from U= in names (folder.py, Rebuild). Losing the
file costs the adopted messages their UIDs (they are adopted again under new ones, which
clients see as expunge + new mail), never a message. Borg copies it with the folder, so a
restore keeps the adopted messages' UIDs as it keeps everyone else's.

Base names are unique in a Maildir (time, process, host and a counter), so an entry can only
ever match the message it was made for.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from itertools import count, repeat
from pathlib import Path

from ..fsutil import replace_synced

UIDLIST_FILE = "mailroom-uidlist"
_MAGIC = b"mailroom-uidlist 1\n"

Adopted = Mapping[str, tuple[int, int]]  # base: (uid, modseq)


class AdoptedRun(Mapping[str, tuple[int, int]]):
    """Bases adopted as UIDs first, first+1, ... with one MODSEQ: a whole imported folder at
    its first open. Kept as the list of bases; the lookup by base is built when first asked
    for, which a first open never does (a dict of 100,000 entries of (uid, modseq) costs more
    than anything else in it)."""

    def __init__(self, bases: list[str], first: int, modseq: int) -> None:
        self.bases, self.first, self.modseq = bases, first, modseq
        self._index: dict[str, int] | None = None

    def _lookup(self) -> dict[str, int]:
        if self._index is None:
            self._index = dict(zip(self.bases, count(self.first)))
        return self._index

    def __getitem__(self, base: str) -> tuple[int, int]:
        return self._lookup()[base], self.modseq

    def __contains__(self, base: object) -> bool:
        return base in self._lookup()

    def __iter__(self) -> Iterator[str]:
        return iter(self.bases)

    def __len__(self) -> int:
        return len(self.bases)

    @property
    def highest(self) -> tuple[int, int]:
        return self.first + len(self.bases) - 1, self.modseq

    def lines(self) -> str:
        """Its entries as uidlist lines, put together a column at a time."""
        n = len(self.bases)
        parts: list[str] = [""] * (4 * n)
        parts[0::4] = map(str, range(self.first, self.first + n))
        parts[1::4] = repeat(f" {self.modseq} ", n)
        parts[2::4] = self.bases
        parts[3::4] = repeat("\n", n)
        return "".join(parts)


def can_adopt(base: str) -> bool:
    """A base that fits on one line of the list (a Maildir name may hold any byte but / and NUL)."""
    return "\n" not in base and "\r" not in base and bool(base)


Identity = tuple[int, int, int]  # inode, mtime, size


def read_uidlist(folder: Path, known: Identity | None) -> tuple[Adopted, Identity] | None:
    """(entries, identity) of the folder's list, or None if its identity is still `known`.

    The identity is (inode, mtime, size): the list is only ever replaced by rename, so a list
    with the identity already read needs no second reading. A missing file is an empty list;
    damaged lines are skipped (each one costs only its message's UID)."""
    path = folder / UIDLIST_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return ({}, (0, 0, 0)) if known != (0, 0, 0) else None
    with contextlib.closing(os.fdopen(fd, "rb")) as file:
        st = os.fstat(fd)
        identity = (st.st_ino, st.st_mtime_ns, st.st_size)
        if identity == known:
            return None
        data = file.read()
    adopted: dict[str, tuple[int, int]] = {}
    if not data.startswith(_MAGIC):
        return adopted, identity
    for line in data[len(_MAGIC) :].decode("utf-8", "surrogateescape").split("\n"):
        uid, _, rest = line.partition(" ")
        modseq, _, base = rest.partition(" ")
        if uid.isdigit() and modseq.isdigit() and base and 0 < int(uid) < 2**32 and int(modseq) > 0:
            adopted[base] = (int(uid), int(modseq))
    return adopted, identity


def write_uidlist(folder: Path, adopted: Adopted) -> Identity:
    """Replace the folder's list durably (the folder lock held); return its identity."""
    if isinstance(adopted, AdoptedRun):
        text = adopted.lines()
    else:
        text = "".join([f"{uid} {modseq} {base}\n" for base, (uid, modseq) in adopted.items()])
    path = folder / UIDLIST_FILE
    replace_synced(path, _MAGIC + text.encode("utf-8", "surrogateescape"))
    st = os.stat(path)
    return (st.st_ino, st.st_mtime_ns, st.st_size)
