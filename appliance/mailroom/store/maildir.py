"""Maildir delivery, the durable way.

A message is written to tmp/, fsynced, renamed into new/ and the new/ directory
is fsynced before delivery returns (one directory fsync for all the messages
arriving at the same time: group commit). Only then may the SMTP server answer 250: a
crash at any earlier moment leaves at most a file in tmp/, never a message that
was acknowledged and lost.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import socket
import time
from pathlib import Path

from ..config import split_address
from ..fsutil import fsync_dir, group_sync, write_synced

_counter = itertools.count()


class DeliveryError(Exception):
    """The message could not be made durable; the caller answers with a temporary failure."""


def wire_size(data: bytes) -> int:
    """The size with CRLF line ends, as IMAP (RFC822.SIZE) and POP3 count it."""
    return len(data) + data.count(b"\n") - data.count(b"\r\n")


def unique_name(size: int, wire: int) -> str:
    # time.M<usec>P<pid>Q<counter>.<host>,S=<size>,W=<wire size> — unique per process and
    # host without locking; S= and W= (the Dovecot fields) give the sizes without a stat.
    now = time.time()
    seconds = int(now)
    usec = int((now - seconds) * 1_000_000)
    return f"{seconds}.M{usec}P{os.getpid()}Q{next(_counter)}.{_host()},S={size},W={wire}"


@functools.cache
def _host() -> str:
    """The host name as Maildir names carry it (asked once: a uname() per message otherwise)."""
    return socket.gethostname().replace("/", "\\057").replace(":", "\\072").replace(",", "\\054")


class Maildir:
    """One Maildir folder: cur/, new/ and tmp/ below a root."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._new = path / "new"
        self._tmp_path, self._new_path = str(path / "tmp"), str(self._new)
        self._exists = False  # seen complete once; a delivery that finds it gone looks again

    def create(self) -> None:
        """Create the folder if missing; directory entries are made durable too."""
        if self._new.is_dir():
            self._exists = True
            return
        missing = [p for p in (self.path, *self.path.parents) if not p.exists()]
        # new/ last: other threads take its existence to mean the folder is complete.
        for sub in ("cur", "tmp", "new"):
            (self.path / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        fsync_dir(self.path)
        for created in missing:
            fsync_dir(created.parent)

    def deliver(self, data: bytes) -> str:
        """Store a message in new/ durably; return its file name."""
        if not self._exists:
            self.create()
        name = unique_name(len(data), wire_size(data))
        tmp = os.path.join(self._tmp_path, name)
        try:
            try:
                write_synced(tmp, data)
            except FileNotFoundError:  # the folder was removed since we last saw it
                self.create()
                write_synced(tmp, data)
            # rename is atomic: readers see the whole message in new/ or nothing.
            os.rename(tmp, os.path.join(self._new_path, name))
            # One fsync of new/ serves all the messages renamed into it meanwhile.
            group_sync(self._new)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise DeliveryError(f"cannot store message in {self.path}: {exc}") from exc
        return name

    def usage(self) -> int:
        """Bytes of mail in this Maildir and its Maildir++ folders (from the S= in file names).

        Listing every file is O(messages); the total is kept per process and
        recounted only when a new/ or cur/ directory changed (its mtime), which
        any delivery, flag change or expunge does.
        """
        subdirs = [
            folder / sub
            for folder in (self.path, *(p for p in self.path.glob(".*") if p.is_dir()))
            for sub in ("new", "cur")
        ]
        signature = []
        for subdir in subdirs:
            try:
                signature.append((str(subdir), subdir.stat().st_mtime_ns))
            except FileNotFoundError:
                continue
        key = tuple(signature)
        cached = _usage_cache.get(self.path)
        if cached and cached[0] == key:
            return cached[1]
        total = 0
        for subdir, _ in signature:
            try:
                entries = os.scandir(subdir)
            except FileNotFoundError:
                continue
            with entries:
                for entry in entries:
                    total += _size_of(entry)
        _usage_cache[self.path] = (key, total)
        return total


_usage_cache: dict[Path, tuple[tuple[tuple[str, int], ...], int]] = {}


def _size_of(entry: os.DirEntry[str]) -> int:
    marker = entry.name.find(",S=")
    if marker != -1:
        digits = entry.name[marker + 3 :].split(",", 1)[0].split(":", 1)[0]
        if digits.isdigit():
            return int(digits)
    try:
        return entry.stat().st_size
    except FileNotFoundError:  # expunged meanwhile
        return 0


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
