"""One user's Maildir++ tree as IMAP sees it: INBOX is the root, other folders are '.Name' dirs.

The hierarchy separator is '.', as in Maildir++: folder 'Lists.python' is the directory
'.Lists.python'. Directory names hold the modified UTF-7 form of the name (names.py); the API
takes and returns Unicode names. Subscriptions are in 'subscriptions', one modified UTF-7 name
per line (the Courier layout, which Dovecot reads too).

Changes to the tree (create, delete, rename, subscriptions) hold an exclusive flock on
'mailroom-mailbox-lock', and then, where they touch an existing folder, that folder's own lock.
That order (mailbox lock, then folder locks) is the only one in which two locks are held, so
it cannot deadlock with folder operations, which never take the mailbox lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..fsutil import fsync_dir, replace_synced
from .errors import FolderExists, FolderGone, InvalidFolderName, NoSuchFolder
from .folder import STATE_FILE, Folder, init_folder_dir, new_uidvalidity
from .maildir import Maildir
from .names import INBOX, SEPARATOR, decode, directory_name, encode, from_directory, normalize, parent_names

SPECIAL_USE = {
    "Sent": "\\Sent",
    "Drafts": "\\Drafts",
    "Trash": "\\Trash",
    "Junk": "\\Junk",
    "Archive": "\\Archive",
}
SUBSCRIPTIONS_FILE = "subscriptions"
MAILBOX_FILE = "mailroom-mailbox"
MAILBOX_LOCK = "mailroom-mailbox-lock"


def _set_up(root: Path) -> bool:
    """Whether the mailbox's first open (special folders, INBOX's state) has been made."""
    return (root / MAILBOX_FILE).exists() and (root / STATE_FILE).exists()


@dataclass(frozen=True, slots=True)
class FolderInfo:
    """A LIST entry: attributes are \\Noselect, \\HasChildren / \\HasNoChildren; special_use
    is '\\Sent' etc. or None."""

    name: str
    attributes: frozenset[str]
    special_use: str | None


class Mailbox:
    """The folders of one user. Opening it creates INBOX and, the first time, the special folders."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        Maildir(self.root).create()
        if not _set_up(self.root):
            with self._locked():
                self._first_open()

    @classmethod
    def if_set_up(cls, root: Path) -> Mailbox | None:
        """The Mailbox if it exists with what its first open writes, else None: opening it then
        writes nothing of its own (for a look before its owner has logged in)."""
        root = Path(root)
        if not (root / "new").is_dir() or not _set_up(root):
            return None
        return cls(root)

    # ----------------------------------------------------------------- folders

    def folder(self, name: str) -> Folder:
        """The Folder of an existing, selectable name (raises NoSuchFolder)."""
        folder = Folder(self._path(normalize(name)))
        try:
            folder.attach()  # one stat of cur/ tells both that it exists and which it is
        except FolderGone:
            raise NoSuchFolder(f"no folder {name!r}") from None
        return folder

    def exists(self, name: str) -> bool:
        return (self._path(normalize(name)) / "cur").is_dir()

    def folders(self) -> list[FolderInfo]:
        """Every folder, INBOX first, plus implied parents (\\Noselect) of nested names."""
        real = {INBOX}
        with os.scandir(self.root) as entries:
            for entry in entries:
                name = from_directory(entry.name)
                if name is not None and entry.is_dir() and os.path.isdir(os.path.join(entry.path, "cur")):
                    real.add(name)
        implied = {parent for name in real for parent in parent_names(name)} - real
        everything = real | implied
        parents = {parent for name in everything for parent in parent_names(name)}
        result = []
        for name in sorted(everything, key=lambda n: (n != INBOX, n)):
            attributes = {"\\HasChildren" if name in parents else "\\HasNoChildren"}
            if name in implied:
                attributes.add("\\Noselect")
            result.append(FolderInfo(name, frozenset(attributes), SPECIAL_USE.get(name)))
        return result

    def special_use(self, name: str) -> str | None:
        return SPECIAL_USE.get(normalize(name))

    def create(self, name: str) -> Folder:
        """CREATE: also creates missing superior names (RFC 3501 SHOULD)."""
        canonical = normalize(name)
        if canonical == INBOX:
            raise FolderExists("INBOX always exists")
        with self._locked():
            if self.exists(canonical):
                raise FolderExists(f"folder {canonical!r} exists")
            for parent in parent_names(canonical):
                if not self.exists(parent):
                    self._create_locked(parent)
            self._create_locked(canonical)
        return Folder(self._path(canonical))

    def delete(self, name: str) -> None:
        """DELETE (RFC 3501 6.3.4): never INBOX; children stay (the name becomes \\Noselect);
        a \\Noselect name that still has children cannot be deleted."""
        canonical = normalize(name)
        if canonical == INBOX:
            raise InvalidFolderName("INBOX cannot be deleted")
        with self._locked():
            path = self._path(canonical)
            if not (path / "cur").is_dir():
                raise NoSuchFolder(f"no folder {canonical!r}")
            trash = self._scratch("delete")
            with Folder(path).locked():
                os.rename(path, trash)
            fsync_dir(self.root)
            shutil.rmtree(trash, ignore_errors=True)

    def rename(self, old: str, new: str) -> Folder:
        """RENAME (RFC 3501 6.3.5): children move along; renaming INBOX moves its messages
        into a new folder and leaves INBOX (and INBOX's children) in place, empty."""
        source, target = normalize(old), normalize(new)
        if target == INBOX:
            raise FolderExists("INBOX always exists")
        if target == source or target.startswith(source + SEPARATOR):
            raise InvalidFolderName(f"cannot rename {source!r} into itself")
        with self._locked():
            if self.exists(target):
                raise FolderExists(f"folder {target!r} exists")
            if source == INBOX:
                return self._rename_inbox(target)
            moves = [
                (dir_name, directory_name(target + folder_name[len(source) :]))
                for dir_name, folder_name in self._tree(source)
            ]
            if not moves:
                raise NoSuchFolder(f"no folder {source!r}")
            for _, new_dir in moves:
                if (self.root / new_dir).exists():
                    raise FolderExists(f"folder {from_directory(new_dir)!r} exists")
            for parent in parent_names(target):
                if not self.exists(parent):
                    self._create_locked(parent)
            with contextlib.ExitStack() as stack:
                for old_dir, _ in moves:
                    if (self.root / old_dir / "cur").is_dir():
                        stack.enter_context(Folder(self.root / old_dir).locked())
                for old_dir, new_dir in moves:
                    os.rename(self.root / old_dir, self.root / new_dir)
            fsync_dir(self.root)
        return Folder(self._path(target))

    # ----------------------------------------------------------------- subscriptions

    def subscriptions(self) -> list[str]:
        try:
            raw = (self.root / SUBSCRIPTIONS_FILE).read_text("ascii", errors="replace")
        except FileNotFoundError:
            return []
        names = []
        for line in raw.splitlines():
            try:
                name = normalize(decode(line.strip()))
            except InvalidFolderName:
                continue  # foreign or damaged line: ignore, keep the rest
            if name not in names:
                names.append(name)
        return names

    def subscribe(self, name: str) -> None:
        """SUBSCRIBE: the name need not exist (RFC 3501 allows subscribing to any valid name)."""
        canonical = normalize(name)
        with self._locked():
            names = self.subscriptions()
            if canonical not in names:
                self._write_subscriptions([*names, canonical])

    def unsubscribe(self, name: str) -> None:
        canonical = normalize(name)
        with self._locked():
            names = self.subscriptions()
            if canonical in names:
                self._write_subscriptions([n for n in names if n != canonical])

    # ----------------------------------------------------------------- internals

    def _path(self, canonical: str) -> Path:
        return self.root if canonical == INBOX else self.root / directory_name(canonical)

    def _tree(self, name: str) -> list[tuple[str, str]]:
        """(directory, folder name) of name and every name below it that has a directory."""
        found = []
        with os.scandir(self.root) as entries:
            for entry in entries:
                folder_name = from_directory(entry.name)
                if folder_name is None or not entry.is_dir():
                    continue
                if folder_name == name or folder_name.startswith(name + SEPARATOR):
                    found.append((entry.name, folder_name))
        return sorted(found)

    def _first_open(self) -> None:
        Folder(self.root).sync()  # INBOX gets its state (and UIDs for mail already delivered)
        if (self.root / MAILBOX_FILE).exists():
            return
        for name in SPECIAL_USE:
            if not self.exists(name):
                self._create_locked(name)
        names = self.subscriptions()
        self._write_subscriptions(names + [n for n in SPECIAL_USE if n not in names])
        self._write_mailbox_file(self._last_uidvalidity())

    def _create_locked(self, canonical: str) -> None:
        uidvalidity = max(new_uidvalidity(), self._last_uidvalidity() + 1)
        scratch = self._scratch("create")
        try:
            init_folder_dir(scratch, uidvalidity)
            os.rename(scratch, self._path(canonical))
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        fsync_dir(self.root)
        self._write_mailbox_file(uidvalidity)

    def _rename_inbox(self, target: str) -> Folder:
        for parent in parent_names(target):
            if not self.exists(parent):
                self._create_locked(parent)
        self._create_locked(target)
        inbox, dest = Folder(self.root), Folder(self._path(target))
        inbox.sync()
        inbox.move([info.uid for info in inbox.messages()], dest)
        return dest

    def _scratch(self, purpose: str) -> Path:
        # In INBOX's tmp/: same file system (rename works), invisible to folder listings.
        return self.root / "tmp" / f"mailroom-{purpose}-{uuid.uuid4().hex}"

    def _last_uidvalidity(self) -> int:
        try:
            lines = (self.root / MAILBOX_FILE).read_text("ascii").splitlines()
            fields = dict(line.split("=", 1) for line in lines if "=" in line)
            return int(fields.get("last_uidvalidity", "0"))
        except (FileNotFoundError, ValueError, UnicodeDecodeError):
            return 0

    def _write_mailbox_file(self, last_uidvalidity: int) -> None:
        value = max(last_uidvalidity, self._last_uidvalidity())
        replace_synced(self.root / MAILBOX_FILE, f"last_uidvalidity={value}\n".encode("ascii"))

    def _write_subscriptions(self, names: list[str]) -> None:
        text = "".join(encode(name) + "\n" for name in names)
        replace_synced(self.root / SUBSCRIPTIONS_FILE, text.encode("ascii"))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.root / MAILBOX_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
