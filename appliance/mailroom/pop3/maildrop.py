"""A user's maildrop for one POP3 session: the INBOX folder, locked, as it was at login.

Synchronous (it reads and renames files); the session runs it in worker threads.

- The lock is an flock on ``mailroom-pop3-lock`` in the Maildir root, taken without waiting:
  a second POP3 session of the same user is refused with [IN-USE] (RFC 2449 8.1.2). It is
  released when the session ends, however it ends. IMAP and delivery do not take it.
- The listing is the INBOX as of login (RFC 1939: mail arriving later shows in the next
  session). The unique-id of a message is ``<uidvalidity>.<uid>``, so it stays the same across
  sessions and daemon restarts for as long as the folder keeps its UIDVALIDITY.
- Sizes are octets as sent (CRLF line ends); Maildir files have LF, so computing one means
  reading the file once. They are cached per process by (folder, UIDVALIDITY, UID), since the
  bytes of a message never change under its UID.
- Deleting happens only in commit() (the UPDATE state after QUIT): the messages get \\Deleted
  and are expunged from the folder, so an IMAP client sees them gone.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..store import Folder, Mailbox, Maildir, MessageGone, Mode
from .protocol import wire_size

LOCK_FILE = "mailroom-pop3-lock"
_SIZE_CACHE_MAX = 200_000
_sizes: dict[tuple[str, int, int], int] = {}


class MaildropInUse(Exception):
    """Another POP3 session holds this user's maildrop."""


@dataclass(frozen=True, slots=True)
class Entry:
    uid: int
    size: int  # octets on the wire


@dataclass
class Maildrop:
    path: Path
    entries: list[Entry] = field(default_factory=list)
    uidvalidity: int = 0
    _lock_fd: int | None = None
    _folder: Folder | None = None

    def open(self) -> None:
        """Lock the maildrop and take the listing; raises MaildropInUse."""
        Maildir(self.path).create()
        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise MaildropInUse(str(self.path)) from None
        self._lock_fd = fd
        try:
            folder = Mailbox(self.path).folder("INBOX")
            folder.sync()
            self.uidvalidity = folder.uidvalidity
            self._folder = folder
            key = str(self.path)
            entries = []
            for info in folder.messages():
                size = _sizes.get((key, self.uidvalidity, info.uid))
                if size is None:
                    try:
                        size = wire_size(folder.read(info.uid))
                    except MessageGone:  # expunged by another client since the sync
                        continue
                    if len(_sizes) >= _SIZE_CACHE_MAX:
                        _sizes.clear()
                    _sizes[(key, self.uidvalidity, info.uid)] = size
                entries.append(Entry(info.uid, size))
            self.entries = entries
        except BaseException:
            self.close()
            raise

    @property
    def folder(self) -> Folder:
        assert self._folder is not None, "maildrop not open"
        return self._folder

    def read(self, uid: int) -> bytes:
        """The message's bytes as stored; raises MessageGone if another client expunged it."""
        return self.folder.read(uid)

    def commit(self, deleted: set[int], retrieved: set[int]) -> int:
        """UPDATE state: mark retrieved messages \\Seen, expunge the deleted ones; return how many
        were removed (messages another client removed meanwhile count as removed)."""
        folder = self.folder
        kept = sorted(retrieved - deleted)
        if kept:
            folder.store_flags(kept, ["\\Seen"], Mode.ADD)
        if not deleted:
            return 0
        folder.store_flags(sorted(deleted), ["\\Deleted"], Mode.ADD)
        folder.expunge(deleted)
        present = {info.uid for info in folder.messages()}
        return len(deleted - present)

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None
        self._folder = None
