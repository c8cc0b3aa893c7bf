"""Wakes IDLE sessions when their folder changes: one cheap check per watched folder, shared.

A change to a Maildir folder always touches one of three things: new/ (delivery by smtpd,
deliveryd or any MDA), cur/ (flag renames, expunges, copies by any Maildir tool) or the
folder's `mailroom-state` (rewritten on every change we make, with a HIGHESTMODSEQ that
grows). A stat of new/ and cur/ and a read of the state, every `interval` seconds, per folder
that at least one session idles on — however many sessions idle there — finds every change
within the interval. Polling instead of inotify keeps it
correct on every file system (including NFS and bind mounts) at a cost that grows with the
number of folders, not of sessions; 1,000 watched folders cost 2,000 stats and 1,000 small
reads per interval. The state is read rather than stat'ed because its name moves between two
inodes (store/statefile.py): two changes within one tick of the file system's clock could
otherwise bring back the very (inode, mtime, size) seen before.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from ..fsutil import read_small
from ..store.folder import STATE_FILE

DEFAULT_INTERVAL = 0.25  # seconds: mail shows up in IDLE well within a second


_DIRS = ("/new", "/cur")
_STATE = "/" + STATE_FILE

Signature = tuple[object, ...]


def signature(path: Path) -> Signature:
    base = os.fspath(path)  # string joins: Path objects cost more than the stats
    out: list[object] = []
    for sub in _DIRS:
        try:
            st = os.stat(base + sub)
        except FileNotFoundError:
            out += (0, 0, 0)
        else:
            out += (st.st_mtime_ns, st.st_ino, st.st_size)
    out.append(read_small(base + _STATE))
    return tuple(out)


class FolderWatcher:
    def __init__(self, interval: float = DEFAULT_INTERVAL) -> None:
        self.interval = interval
        self._watched: dict[Path, tuple[Signature, set[asyncio.Event]]] = {}
        self._task: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def watch(self, path: Path, since: Signature | None = None) -> Iterator[asyncio.Event]:
        """An event set whenever the folder at path changes, for as long as the block runs;
        `since` is the folder's signature() as the caller last read it, if it has one."""
        event = asyncio.Event()
        entry = self._watched.get(path)
        if entry is None:
            entry = self._watched[path] = (signature(path) if since is None else since, set())
        entry[1].add(event)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._poll())
        try:
            yield event
        finally:
            entry = self._watched.get(path)
            if entry is not None:
                entry[1].discard(event)
                if not entry[1]:
                    del self._watched[path]

    async def _poll(self) -> None:
        while self._watched:
            await asyncio.sleep(self.interval)
            for path, (before, events) in list(self._watched.items()):
                now = signature(path)
                if now != before:
                    self._watched[path] = (now, events)
                    for event in events:
                        event.set()

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
