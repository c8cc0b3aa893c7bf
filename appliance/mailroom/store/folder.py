"""One Maildir folder with the state IMAP needs: UIDs, flags, MODSEQ, kept in the Maildir itself.

File names
    Delivery (smtpd) writes ``new/<base>`` and never locks. The first sync that sees a message
    moves it to ``cur/<base>,U=<uid>,M=<modseq>:2,<flags>``. ``<base>`` keeps whatever the writer
    put there, including ``,S=<size>``; U= and M= are the only fields we add. ``<flags>`` are the
    Maildir info letters in ASCII order: D=\\Draft F=\\Flagged R=\\Answered S=\\Seen T=\\Deleted,
    other capitals (P "passed") are kept as they are, and a-z are keywords (see below). A file
    without M= has modseq 1. Every flag change renames the file anyway, so the per-message
    MODSEQ costs nothing extra to store there.

    Names without U= or M= (another tool put them into cur/: an import, a migration) are not
    renamed but adopted in place: their UIDs and modseqs are kept by base name in
    ``mailroom-uidlist`` (store/uidlist.py), one durable write instead of a rename each (two
    seconds for 100,000 messages). Our first flag change renames such a message to carry its U=.

    Because UIDs, flags and modseqs are in the names (or the uidlist), a restored copy of the
    Maildir (borg copies files) has the exact IMAP state, and any other Maildir tool keeps
    working on it.

Per-folder files
    ``mailroom-state``        uidvalidity, uidnext, highestmodseq (key=value lines), rewritten
                              after every change without an fsync (see Durability). The name
                              moves between two inodes, ``mailroom-state.a`` and ``.b``, each
                              overwritten in place (store/statefile.py).
    ``mailroom-highwater``    UIDNEXT and HIGHESTMODSEQ as of the last expunge, durable
                              (store/highwater.py).
    ``mailroom-uidvalidity``  the UIDVALIDITY once more, written once and never rewritten. This is
                              an addition to the plan: with only the state file, losing it would
                              force a new UIDVALIDITY even though every message still has its U=
                              (the UIDs mean nothing without their UIDVALIDITY). With a second copy
                              that is never rewritten (so never torn by a crash during a rewrite)
                              the rebuild keeps UIDVALIDITY and UIDs, and clients keep their caches.
    ``mailroom-keywords``     keyword letters, "<index> <keyword>" per line, index 0 = 'a' (the
                              layout Dovecot uses for dovecot-keywords). At most 26 per folder.
    ``mailroom-uidlist``      UIDs and modseqs of adopted names (see File names), rewritten
                              durably (tmp + fsync + rename + fsync of the folder) when more
                              are adopted.
    ``mailroom-lock``         the lock file (see Locking).

Rebuild
    Missing or corrupt state: UIDNEXT = max(U)+1 and HIGHESTMODSEQ = max(M)+1 from the names,
    the uidlist and the high-water mark, UIDVALIDITY from mailroom-uidvalidity; a new
    UIDVALIDITY only when that is lost too (then every client drops its cache, so keeping the
    old U= values is harmless). Also on every rescan the state is healed upwards if names carry
    a higher U or M than it says (a crash between the renames and the state write, or a restore
    whose state file is older than some messages), and duplicate U= values (a file copied by
    hand) get a fresh UID for all but one of them.

Durability
    A message and its UID are on disk before anyone is told about them: new files, the renames
    and uidlist entries that give UIDs (cur/ is fsynced) and expunges are. The state file is
    rewritten after each of these, but not fsynced (only a new folder's first state and a
    repaired one are): while every UID handed out is in a durable name or uidlist entry, a
    state file that a crash took back (or tore) is healed upwards from them (see Rebuild). Only
    an expunge removes the name that proved a UID was used, so before its first unlink UIDNEXT
    and HIGHESTMODSEQ go to the high-water mark (one in-place write and fdatasync: half the
    flushes of a durable state file), from which the state heals too, when a process first
    lists the folder. Flag changes are not fsynced (Dovecot does not fsync them either): after
    a crash the last flag changes may be gone.

Locking
    ``flock(LOCK_EX)`` on ``mailroom-lock`` around every change: UID assignment, flag renames,
    expunge, append, copy into the folder, state writes. A full rescan of cur/ holds
    ``LOCK_SH``, which is enough because everything that renames in cur/ holds LOCK_EX.
    The warm check (state file unchanged, cur/ unchanged, new/ empty) takes no lock. Delivery
    never locks: it only ever adds files to new/, which sync empties under LOCK_EX. After taking
    a lock we check that the lock file is still the one at our path, so a folder deleted or
    renamed meanwhile raises FolderGone instead of writing into a directory that moved away.
    No operation holds two folder locks at once (copy links into the target's tmp/ first, then
    locks only the target), so there is no lock-order deadlock between folders.

Cheap re-check
    Every change we make bumps HIGHESTMODSEQ, so the state file's bytes change with every
    change to cur/. The warm check is: read the state file, stat cur/ (catches other Maildir
    tools), stat new/ and list it unless it was empty with the same mtime last time (see
    _Listing._probe). Only when something differs is cur/ listed again, and only names not
    seen before are parsed; new arrivals alone are taken without listing cur/.

Sharing within a process
    All Folder objects of one process for one folder share one listing (about 35 MB for
    100,000 messages); each Folder keeps only the UIDs it has reported. The listing logs the
    UIDs it changes, and sync() reads the log from where that Folder last stopped, so a sync
    costs in proportion to the changes, not to the folder. A Folder that fell behind a trimmed
    log compares everything once (flag changes found by MODSEQ).
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import fcntl
import logging
import os
import re
import shutil
import stat
import threading
import time
import weakref
from array import array
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from itertools import islice, repeat
from operator import eq, itemgetter
from pathlib import Path
from typing import BinaryIO

from ..fsutil import fsync_dir, read_ahead, read_small, replace_synced, write_synced
from . import dirlisting
from .changes import CHANGES, Watch
from .errors import FolderGone, InvalidFlag, MessageGone, TooManyKeywords
from .highwater import Mark, read_highwater, write_highwater
from .index import INDEX_FILE, PREFETCH_BYTES, Columns, SavedIndex, read_index, write_index
from .maildir import unique_name, wire_size
from .statefile import STATE_FILE, write_state_file
from .uidlist import Adopted, AdoptedRun, can_adopt, read_uidlist, write_uidlist

UIDVALIDITY_FILE = "mailroom-uidvalidity"
KEYWORDS_FILE = "mailroom-keywords"
LOCK_FILE = "mailroom-lock"

SYSTEM_FLAGS = {"\\Draft": "D", "\\Flagged": "F", "\\Answered": "R", "\\Seen": "S", "\\Deleted": "T"}
_LETTER_FLAGS = {letter: flag for flag, letter in SYSTEM_FLAGS.items()}
_SYSTEM_BY_LOWER = {flag.lower(): flag for flag in SYSTEM_FLAGS}
MAX_KEYWORDS = 26
_UID_MAX = 2**32 - 1
# RFC 3501 atom characters: no specials, no controls, no space; ']' is allowed in flags.
_KEYWORD = re.compile(r"[!#$&'+\-./0-9:;<=>?@A-Z\[\]^_`a-z|~]+\Z")

log = logging.getLogger("mailroom.store")

# Folders with at least this many messages keep a saved index (store/index.py) for the next
# process, rewritten at most every INDEX_INTERVAL seconds while the folder changes.
INDEX_MIN_MESSAGES = 1000
INDEX_INTERVAL = 30.0

_FIRST = itemgetter(0)
_wire_sizes: dict[tuple[Path, str], int] = {}  # messages written without ,W= (other Maildir tools)


class Mode(Enum):
    ADD = "add"
    REMOVE = "remove"
    REPLACE = "replace"


@dataclass(frozen=True, slots=True)
class MessageInfo:
    """One message as of the last scan. size and internaldate are read on demand."""

    uid: int
    flags: frozenset[str]
    modseq: int
    name: str
    folder: Path = field(repr=False)

    @property
    def path(self) -> Path:
        return self.folder / "cur" / self.name

    @property
    def size(self) -> int:
        """Bytes on disk (from ,S= in the name, else stat)."""
        size = _size_from_name(self.name)
        if size is not None:
            return size
        try:
            return self.path.stat().st_size
        except FileNotFoundError as exc:
            raise MessageGone(f"message {self.uid} is gone") from exc

    @property
    def wire_size(self) -> int:
        """Bytes with CRLF line ends (IMAP RFC822.SIZE): from ,W= in the name, else counted once."""
        size = _size_from_name(self.name, ",W=")
        if size is not None:
            return size
        key = (self.folder, self.name)
        size = _wire_sizes.get(key)
        if size is None:
            try:
                size = wire_size(self.path.read_bytes())
            except FileNotFoundError as exc:
                raise MessageGone(f"message {self.uid} is gone") from exc
            if len(_wire_sizes) > 100_000:
                _wire_sizes.clear()
            _wire_sizes[key] = size
        return size

    @property
    def internaldate(self) -> float:
        """The IMAP INTERNALDATE: the file's mtime (append sets it; rename and link keep it)."""
        try:
            return self.path.stat().st_mtime
        except FileNotFoundError as exc:
            raise MessageGone(f"message {self.uid} is gone") from exc


@dataclass(frozen=True, slots=True)
class SyncResult:
    """Changes since the previous sync() of the same Folder object (UIDs in ascending order)."""

    new_uids: list[int]
    expunged_uids: list[int]
    flag_changes: dict[int, tuple[frozenset[str], int]]

    def __bool__(self) -> bool:
        return bool(self.new_uids or self.expunged_uids or self.flag_changes)


@dataclass(frozen=True, slots=True)
class _State:
    uidvalidity: int
    uidnext: int
    highestmodseq: int

    def dump(self) -> bytes:
        return (
            f"version=1\nuidvalidity={self.uidvalidity}\nuidnext={self.uidnext}\n"
            f"highestmodseq={self.highestmodseq}\n"
        ).encode("ascii")

    @classmethod
    def parse(cls, raw: bytes | None) -> _State | None:
        if raw is None:
            return None
        try:
            fields = dict(line.split("=", 1) for line in raw.decode("ascii").splitlines() if line)
            if fields.get("version") != "1":
                return None
            state = cls(int(fields["uidvalidity"]), int(fields["uidnext"]), int(fields["highestmodseq"]))
        except (ValueError, KeyError, UnicodeDecodeError):
            return None
        if not 0 < state.uidvalidity <= _UID_MAX or not 0 < state.uidnext <= _UID_MAX:
            return None
        if state.highestmodseq <= 0:
            return None
        return state


class _Parsed:
    """What a cur/ file name says: base (without U= and M=), uid (None if absent/invalid), modseq, info."""

    __slots__ = ("base", "info", "modseq", "uid")

    def __init__(self, name: str) -> None:
        # The names this module writes, <base>,U=<uid>,M=<modseq>:2,<letters>, in a few string
        # operations (a cold SELECT of 100,000 messages parses 100,000 names).
        head, colon, info = name.partition(":")
        base, u, m = head.rsplit(",", 2) if head.count(",") >= 2 else ("", "", "")
        if (
            colon
            and u[:2] == "U="
            and m[:2] == "M="
            and u[2:].isascii()
            and u[2:].isdigit()
            and m[2:].isascii()
            and m[2:].isdigit()
            and ",U=" not in base
            and ",M=" not in base
            and ":" not in info
        ):
            uid, modseq = int(u[2:]), int(m[2:])
            if 0 < uid < _UID_MAX and modseq > 0:
                self.base, self.info, self.uid, self.modseq = base, info, uid, modseq
                return
        if ",U=" not in head and ",M=" not in head:  # another tool's name (first open: all of them)
            self.base, self.info, self.uid, self.modseq = head, info if colon else "", None, 1
            return
        base, colon, info = name.partition(":")
        self.info = info if colon else ""
        first, *fields = base.split(",")
        kept = [first]
        uids = [f[2:] for f in fields if f.startswith("U=")]
        modseqs = [f[2:] for f in fields if f.startswith("M=")]
        kept += [f for f in fields if not f.startswith(("U=", "M="))]
        self.base = ",".join(kept)
        # A name with two U= (or M=) is not one we wrote: treat the value as unknown.
        uid = uids[0] if len(uids) == 1 else ""
        valid = uid.isascii() and uid.isdigit() and 0 < int(uid) < _UID_MAX
        self.uid: int | None = int(uid) if valid else None
        modseq = modseqs[0] if len(modseqs) == 1 else ""
        self.modseq = int(modseq) if modseq.isascii() and modseq.isdigit() and int(modseq) > 0 else 1

    @property
    def letters(self) -> str:
        return self.info[2:] if self.info.startswith("2,") else ""


def _size_from_name(name: str, field: str = ",S=") -> int | None:
    marker = name.find(field)
    if marker == -1:
        return None
    digits = name[marker + 3 :].split(",", 1)[0].split(":", 1)[0]
    return int(digits) if digits.isdigit() else None


def _bases_and_letters(names: list[str]) -> tuple[list[str], list[str]]:
    """The base (before ':') and info letters (after ':2,', else "") of each name.

    In bulk when every name has the usual form "base:2,letters", with one ':' (a first open of
    100,000 names): a replace and a split of the names joined, instead of three new strings per
    name from str.partition."""
    joined = "\n".join(names)
    count = len(names)
    if (
        joined.count("\n") == count - 1
        and joined.count(":2,") == count
        and list(map(str.count, names, repeat(":"))).count(1) == count
    ):
        pieces = joined.replace(":2,", "\n").split("\n")
        return pieces[0::2], pieces[1::2]
    parts = [name.partition(":") for name in names]
    return [base for base, _, _ in parts], [info[2:] if info[:2] == "2," else "" for _, _, info in parts]


def _without_uids(names: Collection[str]) -> list[str]:
    """The names that carry no U= or M= (other tools' names): all of them, at a first open of
    an imported folder, which one look at the names joined tells."""
    joined = "\n".join(names)
    if ",U=" not in joined and ",M=" not in joined:
        return list(names)
    return [n for n in names if ",U=" not in n and ",M=" not in n]


def _listed(path: str, cold_size: int = 0) -> list[str]:
    """The names in cur/, without dot files (rare: one look at them all joined tells).

    cold_size: the size of cur/ if it may be out of the page cache (see dirlisting.py)."""
    names = dirlisting.listdir(path, cold_size)
    if "\n." in "\n" + "\n".join(names):
        return [n for n in names if not n.startswith(".")]
    return names


def _cur_name(base: str, uid: int, modseq: int, letters: str) -> str:
    return f"{base},U={uid},M={modseq}:2,{''.join(sorted(set(letters)))}"


def _arrival_key(name: str, folder: Path) -> tuple[int, int, str]:
    """Order of arrival in new/: the time in a delivery name (µs), else the file's mtime."""
    match = re.match(r"(\d+)\.M(\d+)P\d+Q(\d+)", name)
    if match:
        return (int(match[1]) * 10**9 + int(match[2]) * 1000, int(match[3]), name)
    try:
        return (os.stat(folder / "new" / name).st_mtime_ns, 0, name)
    except FileNotFoundError:
        return (0, 0, name)


def new_uidvalidity() -> int:
    return int(time.time())


def init_folder_dir(path: Path, uidvalidity: int) -> None:
    """Lay out an empty folder (cur/ new/ tmp/ and its state) in a directory nobody else sees yet."""
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
    write_synced(path / UIDVALIDITY_FILE, f"{uidvalidity}\n".encode("ascii"))
    write_state_file(str(path), _State(uidvalidity, 1, 1).dump(), durable=True)


_LOG_TRIM = 4096
_LOG_MAX = 200_000


class _Registry:
    """The shared listings of this process, by (path, device, inode of cur/).

    A listing lives while a Folder uses it, and the last RECENT_LISTINGS used stay alive after
    that: an IMAP client that selects folder after folder would otherwise make every SELECT
    parse the whole folder again (2 s for 100,000 messages)."""

    RECENT_LISTINGS = 16

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.listings: weakref.WeakValueDictionary[tuple[str, int, int], _Listing] = (
            weakref.WeakValueDictionary()
        )
        self.recent: collections.OrderedDict[tuple[str, int, int], _Listing] = collections.OrderedDict()
        self.paths: weakref.WeakValueDictionary[str, _Listing] = weakref.WeakValueDictionary()

    def keep(self, key: tuple[str, int, int], listing: _Listing) -> None:
        self.recent[key] = listing
        self.recent.move_to_end(key)
        while len(self.recent) > self.RECENT_LISTINGS:
            self.recent.popitem(last=False)


_registry = _Registry()
# A child starts with no shared listings: a lock held by a thread of the parent at fork time
# would never be released in the child.
os.register_at_fork(after_in_child=_registry.__init__)


def _shared_listing(path: Path) -> _Listing:
    """The one _Listing of this process for the folder at path (while any Folder uses it)."""
    where = os.path.abspath(path)
    if where not in _registry.paths:
        # A first open in this process reads the saved index and the state file soon: the disk
        # may as well read both at once while the stats before them wait (a cold SELECT).
        read_ahead(os.path.join(where, INDEX_FILE), PREFETCH_BYTES)
        read_ahead(os.path.join(where, STATE_FILE), 4096)
    try:
        cur = os.stat(os.path.join(where, "cur"))
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise FolderGone(f"folder {path} does not exist") from exc
    if not stat.S_ISDIR(cur.st_mode):
        raise FolderGone(f"folder {path} does not exist")
    key = (where, cur.st_dev, cur.st_ino)
    with _registry.lock:
        listing = _registry.listings.get(key)
        if listing is None:
            listing = _Listing(path, (cur.st_dev, cur.st_ino))
            _registry.listings[key] = _registry.paths[where] = listing
        _registry.keep(key, listing)
        return listing


class _Listing:
    """What one process knows about one folder: the scan of cur/, the state, the keywords.

    Shared by every Folder object of the process for that folder, so that many sessions on one
    big folder hold its listing once. The messages are kept as parallel columns by ascending
    UID (uids, modseqs, flag ids into a small table of info-letter strings, file names), about
    16 bytes per message plus its name, rather than as an object per message: a big folder then
    loads from its saved index (store/index.py) without touching each message, and a
    MessageInfo is made only for the messages asked for. The names of a folder loaded from its
    index are read on first need. Changes are appended to a log of UIDs (version = number of
    changes so far) from which each Folder derives its SyncResult. All access holds mutex.
    """

    def __init__(self, path: Path, identity: tuple[int, int]) -> None:
        self.path = Path(path)
        self.mutex = threading.RLock()
        self.views: weakref.WeakSet[Folder] = weakref.WeakSet()
        self.version = 0
        self.log: list[int] = []  # UIDs touched; log[i] is change number log_base + i
        self.log_base = 0
        self._identity = identity
        self._state: _State | None = None
        self._snapshot: tuple[bytes | None, int, int] | None = None
        self._uids = array("I")
        self._lent_uids: array | None = None  # _uids while a Folder shares it (see uid_array)
        self._modseqs = array("Q")
        self._fids = array("I")
        self._names: list[str] | None = []  # None: still in self._saved, read on first need
        self._saved: SavedIndex | None = None
        self._unopened = True  # no look at the folder yet: the saved index is read first
        self._first_saved: SavedIndex | None = None  # read at the first look, for _open_saved
        self._table: list[str] = []  # info letters by flag id
        self._fid_of: dict[str, int] = {}
        self._fid_flags: list[frozenset[str]] = []  # the flags of each flag id, as keywords say now
        self._materialized: tuple[int, list[MessageInfo]] | None = None
        self._index_saved: tuple[tuple[bytes | None, int, int] | None, float] = (None, float("-inf"))
        self._path_str = str(self.path)
        self._state_path = str(self.path / STATE_FILE)
        self._cur_path = str(self.path / "cur")
        self._new_path = str(self.path / "new")
        self._new_empty_at: int | None = None  # mtime of new/ when we last found it empty
        # The kernel's notice of changes to the folder (store/changes.py), where it can be had:
        # _noticed is its count as of a look that found the folder as the listing has it.
        self._watch: Watch | None = None
        self._watch_tried = False
        self._noticed: int | None = None
        self._keywords: list[str] = []
        self._adopted: Adopted = {}  # mailroom-uidlist: UIDs of names without U= (store/uidlist.py)
        self._adopted_id: tuple[int, int, int] | None = None
        self._adopted_max = (0, 0)  # the highest UID and MODSEQ in it
        self._lazy: dict[str, SavedIndex] = {}  # columns still in the saved index (__getattr__)
        # (version, UID) of the first message without \\Seen as last found, or as the saved index
        # gives it: SELECT asks at every reselect, and the search runs through the flag ids (see
        # first_uid_without), which a cold SELECT does not even read.
        self._unseen_found: tuple[int, int | None] | None = None
        # The listing of cur/ (and its names without UIDs) that a LOCK_SH pass of _refresh_locked
        # leaves to the LOCK_EX pass after it: see there.
        self._listed: tuple[tuple[bytes | None, int, int], list[str], list[str] | None] | None = None

    # ----------------------------------------------------------------- columns

    def _uid_of(self, parsed: _Parsed) -> tuple[int, int] | None:
        """(uid, modseq) of a cur/ name: from its U= and M=, or from the uidlist if it has none."""
        if parsed.uid is not None:
            return parsed.uid, parsed.modseq
        return self._adopted.get(parsed.base)

    def _load_adopted(self) -> None:
        read = read_uidlist(self.path, self._adopted_id)
        if read is not None:
            self._took_adopted(*read)

    def _took_adopted(self, adopted: Adopted, identity: tuple[int, int, int]) -> None:
        """The uidlist as read or written, and the highest UID and MODSEQ in it (a run knows
        its own: not looked for among 100,000 entries)."""
        self._adopted, self._adopted_id = adopted, identity
        if isinstance(adopted, AdoptedRun):
            self._adopted_max = adopted.highest
            return
        values = adopted.values()
        self._adopted_max = (max((u for u, _ in values), default=0), max((m for _, m in values), default=0))

    def __getattr__(self, name: str) -> array:
        # Only called for an attribute not set: a column of a listing opened from its index.
        saved = self.__dict__.get("_lazy", {}).pop(name, None)
        if saved is None:
            raise AttributeError(name)
        column = saved.fids() if name == "_fids" else saved.modseqs()
        if column is None:  # it does not read back intact: from cur/, as a scan would
            column = self._column_from_cur(name)
        setattr(self, name, column)
        return column

    def known_first_unseen(self) -> int | None:
        """The first UID without \\Seen if known without a look at the flag ids: as last found,
        or as the saved index says, at this version; 0: none; None: not known."""
        if self._unseen_found is not None:
            version, found = self._unseen_found
            if version == self.version:
                return 0 if found is None else found
        return None

    def _column_from_cur(self, name: str) -> array:
        """Flag ids or modseqs by UID from the names in cur/; the next refresh compares all."""
        found = self._cur_by_uid()
        self._snapshot = None  # names and columns may disagree: the next refresh lists cur/
        self._unseen_found = None  # and the saved index's first unseen UID may be wrong
        if name == "_modseqs":
            return array("Q", [found[uid][1] if uid in found else 1 for uid in self._uids])
        return array("I", [self._fid(found[uid][2] if uid in found else "") for uid in self._uids])

    def _cur_by_uid(self) -> dict[int, tuple[str, int, str]]:
        """uid: (name, modseq, info letters) of the names in cur/, the lowest name where two
        claim one UID (as a rescan decides)."""
        self._load_adopted()
        by_uid: dict[int, tuple[str, int, str]] = {}
        for name in os.listdir(self._cur_path):
            parsed = _Parsed(name)
            found = self._uid_of(parsed)
            if found is not None and (found[0] not in by_uid or name < by_uid[found[0]][0]):
                by_uid[found[0]] = (name, found[1], parsed.letters)
        return by_uid

    def _pos(self, uid: int) -> int | None:
        at = bisect.bisect_left(self._uids, uid)
        return at if at < len(self._uids) and self._uids[at] == uid else None

    def _need_names(self) -> list[str]:
        if self._names is None:
            saved, self._saved = self._saved, None
            names = saved.names() if saved is not None else None
            if names is None:  # the index's names do not read back: list cur/ once more
                names = self._names_from_cur()
            self._names = names
        return self._names

    def _names_from_cur(self) -> list[str]:
        """Names for the columns, found by UID in cur/; columns without a file are dropped."""
        by_uid = {uid: name for uid, (name, _, _) in self._cur_by_uid().items()}
        for pos in reversed(range(len(self._uids))):
            if self._uids[pos] not in by_uid:
                self._delete_at(pos)
        names = [by_uid[uid] for uid in self._uids]
        self._snapshot = None  # the next refresh compares names and letters with cur/
        return names

    def _fid(self, letters: str) -> int:
        fid = self._fid_of.get(letters)
        if fid is None:
            fid = self._fid_of[letters] = len(self._table)
            self._table.append(letters)
            self._fid_flags.append(self._flags_of(letters))
        return fid

    def _flags_of(self, letters: str) -> frozenset[str]:
        names = set()
        for c in letters:
            if c in _LETTER_FLAGS:
                names.add(_LETTER_FLAGS[c])
            elif "a" <= c <= "z" and ord(c) - 97 < len(self._keywords):
                names.add(self._keywords[ord(c) - 97])
        return frozenset(names)

    def _info_at(self, pos: int) -> MessageInfo:
        return MessageInfo(
            self._uids[pos],
            self._fid_flags[self._fids[pos]],
            self._modseqs[pos],
            self._need_names()[pos],
            self.path,
        )

    def _put(self, uid: int, modseq: int, letters: str, name: str) -> None:
        """Add a message, or replace the one with the same UID (flag change)."""
        names = self._need_names()
        fid = self._fid(letters)
        uids = self._own_uids()
        if not uids or uids[-1] < uid:
            uids.append(uid)
            self._modseqs.append(modseq)
            self._fids.append(fid)
            names.append(name)
        else:
            at = bisect.bisect_left(uids, uid)
            if uids[at] == uid:
                self._modseqs[at], self._fids[at], names[at] = modseq, fid, name
            else:
                uids.insert(at, uid)
                self._modseqs.insert(at, modseq)
                self._fids.insert(at, fid)
                names.insert(at, name)
        self._touch(uid)

    def _put_new(self, added: dict[int, tuple[int, str, str]]) -> None:
        """Add messages whose UIDs are not in the listing (many at once: one sort, not inserts)."""
        if len(added) < 64:
            for uid, (modseq, letters, name) in sorted(added.items()):
                self._put(uid, modseq, letters, name)
            return
        order = sorted(added)
        if not self._uids or order[0] > self._uids[-1]:  # all above the listed UIDs: append
            rows = [added[uid] for uid in order]
            self._append(order, [m for m, _, _ in rows], [ltr for _, ltr, _ in rows], [n for _, _, n in rows])
            return
        for uid in order:
            self._touch(uid)
        rows = list(zip(self._uids, self._modseqs, self._fids, self._need_names(), strict=True))
        rows += [(uid, modseq, self._fid(letters), name) for uid, (modseq, letters, name) in added.items()]
        rows.sort(key=_FIRST)
        self._uids = array("I", [row[0] for row in rows])
        self._modseqs = array("Q", [row[1] for row in rows])
        self._fids = array("I", [row[2] for row in rows])
        self._names = [row[3] for row in rows]

    def _append(
        self, uids: Sequence[int], modseqs: Sequence[int], letters: list[str], names: list[str]
    ) -> None:
        """Add messages with ascending UIDs above every listed one, a column at a time."""
        if not self._uids:
            self._bump()  # a listing nobody has seen yet: no need to log each message
        else:
            for uid in uids:
                self._touch(uid)
        for distinct in set(letters):  # a few combinations of flags among many messages
            self._fid(distinct)
        self._own_uids().extend(uids)
        self._modseqs.extend(array("Q", modseqs))
        self._fids.extend(array("I", map(self._fid_of.__getitem__, letters)))
        self._need_names().extend(names)

    def _delete_at(self, pos: int) -> None:
        uid = self._uids[pos]
        del self._own_uids()[pos]
        del self._modseqs[pos]
        del self._fids[pos]
        if self._names is not None:
            del self._names[pos]
        self._touch(uid)

    def _forget_name(self, name: str) -> None:
        """Drop the message whose file was name, unless its UID has a newer name already."""
        found = self._uid_of(_Parsed(name))
        pos = None if found is None else self._pos(found[0])
        if pos is not None and self._need_names()[pos] == name:
            self._delete_at(pos)

    # ----------------------------------------------------------------- reading

    def contains(self, uid: int) -> bool:
        return self._pos(uid) is not None

    def get(self, uid: int) -> MessageInfo | None:
        pos = self._pos(uid)
        return None if pos is None else self._info_at(pos)

    def summary(self, uid: int) -> tuple[frozenset[str], int] | None:
        """(flags, modseq) of a message, without its name."""
        pos = self._pos(uid)
        return None if pos is None else (self._fid_flags[self._fids[pos]], self._modseqs[pos])

    def uids_with(self, letter: str, present: bool = True) -> Iterator[int]:
        """UIDs of the messages with (or without) an info letter, ascending (mutex held)."""
        chosen = [fid for fid, letters in enumerate(self._table) if (letter in letters) == present]
        uids, fids = self._uids, self._fids
        # The next position of each chosen flag id, found by array.index (a C loop): SELECT's
        # first unseen message of 100,000 all but the last seen costs no Python loop over them.
        ahead: dict[int, int] = {}
        for fid in chosen:
            with contextlib.suppress(ValueError):
                ahead[fid] = fids.index(fid)
        while ahead:
            fid = min(ahead, key=ahead.__getitem__)
            pos = ahead[fid]
            yield uids[pos]
            try:
                ahead[fid] = fids.index(fid, pos + 1)
            except ValueError:
                del ahead[fid]

    def store_flags(
        self, uids: Iterable[int], flags: Iterable[str], mode: Mode
    ) -> tuple[dict[int, tuple[frozenset[str], int]], list[int]]:
        """Change flags; return {uid: (flags, modseq)} for the messages there and the UIDs changed."""
        wanted = sorted(set(uids))
        result: dict[int, tuple[frozenset[str], int]] = {}
        changed: list[int] = []
        with self.mutex, self._locked(exclusive=True):
            self._refresh_locked(exclusive=True)
            letters = self._letters_for(flags, create=mode is not Mode.REMOVE)
            state = self._state_or_fail()
            modseq = state.highestmodseq + 1
            names = self._need_names()
            for uid in wanted:
                pos = self._pos(uid)
                if pos is None:
                    continue
                old = self._table[self._fids[pos]]
                if mode is Mode.ADD:
                    new = set(old) | set(letters)
                elif mode is Mode.REMOVE:
                    new = set(old) - set(letters)
                else:  # keep letters we do not manage (P, unknown keywords)
                    new = {c for c in old if not self._managed(c)} | set(letters)
                if new == set(old):
                    result[uid] = (self._fid_flags[self._fids[pos]], self._modseqs[pos])
                    continue
                new_letters = "".join(sorted(new))
                name = _cur_name(_Parsed(names[pos]).base, uid, modseq, new_letters)
                try:
                    os.rename(os.path.join(self._cur_path, names[pos]), os.path.join(self._cur_path, name))
                except FileNotFoundError:
                    self._delete_at(pos)  # removed by another Maildir tool
                    continue
                self._put(uid, modseq, new_letters, name)
                result[uid] = (self._fid_flags[self._fid_of[new_letters]], modseq)
                changed.append(uid)
            if changed:
                # Flag changes are not fsynced (nor are Dovecot's): a crash may lose the last
                # ones, never a message or a UID. A state file older than the names, or torn, is
                # healed from the names on the next scan (see Rebuild).
                self._write_state(_State(state.uidvalidity, state.uidnext, modseq), durable=False)
        return result, changed

    # ----------------------------------------------------------------- scanning

    def current_state(self) -> _State:
        with self.mutex:
            self._refresh()
            return self._state_or_fail()

    def messages(self) -> list[MessageInfo]:
        with self.mutex:
            if self._snapshot is None:
                self._refresh()
            cached = self._materialized
            if cached is None or cached[0] != self.version:
                infos = [self._info_at(pos) for pos in range(len(self._uids))]
                cached = self._materialized = (self.version, infos)
            return list(cached[1])

    def uid_array(self) -> array:
        """All UIDs, ascending: the listing's own array, lent. Neither side changes it in place
        from now on (each copies it first), so a SELECT of 100,000 messages copies nothing
        (a copy costs its page faults in a new process) and sessions share one array."""
        with self.mutex:
            self._lent_uids = self._uids
            return self._uids

    def _own_uids(self) -> array:
        """The UIDs column, to be changed in place: copied first if it is lent."""
        if self._uids is self._lent_uids:
            self._uids = array("I", self._uids)
            self._lent_uids = None
        return self._uids

    def message(self, uid: int) -> MessageInfo:
        with self.mutex:
            info = self.get(uid)
            if info is None:
                self._refresh()
                info = self.get(uid)
            if info is None:
                raise MessageGone(f"no message with UID {uid}")
            return info

    def _state_or_fail(self) -> _State:
        if self._state is None:  # pragma: no cover - _refresh always leaves a state
            raise FolderGone(f"folder {self.path} has no state")
        return self._state

    def _check_exists(self) -> os.stat_result:
        try:
            cur = os.stat(self._cur_path)
        except FileNotFoundError as exc:
            raise FolderGone(f"folder {self.path} does not exist (any more)") from exc
        if (cur.st_dev, cur.st_ino) != self._identity:
            raise FolderGone(f"folder {self.path} was replaced by another one")
        return cur

    def _glance(self) -> tuple[bool, int | None]:
        """(state file and cur/ unchanged since our last scan, mtime of new/ or None if it is
        missing): two stats and a read of a small file."""
        cur = self._check_exists()
        same = self._snapshot == (read_small(self._state_path), cur.st_ino, cur.st_mtime_ns)
        try:
            return same, os.stat(self._new_path).st_mtime_ns
        except FileNotFoundError:
            return same, None

    def looks_unchanged(self) -> bool:
        """Whether the folder is as at our last scan, without waiting: by the kernel's notice
        of changes (no event in the folder's directory or new/ since a look that found nothing
        new) and a stat of cur/, else by _glance, with new/ still as we last found it empty
        (see _probe). Lists nothing and takes no lock file, so it may run on the event loop;
        False when in doubt (a first look, anything changed, an error)."""
        snapshot = self._snapshot
        if self._unopened or snapshot is None:
            return False
        watch = self._watch
        count = None if watch is None else CHANGES.count(watch, wait=False)
        if count is not None and count == self._noticed:
            try:
                cur = self._check_exists()
            except (OSError, FolderGone):
                return False
            return cur.st_ino == snapshot[1] and cur.st_mtime_ns == snapshot[2]
        try:
            same, new_mtime = self._glance()
        except (OSError, FolderGone):
            return False
        unchanged = same and new_mtime is not None and new_mtime == self._new_empty_at
        if unchanged:
            self._noticed = count  # no event since count: the next check needs no look
        return unchanged

    def _notice(self) -> int | None:
        """The kernel's count of changes to the folder, read before a look at it (a change
        after this shows in a later count); the watch is set up at the first call in a process
        that wants it (CHANGES.prepare)."""
        if not self._watch_tried and CHANGES.wanted:
            self._watch_tried = True
            self._watch = CHANGES.watch(self._path_str)
            if self._watch is not None:
                weakref.finalize(self, CHANGES.unwatch, self._watch)
        return None if self._watch is None else CHANGES.count(self._watch)

    def _probe(self) -> tuple[bool, list[str]]:
        """(state file and cur/ unchanged since our last scan, names waiting in new/): no lock.

        new/ is listed unless it was empty at our last look and its mtime has not changed since;
        that mtime is trusted only if it was over a second old when we listed, since directory
        mtimes have the resolution of the kernel's coarse clock (a delivery in the same tick as
        our listing would otherwise go unnoticed). Listing an emptied directory that once held
        many entries is not free (its blocks stay allocated), hence the shortcut.
        """
        if self._unopened:
            self._first_look()
        count = self._notice()
        same, new_mtime = self._glance()
        if new_mtime is None or new_mtime == self._new_empty_at:
            arrivals = []
        else:
            now = time.time_ns()
            arrivals = [n for n in os.listdir(self._new_path) if not n.startswith(".")]
            self._new_empty_at = new_mtime if not arrivals and now - new_mtime > 1_000_000_000 else None
        self._noticed = count if same and not arrivals else None
        return same, arrivals

    def _first_look(self) -> None:
        """Read the saved index before anything else: the first scan starts from it, and the
        mtime at which another process found new/ empty spares us listing new/ (a disk read
        in a cold SELECT) while new/ keeps it. Trusted as our own would be: see _probe."""
        self._unopened = False
        saved = self._first_saved = read_index(self._path_str)
        if saved is not None and saved.new_empty_at and self._new_empty_at is None:
            self._new_empty_at = saved.new_empty_at

    def _refresh(self, force: bool = False) -> None:
        same, arrivals = self._probe()
        if same and not arrivals and not force:
            return
        try:
            if not arrivals:
                with self._locked(exclusive=False):
                    if self._refresh_locked(exclusive=False, force=force):
                        return
            with self._locked(exclusive=True):
                self._refresh_locked(exclusive=True, force=force)
        finally:
            self._listed = None

    def _refresh_locked(self, exclusive: bool, force: bool = False) -> bool:
        """Bring the listing up to date under the lock. Without LOCK_EX, return False if
        something needs writing (new mail, names without UIDs, state to repair)."""
        same, arrivals = self._probe()
        if same and not force:
            if not arrivals:
                return True
            if not exclusive:
                return False
            # cur/ is as we know it: only the new arrivals need UIDs.
            self._assign([], arrivals, self._state_or_fail())
            return True
        raw_state = read_small(self.path / STATE_FILE)
        cur_stat = self._check_exists()
        state = _State.parse(raw_state)
        self._load_keywords()
        first = self._snapshot is None and not self._uids and not force
        saved, self._first_saved = self._first_saved, None  # only the first scan may use it
        if first and saved is not None:
            if self._open_saved(saved, raw_state, state, cur_stat):  # the listing owns it now
                return self._refresh_locked(exclusive) if arrivals else True
        elif saved is not None:
            saved.close()
        self._load_adopted()  # after the index: a current one needs no names parsed
        # The listing made under LOCK_SH serves the LOCK_EX pass that follows it, if nothing
        # changed in between (the state's bytes change with every change we make; see Cheap
        # re-check).
        listed_at = (raw_state, cur_stat.st_ino, cur_stat.st_mtime_ns)
        cached = self._listed if self._listed is not None and self._listed[0] == listed_at else None
        if cached is not None:
            listed = cached[1]
        else:  # this process's first listing of the folder: it may well be out of the page cache
            listed = _listed(self._cur_path, cur_stat.st_size if self._snapshot is None else 0)
        self._listed = (listed_at, listed, None) if not exclusive else None

        initial = not self._uids
        fresh: Collection[str] = listed  # the names not in the listing yet: at first, all of them
        if not initial:
            known, listing = set(self._need_names()), set(listed)
            for name in known - listing:
                self._forget_name(name)
            fresh = listing - known
        broken: list[str] = []  # cur/ names without a usable UID
        added: dict[int, tuple[int, str, str]] = {}  # uid: (modseq, letters, name), UIDs not listed yet
        if not self._adopted:
            # Other tools' names (no U= or M=) have no UID yet: no need to parse them here. At a
            # first open of an imported mailbox that is every name.
            # (found by the LOCK_SH pass just before, if it was on the same listing)
            foreign = cached[2] if cached is not None and cached[2] is not None else _without_uids(fresh)
            if foreign and not exclusive:
                self._listed = (listed_at, listed, foreign)
                return False  # they need UIDs: the LOCK_EX pass does the rest (once)
            broken += foreign
            fresh = () if len(foreign) == len(fresh) else set(fresh).difference(foreign)
        for name in fresh:
            parsed = _Parsed(name)
            found = self._uid_of(parsed)
            if found is None:
                broken.append(name)
                continue
            uid, modseq = found
            # A duplicate U= (a file copied by hand): the lower name keeps the UID.
            pos = self._pos(uid)
            if pos is not None:
                holder = self._need_names()[pos]
                if holder < name:
                    broken.append(name)
                else:
                    broken.append(holder)
                    self._put(uid, modseq, parsed.letters, name)
                continue
            if uid in added:
                if added[uid][2] < name:
                    broken.append(name)
                    continue
                broken.append(added[uid][2])
            added[uid] = (modseq, parsed.letters, name)
        self._put_new(added)
        if initial:
            self._bump()  # nobody has seen this listing yet: no need to log each message

        # The uidlist counts too: its UIDs were handed out even if their messages are gone now.
        max_uid = max(self._uids[-1] if self._uids else 0, self._adopted_max[0])
        max_modseq = max(max(self._modseqs, default=0), self._adopted_max[1])
        # So does the high-water mark of the last expunge, where a crash may have taken the state
        # back: only before this process's first look at it (a crash ended all processes).
        if self._snapshot is None or state is None:
            mark = read_highwater(self._path_str)
            if mark is not None and (state is None or mark.uidvalidity == state.uidvalidity):
                max_uid = max(max_uid, mark.uidnext - 1)
                max_modseq = max(max_modseq, mark.highestmodseq)
        healthy = state is not None and state.uidnext > max_uid and state.highestmodseq >= max_modseq
        if healthy and not broken and not arrivals:
            self._state = state
            self._snapshot = (raw_state, cur_stat.st_ino, cur_stat.st_mtime_ns)
            self._save_index()
            return True
        if not exclusive:
            return False

        if state is None:
            state = self._rebuilt_state(max_uid, max_modseq)
        state = _State(
            state.uidvalidity, max(state.uidnext, max_uid + 1), max(state.highestmodseq, max_modseq)
        )
        self._assign(broken, arrivals, state)  # its state write saves the index too
        return True

    def _open_saved(
        self, saved: SavedIndex, raw_state: bytes | None, state: _State | None, cur: os.stat_result
    ) -> bool:
        """Start from the saved index (first scan of this process); True if it is current.

        A current index is taken as it stands (the names are read when first needed). An older
        one still gives the previous listing, so the rescan that follows parses only the names
        that changed since it was written."""
        self._uids = saved.uids
        # The flag ids and modseqs are read on first need (__getattr__): SELECT needs neither.
        del self._fids, self._modseqs
        self._lazy = {"_fids": saved, "_modseqs": saved}
        self._table = saved.table
        self._fid_of = {letters: fid for fid, letters in enumerate(self._table)}
        self._fid_flags = [self._flags_of(letters) for letters in self._table]
        self._names, self._saved = None, saved
        self._bump()
        # Holds until the listing changes, whether or not its flag ids have been read by then
        # (a FETCH of every message's flags reads them; the reselect after it still knows).
        self._unseen_found = (self.version, saved.first_unseen or None)
        current = (raw_state, cur.st_ino, cur.st_mtime_ns)
        if state is None or current != (saved.state, saved.cur_ino, saved.cur_mtime_ns):
            self._need_names()
            return False
        self._state = state
        self._snapshot = current
        self._index_saved = (current, time.monotonic())
        return True

    def _save_index(self) -> None:
        """Save the listing of a big folder for the next process, at most every INDEX_INTERVAL s."""
        if len(self._uids) < INDEX_MIN_MESSAGES or self._names is None or self._snapshot is None:
            return
        written, at = self._index_saved
        if written == self._snapshot or time.monotonic() - at < INDEX_INTERVAL:
            return
        raw_state, ino, mtime = self._snapshot
        try:
            write_index(
                str(self.path),
                raw_state or b"",
                ino,
                mtime,
                Columns(self._uids, self._modseqs, self._fids, self._table),
                self._names,
                self._new_empty_at,
            )
        except OSError as exc:  # a cache: the next process scans cur/ instead
            log.debug("cannot save the index of %s: %s", self.path, exc)
            return
        self._index_saved = (self._snapshot, time.monotonic())

    def _assign(self, broken: list[str], arrivals: list[str], state: _State) -> None:
        """Give UIDs to cur/ names without one and move new/ arrivals into cur/ (LOCK_EX held).

        Names of other tools (no U= or M= at all) are adopted in place through the uidlist;
        new/ arrivals, and names that carry a U= or M= already (a copy made by hand, a damaged
        name), are renamed to carry theirs. UIDs go by name in cur/ (names of other tools begin
        with the delivery time too), then by arrival in new/."""
        if not broken and not arrivals:
            self._write_state(state)
            return
        uid, modseq = state.uidnext, state.highestmodseq + 1
        broken = sorted(broken)
        if broken and not arrivals and self._adopt_all(broken, uid, modseq):
            uid += len(broken)
            self._write_state(_State(state.uidvalidity, uid, modseq), durable=False)
            return
        adopted_bases: dict[str, tuple[int, int]] = {}
        adopted: dict[int, tuple[int, str, str]] = {}
        renamed_in_cur = moved_from_new = False
        todo = [("cur", n) for n in broken]
        todo += [("new", n) for n in sorted(arrivals, key=lambda n: _arrival_key(n, self.path))]
        where = {"cur": self._cur_path, "new": self._new_path}
        for sub, name in todo:
            if sub == "cur" and ",U=" not in name and ",M=" not in name:
                base, _, info = name.partition(":")
                if can_adopt(base) and base not in self._adopted and base not in adopted_bases:
                    adopted_bases[base] = (uid, modseq)
                    adopted[uid] = (modseq, info[2:] if info[:2] == "2," else "", name)
                    uid += 1
                    continue
            parsed = _Parsed(name)
            target = _cur_name(parsed.base, uid, modseq, parsed.letters)
            try:
                os.rename(os.path.join(where[sub], name), os.path.join(self._cur_path, target))
            except FileNotFoundError:
                continue  # expunged or moved by another Maildir tool
            moved_from_new |= sub == "new"
            renamed_in_cur |= sub == "cur"
            self._put(uid, modseq, parsed.letters, target)
            uid += 1
        if adopted:
            self._save_adopted(adopted_bases)
            self._put_new(adopted)
        if renamed_in_cur or moved_from_new:
            fsync_dir(self.path / "cur")
        if moved_from_new:
            fsync_dir(self.path / "new")
        # The names and the uidlist that carry the new UIDs are durable now, and the state heals
        # upwards from them (see Durability): no fsync for the state here.
        self._write_state(_State(state.uidvalidity, uid, modseq), durable=False)

    def _adopt_all(self, names: list[str], uid: int, modseq: int) -> bool:
        """Adopt sorted names of other tools as UIDs uid, uid+1, ... in bulk (an imported folder
        at its first open: list operations instead of a loop over 100,000 names); False, having
        done nothing, if any of them needs the per-name path of _assign."""
        bases, letters = _bases_and_letters(names)
        joined = "\n".join(bases)
        if (
            ",U=" in joined
            or ",M=" in joined
            or "\r" in joined
            or joined.count("\n") != len(bases) - 1
            or "" in bases
            # Two names with one base sort next to each other (everything between them begins
            # with that base and its ':').
            or any(map(eq, bases, islice(bases, 1, None)))
            or (self._adopted and not self._adopted.keys().isdisjoint(bases))
        ):
            return False
        uids = range(uid, uid + len(names))
        self._save_adopted(AdoptedRun(bases, uid, modseq))
        if self._uids and self._uids[-1] >= uid:  # never so (UIDNEXT is above them): be safe
            self._put_new({u: (modseq, ltr, n) for u, ltr, n in zip(uids, letters, names, strict=True)})
        else:
            self._append(uids, [modseq] * len(names), letters, names)
        return True

    def _save_adopted(self, new: Adopted) -> None:
        """Write the uidlist with new entries, without those of messages that left it (LOCK_EX).

        An entry stays while its UID is listed under a name without U=: messages expunged, or
        renamed with a U= by a flag change, drop out here."""
        names = self._need_names()
        kept: dict[str, tuple[int, int]] = {}
        for base, (uid, modseq) in self._adopted.items():
            pos = self._pos(uid)
            if pos is not None and ",U=" not in names[pos]:
                kept[base] = (uid, modseq)
        if not kept and isinstance(new, AdoptedRun):  # a first open: the run is the whole list
            self._took_adopted(new, write_uidlist(self.path, new))
            return
        kept.update(new)
        self._took_adopted(kept, write_uidlist(self.path, kept))

    def _rebuilt_state(self, max_uid: int, max_modseq: int) -> _State:
        uidvalidity = None
        raw = read_small(self.path / UIDVALIDITY_FILE)
        if raw is not None and raw.strip().isdigit() and 0 < int(raw) <= _UID_MAX:
            uidvalidity = int(raw)
        if uidvalidity is None:
            uidvalidity = new_uidvalidity()
            replace_synced(self.path / UIDVALIDITY_FILE, f"{uidvalidity}\n".encode("ascii"))
        # +1: an expunge after the last flag change bumped it without leaving an M= behind.
        return _State(uidvalidity, max_uid + 1, max_modseq + 1)

    def _write_state(self, state: _State, durable: bool = True) -> None:
        """Write the state; it is the current one, with cur/ as it is now (LOCK_EX held)."""
        raw = write_state_file(self._path_str, state.dump(), durable)
        self._state = state
        cur = os.stat(self.path / "cur")
        self._snapshot = (raw, cur.st_ino, cur.st_mtime_ns)
        self._save_index()

    # ----------------------------------------------------------------- the change log

    def _touch(self, uid: int) -> None:
        self.log.append(uid)
        self.version += 1
        if len(self.log) > _LOG_MAX:
            self.trim_log(force=True)

    def _bump(self) -> None:
        """Everything changed at once (the listing was loaded whole): views compare all."""
        self.version += 1
        self.log.clear()
        self.log_base = self.version

    def trim_log(self, force: bool = False) -> None:
        """Drop change-log entries every view has seen (or, if force, the older half)."""
        if len(self.log) < _LOG_TRIM and not force:
            return
        seen = [view._seen for view in self.views if view._seen is not None]
        low = min(seen, default=self.version)
        if force:  # a view that does not sync any more must not hold memory forever
            low = max(low, self.version - len(self.log) // 2)
        if low > self.log_base:
            del self.log[: low - self.log_base]
            self.log_base = low

    def _managed(self, letter: str) -> bool:
        return letter in _LETTER_FLAGS or ("a" <= letter <= "z" and ord(letter) - 97 < len(self._keywords))

    # ----------------------------------------------------------------- keywords

    def _load_keywords(self) -> None:
        raw = None
        with contextlib.suppress(FileNotFoundError):
            raw = (self.path / KEYWORDS_FILE).read_text("utf-8", errors="replace")
        keywords: list[str] = []
        for line in (raw or "").splitlines():
            index, _, word = line.partition(" ")
            if index.isdigit() and int(index) == len(keywords) and _KEYWORD.match(word):
                keywords.append(word)
        if keywords != self._keywords:
            self._keywords = keywords[:MAX_KEYWORDS]
            # Only messages whose flags read differently now count as changed: a new keyword
            # elsewhere must not make every session report every message of the folder.
            before = self._fid_flags
            self._fid_flags = [self._flags_of(letters) for letters in self._table]
            differ = {fid for fid, flags in enumerate(self._fid_flags) if flags != before[fid]}
            if differ:
                for pos, fid in enumerate(self._fids):
                    if fid in differ:
                        self._touch(self._uids[pos])

    def _letters_for(self, flags: Iterable[str], create: bool = True) -> str:
        """Map IMAP flags to info letters; new keywords get a letter if create (LOCK_EX held)."""
        letters = []
        keywords = list(self._keywords)
        for flag in flags:
            if flag.startswith("\\"):
                system = _SYSTEM_BY_LOWER.get(flag.lower())
                if system is None:
                    if flag.lower() == "\\recent":
                        continue  # a session attribute, never stored
                    raise InvalidFlag(f"unknown system flag {flag}")
                letters.append(SYSTEM_FLAGS[system])
                continue
            if not _KEYWORD.match(flag):
                raise InvalidFlag(f"invalid keyword {flag!r}")
            lowered = [k.lower() for k in keywords]
            if flag.lower() in lowered:
                letters.append(chr(97 + lowered.index(flag.lower())))
                continue
            if not create:
                continue
            if len(keywords) >= MAX_KEYWORDS:
                raise TooManyKeywords(f"folder {self.path} already has {MAX_KEYWORDS} keywords")
            keywords.append(flag)
            letters.append(chr(96 + len(keywords)))
        if keywords != self._keywords:
            text = "".join(f"{i} {word}\n" for i, word in enumerate(keywords))
            replace_synced(self.path / KEYWORDS_FILE, text.encode("utf-8"))
            self._keywords = keywords
        return "".join(letters)

    # ----------------------------------------------------------------- adding and removing

    def stage_into(self, uid: int, dest: _Listing) -> tuple[int, Path, frozenset[str]] | None:
        """Link (or copy) one message into dest's tmp/; None if it was expunged meanwhile."""
        for attempt in range(3):
            with self.mutex:
                if attempt or not self.contains(uid):
                    self._refresh(force=bool(attempt))
                info = self.get(uid)
            if info is None:
                return None
            try:
                size, wire = info.size, info.wire_size
            except MessageGone:
                continue
            target = dest.path / "tmp" / unique_name(size, wire)
            if not (dest.path / "tmp").is_dir():
                raise FolderGone(f"folder {dest.path} is gone")
            try:
                os.link(info.path, target)
            except FileNotFoundError:
                continue  # renamed (flags) or expunged by another process: look again
            except OSError:  # EXDEV, EPERM, EMLINK: copy the bytes instead
                try:
                    with open(info.path, "rb") as src:
                        write_synced(target, src.read())
                    shutil.copystat(info.path, target)
                except FileNotFoundError:
                    target.unlink(missing_ok=True)
                    continue
            return (uid, target, info.flags)
        return None

    def adopt(self, staged: list[tuple[Path, Iterable[str]]]) -> list[int]:
        """Give files in our tmp/ UIDs and move them into cur/, durably; return the UIDs."""
        with self.mutex, self._locked(exclusive=True):
            self._refresh_locked(exclusive=True)
            letters = [self._letters_for(flags) for _, flags in staged]
            state = self._state_or_fail()
            uid, modseq = state.uidnext, state.highestmodseq + 1
            uids = []
            for (tmp, _), flag_letters in zip(staged, letters, strict=True):
                name = _cur_name(tmp.name, uid, modseq, flag_letters)
                os.rename(tmp, self.path / "cur" / name)
                self._put(uid, modseq, flag_letters, name)
                uids.append(uid)
                uid += 1
            fsync_dir(self.path / "cur")
            self._write_state(_State(state.uidvalidity, uid, modseq), durable=False)  # see Durability
            return uids

    def remove(self, doomed: Iterable[int]) -> list[int]:
        """Unlink the messages with these UIDs (LOCK_EX held); return the UIDs removed."""
        names = self._need_names()
        present = [uid for uid in sorted(set(doomed), reverse=True) if self._pos(uid) is not None]
        if not present:
            return []
        # The high-water mark goes to disk first: UIDNEXT must be durable before the names that
        # prove these UIDs were used are gone (see Durability), and HIGHESTMODSEQ, bumped for the
        # expunge, must not fall back below what clients were told once the expunge is durable.
        state = self._state_or_fail()
        state = _State(state.uidvalidity, state.uidnext, state.highestmodseq + 1)
        write_highwater(self._path_str, Mark(state.uidvalidity, state.uidnext, state.highestmodseq))
        for uid in present:
            pos = self._pos(uid)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self._cur_path, names[pos]))
            self._delete_at(pos)
        fsync_dir(self.path / "cur")
        self._write_state(state, durable=False)  # the mark stands for it after a crash
        return present[::-1]

    # ----------------------------------------------------------------- locking

    @contextlib.contextmanager
    def _locked(self, exclusive: bool) -> Iterator[None]:
        lock_path = self.path / LOCK_FILE
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError as exc:
            raise FolderGone(f"folder {self.path} does not exist (any more)") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            mine = os.fstat(fd)
            try:
                there = os.stat(lock_path)
            except FileNotFoundError:
                there = None
            if there is None or (there.st_ino, there.st_dev) != (mine.st_ino, mine.st_dev):
                raise FolderGone(f"folder {self.path} was deleted or renamed")
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the folder's exclusive lock."""
        with self._locked(exclusive=True):
            yield


class Folder:
    """A Maildir folder as IMAP and POP3 see it. Synchronous; run it in a worker thread, but for
    quiet() and reopened_quietly(), which never wait and are meant for the event loop.

    One Folder object per session: sync() reports what changed since that object's previous
    sync(). The listing behind it is shared by all Folder objects of the process for the same
    folder; a Folder object costs a sorted array of the UIDs it has reported (4 bytes each),
    which it shares with the listing and its session until one of them changes it (then that
    one copies it first: see uid_array, known_uids). A Folder object may be used from several
    threads.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._shared: _Listing | None = None
        self._known = array("I")  # UIDs reported by sync() and not yet reported expunged, sorted
        self._lent_known: array | None = None  # _known while shared (listing, session): copy to change
        self._seen: int | None = None  # the listing's version at our last sync()
        self._seen_modseq = 0
        self._own: dict[int, int] = {}  # our own flag changes since the last sync(): uid -> modseq

    def attach(self) -> None:
        """Find the folder's listing now (raises FolderGone if the folder does not exist)."""
        self._listing  # noqa: B018 - the property does it

    @property
    def _listing(self) -> _Listing:
        if self._shared is None:
            shared = _shared_listing(self.path)
            with shared.mutex:
                shared.views.add(self)
            self._shared = shared
        return self._shared

    # ----------------------------------------------------------------- public, read side

    @property
    def uidvalidity(self) -> int:
        return self._listing.current_state().uidvalidity

    @property
    def uidnext(self) -> int:
        return self._listing.current_state().uidnext

    @property
    def highestmodseq(self) -> int:
        return self._listing.current_state().highestmodseq

    def state(self) -> tuple[int, int, int]:
        """(UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ) from one look at the folder."""
        state = self._listing.current_state()
        return state.uidvalidity, state.uidnext, state.highestmodseq

    def state_as_synced(self) -> tuple[int, int, int]:
        """state() as of the last look at the folder (right after sync(): no second look)."""
        listing = self._listing
        with listing.mutex:
            state = listing._state_or_fail()
        return state.uidvalidity, state.uidnext, state.highestmodseq

    @property
    def keywords(self) -> list[str]:
        """Keywords defined in this folder (for the FLAGS response)."""
        listing = self._listing
        with listing.mutex:
            listing._refresh()
            return list(listing._keywords)

    def keywords_as_synced(self) -> list[str]:
        """The keywords as of the last look at the folder (right after sync(): no second look)."""
        listing = self._listing
        with listing.mutex:
            return list(listing._keywords)

    @property
    def can_create_keywords(self) -> bool:
        """False once all 26 keyword letters are used (PERMANENTFLAGS then lacks \\*)."""
        return len(self.keywords) < MAX_KEYWORDS

    def sync(self, *, list_first: bool = True) -> SyncResult:
        """Pick up new mail and other processes' changes; report them relative to the last sync().

        list_first=False: the first sync of this object reports no new_uids (the caller reads
        known_uids() instead), which spares a list of every UID of a big folder."""
        listing = self._listing
        with listing.mutex:
            listing._refresh()
            if self._seen is None or self._seen < listing.log_base:
                result = self._sync_all(listing, list_first)
            else:
                touched = sorted(set(listing.log[self._seen - listing.log_base :]))
                new, gone, changed = [], [], {}
                for uid in touched:
                    summary, known = listing.summary(uid), self._knows(uid)
                    if summary is None:
                        if known:
                            gone.append(uid)
                            self._forget(uid)
                    elif not known:
                        new.append(uid)
                        self._learn(uid)
                    elif self._own.get(uid) != summary[1]:
                        changed[uid] = summary
                result = SyncResult(new, gone, changed)
            self._seen = listing.version
            self._seen_modseq = listing._state_or_fail().highestmodseq
            self._own.clear()
            listing.trim_log()
            return result

    @contextlib.contextmanager
    def _if_quiet(self) -> Iterator[_Listing | None]:
        """The listing, its mutex held, if a sync() now would report nothing and change nothing
        (this object has seen every change, made none since, and the folder on disk is as then:
        see _Listing.looks_unchanged); else None. Never waits for the mutex."""
        listing = self._shared
        if listing is None or self._seen is None or self._own or not listing.mutex.acquire(blocking=False):
            yield None
            return
        try:
            state = listing._state
            quiet = (
                self._seen == listing.version
                and state is not None
                and self._seen_modseq == state.highestmodseq
                and listing.looks_unchanged()
            )
            yield listing if quiet else None
        finally:
            listing.mutex.release()

    def quiet(self, keywords: list[str]) -> bool:
        """Whether sync() would report nothing now and the folder's keywords are still these.

        For the event loop, where a command with nothing to report (a NOOP, most commands of a
        client that polls) is spared the trip to a worker thread, which costs it more than all
        the rest. One read of the kernel's notice of changes (store/changes.py), or where there
        is none two stats and a read of a small file, all cached: what IDLE's FolderWatcher does
        on the loop too. False when in doubt (another thread holds the listing, something
        changed): the caller then asks sync() in a worker thread."""
        with self._if_quiet() as listing:
            return listing is not None and listing._keywords == keywords

    def reopened_quietly(self) -> tuple[tuple[int, int, int], list[str], int | None] | None:
        """For a reselect on the event loop: (state_as_synced(), keywords_as_synced(), the first
        UID without \\Seen or None) as a sync() and first_uid_without() would have them, if
        quiet and that UID is known without a look at the flags (see quiet); else None."""
        with self._if_quiet() as listing:
            if listing is None or listing._state is None:
                return None
            first = listing.known_first_unseen()
            if first is None or (first and not self._knows(first)):
                return None
            state = (listing._state.uidvalidity, listing._state.uidnext, listing._state.highestmodseq)
            return state, list(listing._keywords), first or None

    def _sync_all(self, listing: _Listing, list_first: bool = True) -> SyncResult:
        """First sync, or the change log no longer reaches back to our last one: compare all."""
        if not self._known and not self._own:
            # First sync of this object: everything is new. Copies in C, no loop per message
            # (a warm SELECT of 100,000 messages).
            self._known = self._lent_known = listing.uid_array()
            return SyncResult(self._known.tolist() if list_first else [], [], {})
        uids = self._lent_known = listing.uid_array()
        known = set(self._known)
        new = [uid for uid in uids if uid not in known]
        gone = [uid for uid in self._known if not listing.contains(uid)]
        changed = {}
        for uid in known.intersection(uids):
            summary = listing.summary(uid)
            if summary is not None and summary[1] > self._seen_modseq and self._own.get(uid) != summary[1]:
                changed[uid] = summary
        self._known = uids
        return SyncResult(new, gone, dict(sorted(changed.items())))

    def continue_from(self, other: Folder) -> None:
        """Report changes relative to what `other` reported: the same folder under its name
        before a RENAME (the next sync() compares everything, as after a gap in the log)."""
        self._known = array("I", other._known)
        self._seen_modseq = other._seen_modseq

    def _knows(self, uid: int) -> bool:
        at = bisect.bisect_left(self._known, uid)
        return at < len(self._known) and self._known[at] == uid

    def _own_known(self) -> array:
        """_known, to be changed in place: copied first if it is shared."""
        if self._known is self._lent_known:
            self._known = array("I", self._known)
            self._lent_known = None
        return self._known

    def _learn(self, uid: int) -> None:
        known = self._own_known()
        if not known or known[-1] < uid:
            known.append(uid)
        else:
            known.insert(bisect.bisect_left(known, uid), uid)

    def _forget(self, uid: int) -> None:
        at = bisect.bisect_left(self._known, uid)
        if at < len(self._known) and self._known[at] == uid:
            del self._own_known()[at]

    def messages(self) -> list[MessageInfo]:
        """All messages of the folder by ascending UID, as of the last scan by any Folder object
        of this process; may include some that sync() has not reported to this object yet.
        Makes an object per message: prefer the methods below on big folders."""
        return self._listing.messages()

    def summaries(self, uids: list[int]) -> list[tuple[frozenset[str], int] | None]:
        """(flags, modseq) of each UID (ascending), None for those not here: FETCH FLAGS, no names."""
        listing = self._listing
        with listing.mutex:
            run = self.columns(uids)
            if run is not None:
                return list(zip(*run, strict=True))
            return [listing.summary(uid) for uid in uids]

    def columns(self, uids: Sequence[int]) -> tuple[list[frozenset[str]], array] | None:
        """(flags of each, modseqs) if uids are a run of consecutive messages here, else None.

        The usual case for FETCH 1:* in a big folder: the columns are sliced in C."""
        listing = self._listing
        with listing.mutex:
            start = listing._pos(uids[0]) if uids else None
            if start is None:
                return None
            stop = start + len(uids)
            wanted = uids if isinstance(uids, array) and uids.typecode == "I" else array("I", uids)
            if listing._uids[start:stop] != wanted:
                return None
            flags = listing._fid_flags
            return [flags[fid] for fid in listing._fids[start:stop]], listing._modseqs[start:stop]

    def known_uids(self) -> array:
        """The UIDs sync() has reported and not reported expunged, ascending. Shared, not copied:
        the caller must copy it before changing it (as this object does, see _own_known)."""
        self._lent_known = self._known
        return self._known

    def first_uid_without(self, flag: str, skip: Callable[[int], bool] = lambda uid: False) -> int | None:
        """The lowest UID without a system flag (SELECT's UNSEEN), passing over those skip() names."""
        listing = self._listing
        with listing.mutex:
            if listing._snapshot is None:
                listing._refresh()
            unseen = flag == "\\Seen"
            hint = listing.known_first_unseen() if unseen else None
            if hint == 0:
                return None
            if hint is not None and not skip(hint):
                return hint
            first: int | None = None
            for uid in listing.uids_with(SYSTEM_FLAGS[flag], present=False):
                if first is None:
                    first = uid
                if not skip(uid):
                    break
            else:
                uid = None
            if unseen:
                listing._unseen_found = (listing.version, first)
            return uid

    def message(self, uid: int) -> MessageInfo:
        return self._listing.message(uid)

    def open(self, uid: int) -> BinaryIO:
        """Open a message for reading; follows a rename by another process (flag change)."""
        listing = self._listing
        for attempt in range(3):
            info = listing.message(uid)
            try:
                # A string path: three Path objects per message show in FETCH profiles.
                return open(os.path.join(listing._cur_path, info.name), "rb")  # the caller closes it
            except FileNotFoundError:
                if attempt == 2:
                    break
                with listing.mutex:
                    listing._refresh(force=True)
        raise MessageGone(f"message {uid} was expunged")

    def read(self, uid: int) -> bytes:
        with self.open(uid) as handle:
            return handle.read()

    # ----------------------------------------------------------------- public, write side

    def store_flags(
        self, uids: Iterable[int], flags: Iterable[str], mode: Mode | str = Mode.REPLACE
    ) -> dict[int, tuple[frozenset[str], int]]:
        """Change flags of the existing messages among uids; return their (flags, modseq).

        Changed messages share one new modseq. Messages that no longer exist are left out.
        The changes are not reported again by this object's next sync().
        """
        listing = self._listing
        with listing.mutex:
            result, changed = listing.store_flags(uids, flags, Mode(mode))
            for uid in changed:
                if self._knows(uid):
                    self._own[uid] = result[uid][1]
            return result

    def expunge(self, uids: Iterable[int] | None = None) -> list[int]:
        """Remove the \\Deleted messages (only those among uids, if given); return their UIDs.

        The result may include UIDs that sync() has not reported yet (new mail that arrived
        with \\Deleted set); sync() will not report those at all, so a session announces
        only the ones it knows.
        """
        listing = self._listing
        with listing.mutex, listing._locked(exclusive=True):
            listing._refresh_locked(exclusive=True)
            limit = None if uids is None else set(uids)
            doomed = [uid for uid in listing.uids_with("T") if limit is None or uid in limit]
            removed = listing.remove(doomed)
            for uid in removed:
                self._forget(uid)
            return removed

    def append(self, data: bytes, flags: Iterable[str] = (), internaldate: float | None = None) -> int:
        """Store a message durably (tmp → fsync → rename into cur/ → fsync cur/); return its UID."""
        tmp = self.path / "tmp" / unique_name(len(data), wire_size(data))
        try:
            write_synced(tmp, data)
        except FileNotFoundError as exc:
            raise FolderGone(f"folder {self.path} is gone") from exc
        try:
            if internaldate is not None:
                os.utime(tmp, (internaldate, internaldate))
            [uid] = self._listing.adopt([(tmp, flags)])
        finally:
            tmp.unlink(missing_ok=True)
        return uid

    def copy(self, uids: Iterable[int], dest: Folder) -> dict[int, int]:
        """Copy messages with their flags; return {source uid: dest uid} (for COPYUID).

        Hard links where the file system allows it, else a durable copy. Messages expunged
        meanwhile are left out. Never holds two folders' locks at once.
        """
        source, target = self._listing, dest._listing
        staged: list[tuple[int, Path, frozenset[str]]] = []
        try:
            for uid in sorted(set(uids)):
                staged_file = source.stage_into(uid, target)
                if staged_file is not None:
                    staged.append(staged_file)
            if not staged:
                return {}
            dest_uids = target.adopt([(path, flags) for _, path, flags in staged])
        finally:
            for _, path, _ in staged:
                path.unlink(missing_ok=True)
        return dict(zip((uid for uid, _, _ in staged), dest_uids, strict=True))

    def move(self, uids: Iterable[int], dest: Folder) -> dict[int, int]:
        """Copy, then remove the originals (RFC 6851 MOVE); return {source uid: dest uid}."""
        mapping = self.copy(uids, dest)
        if mapping:
            listing = self._listing
            with listing.mutex, listing._locked(exclusive=True):
                listing._refresh_locked(exclusive=True)
                removed = listing.remove(mapping)
                for uid in removed:
                    self._forget(uid)
        return mapping

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold this folder's exclusive lock (the mailbox uses it for DELETE and RENAME)."""
        with self._listing._locked(exclusive=True):
            yield
