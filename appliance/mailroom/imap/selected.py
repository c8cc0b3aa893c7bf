"""The selected mailbox of one IMAP session: message sequence numbers and what to tell the client.

The store (`store.Folder`) knows UIDs, flags and modseqs; a session also needs the numbering it
has announced: message sequence numbers are positions in `uids`, which changes only when the
session reports a change (EXISTS for new mail, EXPUNGE or VANISHED for removals). Between
reports, messages expunged by others keep their numbers (RFC 3501 5.5, 7.4.1: no EXPUNGE during
FETCH, STORE or SEARCH); reading them then fails with [EXPUNGEISSUED].

Synchronous: the session calls it in a worker thread, but for `quiet` and `reopened_quietly`,
which never wait and are meant for the event loop.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterable, Sequence
from operator import attrgetter

from ..store import Folder, MessageInfo
from ..store.folder import MAX_KEYWORDS
from .protocol import SequenceSet
from .protocol import responses as r

_UID = attrgetter("uid")
SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
# The FLAGS and PERMANENTFLAGS lines of each (read-only, keywords...) seen, as sent at every
# SELECT. Bounded: keywords are the folder's own, but folders are many.
_ANNOUNCEMENTS: dict[tuple[bool | str, ...], bytes] = {}
_ANNOUNCEMENTS_MAX = 1024


class Selected:
    def __init__(self, folder: Folder, name: str, *, readonly: bool) -> None:
        self.folder = folder
        self.name = name
        self.readonly = readonly
        self.uids = array("I")
        self._shared_uids: array | None = None  # uids while the folder shares it: copy to change
        self.pending_expunge: set[int] = set()  # expunged elsewhere, not yet reported
        self.saved: list[int] | None = None  # SEARCHRES `$`, as UIDs (RFC 5182)
        self.keywords: list[str] = []  # as last announced in FLAGS

    def open(self) -> None:
        self.folder.sync(list_first=False)
        self.uids = self._shared_uids = self.folder.known_uids()
        self.keywords = self.folder.keywords_as_synced()

    @classmethod
    def reopened_quietly(
        cls, folder: Folder, name: str, *, readonly: bool
    ) -> tuple[Selected, int | None, tuple[int, int, int]] | None:
        """A reselect of the folder the session had selected, made on the event loop: (the new
        selection, its first unseen number, the folder's state), as open() in a worker thread
        would make them, if nothing changed since the folder's last sync (Folder.quiet); else
        None. Clients reselect all day; the worker-thread trip would be most of the time."""
        quiet = folder.reopened_quietly()
        if quiet is None:
            return None
        state, keywords, first_unseen = quiet
        selected = cls(folder, name, readonly=readonly)
        selected.uids = selected._shared_uids = folder.known_uids()
        selected.keywords = keywords
        return selected, None if first_unseen is None else selected.seq_of(first_unseen), state

    def flags_announcement(self) -> bytes:
        """FLAGS and PERMANENTFLAGS: at SELECT, and again whenever a keyword is defined."""
        key = (self.readonly, *self.keywords)
        announced = _ANNOUNCEMENTS.get(key)
        if announced is None:
            defined = [*SYSTEM_FLAGS, *self.keywords]
            permanent = [] if self.readonly else list(defined)
            if not self.readonly and len(self.keywords) < MAX_KEYWORDS:
                permanent.append("\\*")
            code = r.code("PERMANENTFLAGS", [r.Atom(f) for f in permanent])
            announced = r.flags(defined) + r.untagged_status("OK", "Flags permitted", code)
            if len(_ANNOUNCEMENTS) < _ANNOUNCEMENTS_MAX:
                _ANNOUNCEMENTS[key] = announced
        return announced

    def keyword_update(self, *, synced: bool = False) -> bytes:
        """A new FLAGS response if the folder's keywords changed (RFC 3501 7.2.6: the client
        records it; a FETCH naming a keyword it has not seen in FLAGS confuses some clients).
        synced: the folder was just synced, so its keywords need no second look at the disk."""
        keywords = self.folder.keywords_as_synced() if synced else self.folder.keywords
        if keywords == self.keywords:
            return b""
        self.keywords = keywords
        return self.flags_announcement()

    # ----------------------------------------------------------------- numbering

    @property
    def exists(self) -> int:
        return len(self.uids)

    def seq_of(self, uid: int) -> int | None:
        at = bisect.bisect_left(self.uids, uid)
        return at + 1 if at < len(self.uids) and self.uids[at] == uid else None

    def resolve(self, sequence: SequenceSet, *, uid: bool) -> list[tuple[int, int]]:
        """(seq, uid) pairs of a sequence set, ascending and without duplicates.

        Sequence numbers beyond EXISTS are an error the caller checks with `out_of_range`;
        UIDs that do not exist are left out (RFC 3501 6.4.8). `$` is the saved search result.
        """
        uids = self.uids
        if sequence.saved:
            wanted = set(self.saved or ())
            return [(i + 1, u) for i, u in enumerate(uids) if u in wanted]
        pairs: list[tuple[int, int]] = []
        for start, stop in self._spans(sequence, uid=uid):
            pairs.extend(zip(range(start + 1, stop + 1), uids[start:stop], strict=True))
        return pairs

    def runs(
        self, sequence: SequenceSet, *, uid: bool, size: int
    ) -> list[tuple[Sequence[int], Sequence[int]]]:
        """resolve() in runs of at most `size` messages, each as (seqs, uids): a range and a slice
        of the UID array rather than a tuple per message. `UID FETCH 1:* (FLAGS)` on 100,000
        messages would otherwise make 100,000 tuples, which is memory written (and caches
        emptied) for nothing."""
        if sequence.saved:
            pairs = self.resolve(sequence, uid=uid)
            chunks = (pairs[at : at + size] for at in range(0, len(pairs), size))
            return [([s for s, _ in chunk], [u for _, u in chunk]) for chunk in chunks]
        uids = self.uids
        return [
            (range(lo + 1, min(lo + size, stop) + 1), uids[lo : min(lo + size, stop)])
            for start, stop in self._spans(sequence, uid=uid)
            for lo in range(start, stop, size)
        ]

    def _spans(self, sequence: SequenceSet, *, uid: bool) -> list[tuple[int, int]]:
        """The positions in uids of a sequence set (not `$`) as ascending, disjoint [start, stop)."""
        uids = self.uids
        if not uids:
            return []
        # Each range is a span of positions in uids; overlapping spans are merged, so `1:*` on a
        # big mailbox costs one slice rather than a set and a sort of every position.
        spans: list[tuple[int, int]] = []
        if uid:
            largest = uids[-1]
            for a, b in sequence.ranges:
                lo, hi = (largest if a is None else a), (largest if b is None else b)
                lo, hi = min(lo, hi), max(lo, hi)
                spans.append((bisect.bisect_left(uids, lo), bisect.bisect_right(uids, hi)))
        else:
            largest = len(uids)
            for a, b in sequence.ranges:
                lo, hi = (largest if a is None else a), (largest if b is None else b)
                lo, hi = min(lo, hi), max(lo, hi)
                spans.append((max(lo, 1) - 1, min(hi, largest)))
        merged: list[tuple[int, int]] = []
        done = 0  # positions below this are already in merged
        for first, stop in sorted(spans):
            start = max(first, done)
            if start < stop:
                merged.append((start, stop))
                done = stop
        return merged

    def out_of_range(self, sequence: SequenceSet) -> bool:
        """A message sequence number above EXISTS (RFC 3501 9: an invalid number is an error).

        A range with `*` is never out of range: `1:*` in an empty mailbox selects nothing, as
        clients that fetch flags right after SELECT expect."""
        if sequence.saved:
            return False
        largest = len(self.uids)
        return any(a is not None and b is not None and max(a, b) > largest for a, b in sequence.ranges)

    def info(self, uid: int) -> MessageInfo | None:
        if uid in self.pending_expunge:
            return None
        try:
            return self.folder.message(uid)
        except LookupError:
            return None

    def first_unseen(self) -> int | None:
        """The sequence number of the first message without \\Seen (SELECT's [UNSEEN n])."""
        uid = self.folder.first_uid_without(
            "\\Seen", skip=lambda u: u in self.pending_expunge or self.seq_of(u) is None
        )
        return None if uid is None else self.seq_of(uid)

    def infos(self) -> list[tuple[int, MessageInfo]]:
        """(seq, info) of every message the client knows, except those already gone."""
        messages = self.folder.messages()  # ascending UIDs, as self.uids
        if len(messages) == len(self.uids) and array("I", map(_UID, messages)) == self.uids:
            return list(zip(range(1, len(messages) + 1), messages, strict=True))  # the usual case
        by_uid = {info.uid: info for info in messages}
        return [(i + 1, by_uid[u]) for i, u in enumerate(self.uids) if u in by_uid]

    # ----------------------------------------------------------------- changes

    def quiet(self, *, expunge: bool) -> bool:
        """Whether updates() would return nothing: known on the event loop (Folder.quiet)."""
        return not (expunge and self.pending_expunge) and self.folder.quiet(self.keywords)

    def updates(self, *, expunge: bool, condstore: bool, qresync: bool) -> bytes:
        """Untagged responses for what changed since the last call (and our own expunges)."""
        result = self.folder.sync()
        out = bytearray(self.keyword_update(synced=True))
        self.pending_expunge.update(result.expunged_uids)
        if expunge and self.pending_expunge:
            out += self.forget(self.pending_expunge, qresync=qresync)
        if result.new_uids:
            uids = self._own_uids()
            for uid in result.new_uids:
                if not uids or uid > uids[-1]:
                    uids.append(uid)
                elif self.seq_of(uid) is None:
                    uids.insert(bisect.bisect_left(uids, uid), uid)
            out += r.exists(len(self.uids))
        for uid, (flags, modseq) in sorted(result.flag_changes.items()):
            seq = self.seq_of(uid)
            if seq is None or uid in self.pending_expunge:
                continue
            out += self.flags_response(seq, uid, flags, modseq, condstore=condstore, with_uid=qresync)
        return bytes(out)

    def forget(self, uids: Iterable[int], *, qresync: bool) -> bytes:
        """Report removed messages: VANISHED after ENABLE QRESYNC, else EXPUNGE by number."""
        gone = sorted({u for u in uids if self.seq_of(u) is not None})
        self.pending_expunge.difference_update(uids)
        if not gone:
            return b""
        if qresync:
            keep = set(gone)
            self.uids = array("I", (u for u in self.uids if u not in keep))
            return r.vanished(gone)
        out = bytearray()
        for uid in reversed(gone):  # highest first: the numbers of the others stay valid
            seq = self.seq_of(uid)
            assert seq is not None
            del self._own_uids()[seq - 1]
            out += r.expunge(seq)
        return bytes(out)

    def _own_uids(self) -> array:
        """uids, to be changed in place: copied first if the folder still shares it."""
        if self.uids is self._shared_uids:
            self.uids = array("I", self.uids)
            self._shared_uids = None
        return self.uids

    @staticmethod
    def flags_response(
        seq: int, uid: int, flags: frozenset[str], modseq: int, *, condstore: bool, with_uid: bool
    ) -> bytes:
        items: list[tuple[str, object]] = []
        if with_uid:
            items.append(("UID", uid))
        items.append(("FLAGS", [r.Atom(f) for f in sorted(flags)]))
        if condstore:
            items.append(("MODSEQ", [modseq]))
        return r.fetch(seq, items)
