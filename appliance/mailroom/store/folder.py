"""One Maildir folder with the state IMAP needs: UIDs, flags, MODSEQ, kept in the Maildir itself.

File names
    Delivery (smtpd) writes ``new/<base>`` and never locks. The first sync that sees a message
    moves it to ``cur/<base>,U=<uid>,M=<modseq>:2,<flags>``. ``<base>`` keeps whatever the writer
    put there, including ``,S=<size>``; U= and M= are the only fields we add. ``<flags>`` are the
    Maildir info letters in ASCII order: D=\\Draft F=\\Flagged R=\\Answered S=\\Seen T=\\Deleted,
    other capitals (P "passed") are kept as they are, and a-z are keywords (see below). A file
    without M= has modseq 1. Every flag change renames the file anyway, so the per-message
    MODSEQ costs nothing extra to store there.

    Because UIDs, flags and modseqs are in the names, a restored copy of the Maildir (borg copies
    files) has the exact IMAP state, and any other Maildir tool keeps working on it.

Per-folder files
    ``mailroom-state``        uidvalidity, uidnext, highestmodseq (key=value lines). Written
                              atomically: tmp + fsync + rename + fsync of the folder directory.
    ``mailroom-uidvalidity``  the UIDVALIDITY once more, written once and never rewritten. This is
                              an addition to the plan: with only the state file, losing it would
                              force a new UIDVALIDITY even though every message still has its U=
                              (the UIDs mean nothing without their UIDVALIDITY). With a second copy
                              that is never rewritten (so never torn by a crash during a rewrite)
                              the rebuild keeps UIDVALIDITY and UIDs, and clients keep their caches.
    ``mailroom-keywords``     keyword letters, "<index> <keyword>" per line, index 0 = 'a' (the
                              layout Dovecot uses for dovecot-keywords). At most 26 per folder.
    ``mailroom-lock``         the lock file (see Locking).

Rebuild
    Missing or corrupt state: UIDNEXT = max(U)+1 and HIGHESTMODSEQ = max(M)+1 from the names,
    UIDVALIDITY from mailroom-uidvalidity; a new UIDVALIDITY only when that is lost too (then
    every client drops its cache, so keeping the old U= values is harmless). Also on every rescan
    the state is healed upwards if names carry a higher U or M than it says (a crash between the
    renames and the state write, or a restore whose state file is older than some messages), and
    duplicate U= values (a file copied by hand) get a fresh UID for all but one of them.

Durability
    A message and its UID are on disk before anyone is told about them: new files, the renames
    that give UIDs, expunges and the state file that records UIDNEXT are fsynced. Flag changes
    are not (Dovecot does not fsync them either): after a crash the last flag changes may be
    gone, and a state file older than the names is healed from them (see Rebuild).

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
import itertools
import os
import re
import shutil
import socket
import threading
import time
import weakref
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from operator import attrgetter
from pathlib import Path
from typing import BinaryIO

from ..fsutil import fsync_dir, write_synced
from .errors import FolderGone, InvalidFlag, MessageGone, TooManyKeywords
from .maildir import wire_size

STATE_FILE = "mailroom-state"
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

_counter = itertools.count()
_UID = attrgetter("uid")
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


def _unique_base(size: int, wire: int) -> str:
    now = time.time()
    seconds = int(now)
    usec = int((now - seconds) * 1_000_000)
    host = socket.gethostname().replace("/", "\\057").replace(":", "\\072").replace(",", "\\054")
    return f"{seconds}.M{usec}P{os.getpid()}Q{next(_counter)}.{host},S={size},W={wire}"


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


def _read_bytes(path: Path) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read(4096)
    except FileNotFoundError:
        return None


def _replace_synced(path: Path, data: bytes) -> None:
    """Atomically replace path with data: tmp + fsync + rename + fsync of the directory."""
    tmp = path.with_name(f"{path.name}.tmp")
    tmp.unlink(missing_ok=True)  # left by a crash; we hold the folder lock
    write_synced(tmp, data)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def new_uidvalidity() -> int:
    return int(time.time())


def init_folder_dir(path: Path, uidvalidity: int) -> None:
    """Lay out an empty folder (cur/ new/ tmp/ and its state) in a directory nobody else sees yet."""
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
    write_synced(path / UIDVALIDITY_FILE, f"{uidvalidity}\n".encode("ascii"))
    write_synced(path / STATE_FILE, _State(uidvalidity, 1, 1).dump())
    fsync_dir(path)


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
    try:
        cur = os.stat(path / "cur")
    except FileNotFoundError as exc:
        raise FolderGone(f"folder {path} does not exist") from exc
    key = (os.path.abspath(path), cur.st_dev, cur.st_ino)
    with _registry.lock:
        listing = _registry.listings.get(key)
        if listing is None:
            listing = _registry.listings[key] = _Listing(path, (cur.st_dev, cur.st_ino))
        _registry.keep(key, listing)
        return listing


class _Listing:
    """What one process knows about one folder: the scan of cur/, the state, the keywords.

    Shared by every Folder object of the process for that folder, so that many sessions on one
    big folder hold its listing once (about 35 MB per 100,000 messages). Changes are appended
    to a log of UIDs (version = number of changes so far) from which each Folder derives its
    SyncResult. All access holds mutex.
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
        self._by_name: dict[str, MessageInfo] = {}
        self._by_uid: dict[int, MessageInfo] = {}
        self._sorted: list[MessageInfo] | None = None
        self._uids: tuple[int, array] | None = None  # (version, sorted UIDs) for first syncs
        self._state_path = str(self.path / STATE_FILE)
        self._cur_path = str(self.path / "cur")
        self._new_path = str(self.path / "new")
        self._new_empty_at: int | None = None  # mtime of new/ when we last found it empty
        self._keywords: list[str] = []
        self._flagsets: dict[str, frozenset[str]] = {}

    def contains(self, uid: int) -> bool:
        return uid in self._by_uid

    def get(self, uid: int) -> MessageInfo | None:
        return self._by_uid.get(uid)

    def store_flags(
        self, uids: Iterable[int], flags: Iterable[str], mode: Mode
    ) -> tuple[dict[int, tuple[frozenset[str], int]], list[MessageInfo]]:
        wanted = sorted(set(uids))
        result: dict[int, tuple[frozenset[str], int]] = {}
        fresh_infos: list[MessageInfo] = []
        with self.mutex, self._locked(exclusive=True):
            self._refresh_locked(exclusive=True)
            letters = self._letters_for(flags, create=mode is not Mode.REMOVE)
            state = self._state_or_fail()
            modseq = state.highestmodseq + 1
            for uid in wanted:
                info = self._by_uid.get(uid)
                if info is None:
                    continue
                parsed = _Parsed(info.name)
                old = parsed.letters
                if mode is Mode.ADD:
                    new = set(old) | set(letters)
                elif mode is Mode.REMOVE:
                    new = set(old) - set(letters)
                else:  # keep letters we do not manage (P, unknown keywords)
                    new = {c for c in old if not self._managed(c)} | set(letters)
                if new == set(old):
                    result[uid] = (info.flags, info.modseq)
                    continue
                new_letters = "".join(sorted(new))
                name = _cur_name(parsed.base, uid, modseq, new_letters)
                try:
                    os.rename(os.path.join(self._cur_path, info.name), os.path.join(self._cur_path, name))
                except FileNotFoundError:
                    self._forget(info)  # removed by another Maildir tool
                    continue
                fresh = self._remember(name, uid, modseq, new_letters)
                self._add(fresh)
                self._forget(info)
                fresh_infos.append(fresh)
                result[uid] = (fresh.flags, fresh.modseq)
            if fresh_infos:
                # Flag changes are not fsynced (nor are Dovecot's): a crash may lose the last
                # ones, never a message or a UID. A state file older than the names, or torn, is
                # healed from the names on the next scan (see Rebuild).
                self._write_state(_State(state.uidvalidity, state.uidnext, modseq), durable=False)
        return result, fresh_infos

    # ----------------------------------------------------------------- scanning

    def current_state(self) -> _State:
        with self.mutex:
            self._refresh()
            return self._state_or_fail()

    def messages(self) -> list[MessageInfo]:
        with self.mutex:
            if self._snapshot is None:
                self._refresh()
            if self._sorted is None:
                self._sorted = [self._by_uid[uid] for uid in sorted(self._by_uid)]
            return list(self._sorted)

    def uid_array(self) -> array:
        """A new array of all UIDs, ascending (callers own it)."""
        with self.mutex:
            if self._uids is None or self._uids[0] != self.version:
                self._uids = (self.version, array("I", sorted(self._by_uid)))
            return array("I", self._uids[1])

    def message(self, uid: int) -> MessageInfo:
        with self.mutex:
            info = self._by_uid.get(uid)
            if info is None:
                self._refresh()
                info = self._by_uid.get(uid)
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

    def _probe(self) -> tuple[bool, list[str]]:
        """(state file and cur/ unchanged since our last scan, names waiting in new/): no lock.

        new/ is listed unless it was empty at our last look and its mtime has not changed since;
        that mtime is trusted only if it was over a second old when we listed, since directory
        mtimes have the resolution of the kernel's coarse clock (a delivery in the same tick as
        our listing would otherwise go unnoticed). Listing an emptied directory that once held
        many entries is not free (its blocks stay allocated), hence the shortcut.
        """
        cur = self._check_exists()
        same = self._snapshot == (_read_bytes(self._state_path), cur.st_ino, cur.st_mtime_ns)
        try:
            new_mtime = os.stat(self._new_path).st_mtime_ns
        except FileNotFoundError:
            return same, []
        if new_mtime == self._new_empty_at:
            return same, []
        now = time.time_ns()
        arrivals = [n for n in os.listdir(self._new_path) if not n.startswith(".")]
        self._new_empty_at = new_mtime if not arrivals and now - new_mtime > 1_000_000_000 else None
        return same, arrivals

    def _refresh(self, force: bool = False) -> None:
        same, arrivals = self._probe()
        if same and not arrivals and not force:
            return
        if not arrivals:
            with self._locked(exclusive=False):
                if self._refresh_locked(exclusive=False, force=force):
                    return
        with self._locked(exclusive=True):
            self._refresh_locked(exclusive=True, force=force)

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
        raw_state = _read_bytes(self.path / STATE_FILE)
        cur_stat = self._check_exists()
        state = _State.parse(raw_state)
        names = os.listdir(self.path / "cur")
        self._load_keywords()

        seen = set(names)
        for name in [n for n in self._by_name if n not in seen]:
            self._forget(self._by_name[name])
        broken: list[str] = []  # cur/ names without a usable UID
        for name in names:
            if name in self._by_name or name.startswith("."):
                continue
            parsed = _Parsed(name)
            if parsed.uid is None:
                broken.append(name)
                continue
            holder = self._by_uid.get(parsed.uid)
            if holder is not None:  # duplicate U= (a file copied by hand): the lower name keeps it
                if holder.name < name:
                    broken.append(name)
                    continue
                broken.append(holder.name)
                self._forget(holder)
            self._add(self._remember(name, parsed.uid, parsed.modseq, parsed.letters))

        max_uid = max(self._by_uid, default=0)
        max_modseq = max((info.modseq for info in self._by_uid.values()), default=0)
        healthy = state is not None and state.uidnext > max_uid and state.highestmodseq >= max_modseq
        if healthy and not broken and not arrivals:
            self._state = state
            self._snapshot = (raw_state, cur_stat.st_ino, cur_stat.st_mtime_ns)
            return True
        if not exclusive:
            return False

        if state is None:
            state = self._rebuilt_state(max_uid, max_modseq)
        state = _State(
            state.uidvalidity, max(state.uidnext, max_uid + 1), max(state.highestmodseq, max_modseq)
        )
        self._assign(broken, arrivals, state)
        return True

    def _assign(self, broken: list[str], arrivals: list[str], state: _State) -> None:
        """Give UIDs to cur/ names without one and move new/ arrivals into cur/ (LOCK_EX held)."""
        if broken or arrivals:
            uid, modseq = state.uidnext, state.highestmodseq + 1
            moved_from_new = False
            todo = [("cur", n) for n in sorted(broken)]
            todo += [("new", n) for n in sorted(arrivals, key=lambda n: _arrival_key(n, self.path))]
            for sub, name in todo:
                parsed = _Parsed(name)
                target = _cur_name(parsed.base, uid, modseq, parsed.letters)
                try:
                    os.rename(self.path / sub / name, self.path / "cur" / target)
                except FileNotFoundError:
                    continue  # expunged or moved by another Maildir tool
                moved_from_new |= sub == "new"
                self._add(self._remember(target, uid, modseq, parsed.letters))
                uid += 1
            fsync_dir(self.path / "cur")
            if moved_from_new:
                fsync_dir(self.path / "new")
            state = _State(state.uidvalidity, uid, modseq)
        self._write_state(state)

    def _rebuilt_state(self, max_uid: int, max_modseq: int) -> _State:
        uidvalidity = None
        raw = _read_bytes(self.path / UIDVALIDITY_FILE)
        if raw is not None and raw.strip().isdigit() and 0 < int(raw) <= _UID_MAX:
            uidvalidity = int(raw)
        if uidvalidity is None:
            uidvalidity = new_uidvalidity()
            _replace_synced(self.path / UIDVALIDITY_FILE, f"{uidvalidity}\n".encode("ascii"))
        # +1: an expunge after the last flag change bumped it without leaving an M= behind.
        return _State(uidvalidity, max_uid + 1, max_modseq + 1)

    def _write_state(self, state: _State, durable: bool = True) -> None:
        raw = state.dump()
        if durable:
            _replace_synced(self.path / STATE_FILE, raw)
        else:
            tmp = self.path / f"{STATE_FILE}.tmp"
            tmp.write_bytes(raw)
            os.replace(tmp, self.path / STATE_FILE)
        self._state = state
        cur = os.stat(self.path / "cur")
        self._snapshot = (raw, cur.st_ino, cur.st_mtime_ns)

    # ----------------------------------------------------------------- in-memory listing

    def _flagset(self, letters: str) -> frozenset[str]:
        flags = self._flagsets.get(letters)
        if flags is None:
            names = set()
            for c in letters:
                if c in _LETTER_FLAGS:
                    names.add(_LETTER_FLAGS[c])
                elif "a" <= c <= "z" and ord(c) - 97 < len(self._keywords):
                    names.add(self._keywords[ord(c) - 97])
            flags = self._flagsets[letters] = frozenset(names)
        return flags

    def _remember(self, name: str, uid: int, modseq: int, letters: str) -> MessageInfo:
        return MessageInfo(uid, self._flagset(letters), modseq, name, self.path)

    def _add(self, info: MessageInfo) -> None:
        """Add a message, or replace the one with the same UID (flag change)."""
        self._by_name[info.name] = info
        self._by_uid[info.uid] = info
        self._touch(info.uid)
        listing = self._sorted
        if listing is None:
            return
        if not listing or listing[-1].uid < info.uid:
            listing.append(info)
            return
        at = bisect.bisect_left(listing, info.uid, key=_UID)
        if at < len(listing) and listing[at].uid == info.uid:
            listing[at] = info
        else:
            listing.insert(at, info)

    def _forget(self, info: MessageInfo) -> None:
        self._by_name.pop(info.name, None)
        if self._by_uid.get(info.uid) is not info:
            return  # already replaced by a newer name of the same UID
        del self._by_uid[info.uid]
        self._touch(info.uid)
        listing = self._sorted
        if listing is not None:
            at = bisect.bisect_left(listing, info.uid, key=_UID)
            if at < len(listing) and listing[at] is info:
                del listing[at]

    def _touch(self, uid: int) -> None:
        self.log.append(uid)
        self.version += 1
        if len(self.log) > _LOG_MAX:
            self.trim_log(force=True)

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
            self._flagsets.clear()
            # Only messages whose flags read differently now count as changed: a new keyword
            # elsewhere must not make every session report every message of the folder.
            for name, info in list(self._by_name.items()):
                letters = _Parsed(name).letters
                if self._flagset(letters) != info.flags:
                    self._add(self._remember(name, info.uid, info.modseq, letters))

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
            _replace_synced(self.path / KEYWORDS_FILE, text.encode("utf-8"))
            self._keywords = keywords
        return "".join(letters)

    # ----------------------------------------------------------------- adding and removing

    def stage_into(self, uid: int, dest: _Listing) -> tuple[int, Path, frozenset[str]] | None:
        """Link (or copy) one message into dest's tmp/; None if it was expunged meanwhile."""
        for attempt in range(3):
            with self.mutex:
                if attempt or uid not in self._by_uid:
                    self._refresh(force=bool(attempt))
                info = self._by_uid.get(uid)
            if info is None:
                return None
            try:
                size, wire = info.size, info.wire_size
            except MessageGone:
                continue
            target = dest.path / "tmp" / _unique_base(size, wire)
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
                self._add(self._remember(name, uid, modseq, flag_letters))
                uids.append(uid)
                uid += 1
            fsync_dir(self.path / "cur")
            self._write_state(_State(state.uidvalidity, uid, modseq))
            return uids

    def remove(self, doomed: list[MessageInfo]) -> list[int]:
        """Unlink messages (LOCK_EX held); return their UIDs."""
        if not doomed:
            return []
        for info in doomed:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(info.path)
            self._forget(info)
        fsync_dir(self.path / "cur")
        state = self._state_or_fail()
        self._write_state(_State(state.uidvalidity, state.uidnext, state.highestmodseq + 1))
        return sorted(info.uid for info in doomed)

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
    """A Maildir folder as IMAP and POP3 see it. Synchronous; run it in a worker thread.

    One Folder object per session: sync() reports what changed since that object's previous
    sync(). The listing behind it is shared by all Folder objects of the process for the same
    folder; a Folder object costs a sorted array of the UIDs it has reported (4 bytes each).
    A Folder object may be used from several threads.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._shared: _Listing | None = None
        self._known = array("I")  # UIDs reported by sync() and not yet reported expunged, sorted
        self._seen: int | None = None  # the listing's version at our last sync()
        self._seen_modseq = 0
        self._own: dict[int, MessageInfo] = {}  # our own flag changes since the last sync()

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

    @property
    def keywords(self) -> list[str]:
        """Keywords defined in this folder (for the FLAGS response)."""
        listing = self._listing
        with listing.mutex:
            listing._refresh()
            return list(listing._keywords)

    @property
    def can_create_keywords(self) -> bool:
        """False once all 26 keyword letters are used (PERMANENTFLAGS then lacks \\*)."""
        return len(self.keywords) < MAX_KEYWORDS

    def sync(self) -> SyncResult:
        """Pick up new mail and other processes' changes; report them relative to the last sync()."""
        listing = self._listing
        with listing.mutex:
            listing._refresh()
            if self._seen is None or self._seen < listing.log_base:
                result = self._sync_all(listing)
            else:
                touched = sorted(set(listing.log[self._seen - listing.log_base :]))
                new, gone, changed = [], [], {}
                for uid in touched:
                    info, known = listing.get(uid), self._knows(uid)
                    if info is None:
                        if known:
                            gone.append(uid)
                            self._forget(uid)
                    elif not known:
                        new.append(uid)
                        self._learn(uid)
                    elif self._own.get(uid) is not info:
                        changed[uid] = (info.flags, info.modseq)
                result = SyncResult(new, gone, changed)
            self._seen = listing.version
            self._seen_modseq = listing._state_or_fail().highestmodseq
            self._own.clear()
            listing.trim_log()
            return result

    def _sync_all(self, listing: _Listing) -> SyncResult:
        """First sync, or the change log no longer reaches back to our last one: compare all."""
        if not self._known and not self._own:
            # First sync of this object: everything is new. Copies in C, no loop per message
            # (a warm SELECT of 100,000 messages).
            self._known = listing.uid_array()
            return SyncResult(self._known.tolist(), [], {})
        current = listing.messages()
        known = set(self._known)
        new = [info.uid for info in current if info.uid not in known]
        gone = [uid for uid in self._known if not listing.contains(uid)]
        changed = {
            info.uid: (info.flags, info.modseq)
            for info in current
            if info.uid in known and info.modseq > self._seen_modseq and self._own.get(info.uid) is not info
        }
        self._known = array("I", (info.uid for info in current))
        return SyncResult(new, gone, changed)

    def continue_from(self, other: Folder) -> None:
        """Report changes relative to what `other` reported: the same folder under its name
        before a RENAME (the next sync() compares everything, as after a gap in the log)."""
        self._known = array("I", other._known)
        self._seen_modseq = other._seen_modseq

    def _knows(self, uid: int) -> bool:
        at = bisect.bisect_left(self._known, uid)
        return at < len(self._known) and self._known[at] == uid

    def _learn(self, uid: int) -> None:
        if not self._known or self._known[-1] < uid:
            self._known.append(uid)
        else:
            self._known.insert(bisect.bisect_left(self._known, uid), uid)

    def _forget(self, uid: int) -> None:
        at = bisect.bisect_left(self._known, uid)
        if at < len(self._known) and self._known[at] == uid:
            del self._known[at]

    def messages(self) -> list[MessageInfo]:
        """All messages of the folder by ascending UID, as of the last scan by any Folder object
        of this process; may include some that sync() has not reported to this object yet."""
        return self._listing.messages()

    def message(self, uid: int) -> MessageInfo:
        return self._listing.message(uid)

    def open(self, uid: int) -> BinaryIO:
        """Open a message for reading; follows a rename by another process (flag change)."""
        listing = self._listing
        for attempt in range(3):
            info = listing.message(uid)
            try:
                return open(info.path, "rb")  # the caller closes it
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
            result, fresh = listing.store_flags(uids, flags, Mode(mode))
            for info in fresh:
                if self._knows(info.uid):
                    self._own[info.uid] = info
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
            doomed = [
                info
                for info in listing.messages()
                if "\\Deleted" in info.flags and (limit is None or info.uid in limit)
            ]
            removed = listing.remove(doomed)
            for uid in removed:
                self._forget(uid)
            return removed

    def append(self, data: bytes, flags: Iterable[str] = (), internaldate: float | None = None) -> int:
        """Store a message durably (tmp → fsync → rename into cur/ → fsync cur/); return its UID."""
        tmp = self.path / "tmp" / _unique_base(len(data), wire_size(data))
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
                removed = listing.remove([info for uid in mapping if (info := listing.get(uid)) is not None])
                for uid in removed:
                    self._forget(uid)
        return mapping

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold this folder's exclusive lock (the mailbox uses it for DELETE and RENAME)."""
        with self._listing._locked(exclusive=True):
            yield
