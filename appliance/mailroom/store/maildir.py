"""Maildir delivery, the durable way.

A message is written to tmp/, fsynced, renamed into new/ and the new/ directory
is fsynced before delivery returns. Only then may the SMTP server answer 250: a
crash at any earlier moment leaves at most a file in tmp/, never a message that
was acknowledged and lost.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from pathlib import Path

from ..config import split_address

_counter = itertools.count()


class DeliveryError(Exception):
    """The message could not be made durable; the caller answers with a temporary failure."""


def _unique_name(size: int) -> str:
    # time.M<usec>P<pid>Q<counter>.<host>,S=<size> — unique per process and
    # host without locking; S= lets readers learn the size without a stat.
    now = time.time()
    seconds = int(now)
    usec = int((now - seconds) * 1_000_000)
    host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")
    return f"{seconds}.M{usec}P{os.getpid()}Q{next(_counter)}.{host},S={size}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Maildir:
    """One Maildir folder: cur/, new/ and tmp/ below a root."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def create(self) -> None:
        """Create the folder if missing; directory entries are made durable too."""
        if (self.path / "new").is_dir():
            return
        missing = [p for p in (self.path, *self.path.parents) if not p.exists()]
        for sub in ("cur", "new", "tmp"):
            (self.path / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        _fsync_dir(self.path)
        for created in missing:
            _fsync_dir(created.parent)

    def deliver(self, data: bytes) -> str:
        """Store a message in new/ durably; return its file name."""
        self.create()
        name = _unique_name(len(data))
        tmp = self.path / "tmp" / name
        new = self.path / "new" / name
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
            # rename is atomic: readers see the whole message in new/ or nothing.
            os.rename(tmp, new)
            _fsync_dir(new.parent)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise DeliveryError(f"cannot store message in {self.path}: {exc}") from exc
        return name


class MaildirStore:
    """All users' Maildirs below one root: <root>/<domain>/<localpart>/."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def mailbox(self, address: str) -> Maildir:
        localpart, domain = split_address(address.lower())
        # Addresses are validated by the configuration; refuse anything that
        # could still leave the root, as a second line of defence.
        if not localpart or localpart.startswith(".") or "/" in localpart or "/" in domain:
            raise DeliveryError(f"refusing unsafe mailbox name {address!r}")
        return Maildir(self.root / domain / localpart)
