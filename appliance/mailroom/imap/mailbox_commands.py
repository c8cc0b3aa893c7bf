"""IMAP commands of the authenticated state: the folder tree, STATUS, APPEND, SELECT, quotas.

RFC 3501 6.3 with LIST-EXTENDED (RFC 5258), LIST-STATUS (RFC 5819), SPECIAL-USE (RFC 6154),
CONDSTORE/QRESYNC at SELECT (RFC 7162), UIDPLUS's APPENDUID (RFC 4315), MULTIAPPEND (RFC 3502),
APPENDLIMIT (RFC 7889) and QUOTA (RFC 9208). Mixed into `session.Session`.
"""

from __future__ import annotations

import contextlib
import re
from typing import TYPE_CHECKING

from ..store import (
    Folder,
    FolderError,
    FolderExists,
    FolderGone,
    InvalidFlag,
    InvalidFolderName,
    Mailbox,
    NoSuchFolder,
    TooManyKeywords,
)
from ..store.folder import Mode
from ..store.maildir import Maildir
from ..store.names import INBOX, SEPARATOR, normalize, parent_names
from .base import Reply, State
from .base import bad as _bad
from .base import no as _no
from .base import ok as _ok
from .protocol import commands as c
from .protocol import responses as r
from .selected import Selected

if TYPE_CHECKING:
    from .session import Session

STATUS_DEFAULT_UNSEEN = "\\Seen"


def _pattern(reference: str, pattern: str) -> re.Pattern[str]:
    """LIST's reference + pattern as a regex: `*` matches anything, `%` anything but the separator."""
    full = reference + pattern  # RFC 3501 6.3.8 leaves the joining to the server; this is Dovecot's
    out = []
    for ch in full:
        if ch == "*":
            out.append(".*")
        elif ch == "%":
            out.append(f"[^{re.escape(SEPARATOR)}]*")
        else:
            out.append(re.escape(ch))
    text = "".join(out)
    # INBOX is case-insensitive (RFC 3501 5.1): match "inbox" and "InBox.sub" too.
    if full[:5].upper() == INBOX and (len(full) == 5 or full[5] in (SEPARATOR, "*", "%")):
        text = "(?i:INBOX)" + "".join(out[5:])
    return re.compile(text + r"\Z", re.DOTALL)


class MailboxCommands:
    # ----------------------------------------------------------------- helpers

    def _mailbox(self: Session) -> Mailbox:
        assert self.mailbox is not None
        return self.mailbox

    # ----------------------------------------------------------------- NAMESPACE, quotas

    async def do_namespace(self: Session, command: c.Namespace) -> Reply:
        self.write(r.namespace())
        return _ok("NAMESPACE completed")

    async def _quota_response(self: Session) -> bytes:
        assert self.user is not None
        usage = await self.io(Maildir(self._mailbox().root).usage)
        limit = self.user.quota_bytes
        return r.quota("", [("STORAGE", usage // 1024, limit // 1024)]) if limit else b""

    async def do_getquotaroot(self: Session, command: c.GetQuotaRoot) -> Reply:
        assert self.user is not None
        if not await self.io(self._mailbox().exists, command.mailbox):
            return _no("No such folder", b"NONEXISTENT")
        roots = [""] if self.user.quota_bytes else []
        self.write(r.quotaroot(command.mailbox, roots))
        self.write(await self._quota_response())
        return _ok("GETQUOTAROOT completed")

    async def do_getquota(self: Session, command: c.GetQuota) -> Reply:
        assert self.user is not None
        if command.root != "" or not self.user.quota_bytes:
            return _no("No such quota root", b"NONEXISTENT")
        self.write(await self._quota_response())
        return _ok("GETQUOTA completed")

    # ----------------------------------------------------------------- the folder tree

    async def do_create(self: Session, command: c.Create) -> Reply:
        # RFC 3501 6.3.3: a trailing separator only declares that names will be created below;
        # a server that does not need the declaration must ignore it.
        name = command.mailbox[:-1] if command.mailbox.endswith(SEPARATOR) else command.mailbox
        if command.special_use:
            wanted = self._mailbox().special_use(name) if _valid(name) else None
            if any(use != wanted for use in command.special_use):
                return _no("Special-use folders are the standard names (Sent, Drafts, ...)", b"USEATTR")
        try:
            await self.io(self._mailbox().create, name)
        except FolderExists:
            return _no("Folder exists", b"ALREADYEXISTS")
        except InvalidFolderName as exc:
            return _no(f"Invalid folder name: {exc}", b"CANNOT")
        return _ok("CREATE completed")

    async def do_delete(self: Session, command: c.Delete) -> Reply:
        if self.selected is not None and _same(self.selected.name, command.mailbox):
            return _no("Cannot delete the selected folder; select another first", b"INUSE")
        try:
            await self.io(self._mailbox().delete, command.mailbox)
        except NoSuchFolder:
            return _no("No such folder", b"NONEXISTENT")
        except InvalidFolderName as exc:
            return _no(str(exc), b"CANNOT")
        return _ok("DELETE completed")

    async def do_rename(self: Session, command: c.Rename) -> Reply:
        try:
            renamed = await self.io(self._mailbox().rename, command.mailbox, command.new_name)
        except NoSuchFolder:
            return _no("No such folder", b"NONEXISTENT")
        except FolderExists:
            return _no("Target folder exists", b"ALREADYEXISTS")
        except InvalidFolderName as exc:
            return _no(str(exc), b"CANNOT")
        selected = self.selected
        if selected and _same(selected.name, command.mailbox) and not _same(command.mailbox, INBOX):
            # The selected folder moved, UIDs and UIDVALIDITY with it: the session follows it.
            renamed.continue_from(selected.folder)
            selected.folder, selected.name = renamed, command.new_name
        return _ok("RENAME completed")

    async def do_subscribe(self: Session, command: c.Subscribe) -> Reply:
        try:
            await self.io(self._mailbox().subscribe, command.mailbox)
        except InvalidFolderName as exc:
            return _no(str(exc), b"CANNOT")
        return _ok("SUBSCRIBE completed")

    async def do_unsubscribe(self: Session, command: c.Unsubscribe) -> Reply:
        try:
            await self.io(self._mailbox().unsubscribe, command.mailbox)
        except InvalidFolderName as exc:
            return _no(str(exc), b"CANNOT")
        return _ok("UNSUBSCRIBE completed")

    async def do_list(self: Session, command: c.List) -> Reply:
        if command.patterns == ("",) and command.select_options is None:
            # RFC 3501 6.3.8: the hierarchy delimiter and the root name.
            self.write(r.list_response("", ["\\Noselect"]))
            return _ok("LIST completed")
        select = {o.upper() for o in command.select_options or ()}
        returns = {o.upper() for o in command.return_options or ()}
        subscribed_only = "SUBSCRIBED" in select
        want_subscribed = subscribed_only or "SUBSCRIBED" in returns
        special_only = "SPECIAL-USE" in select
        recursive = "RECURSIVEMATCH" in select
        mailbox = self._mailbox()
        folders = await self.io(mailbox.folders)
        subscriptions = set(await self.io(mailbox.subscriptions)) if want_subscribed else set()
        patterns = [_pattern(command.reference, p) for p in command.patterns]
        by_name = {f.name: f for f in folders}
        names = list(by_name)
        # RFC 5258 3.5: with RECURSIVEMATCH a name is also listed when a name below it is
        # subscribed, with CHILDINFO ("SUBSCRIBED"), whether the descendant matches or not.
        parents_of_subscribed = {p for s in subscriptions for p in parent_names(s)} if recursive else set()
        if subscribed_only:  # subscribed names that no longer exist are listed \NonExistent
            names += [n for n in sorted(subscriptions | parents_of_subscribed) if n not in by_name]
        for name in names:
            if not any(p.match(name) for p in patterns):
                continue
            info = by_name.get(name)
            if subscribed_only and name not in subscriptions and name not in parents_of_subscribed:
                continue
            if special_only and (info is None or info.special_use is None):
                continue
            attributes = sorted(info.attributes) if info else ["\\NonExistent"]
            if info and info.special_use:
                attributes.append(info.special_use)
            if want_subscribed and name in subscriptions:
                attributes.append("\\Subscribed")
            extended = [("CHILDINFO", ["SUBSCRIBED"])] if name in parents_of_subscribed else []
            self.write(r.list_response(name, attributes, extended=extended))
            if command.status_items is not None and info and "\\Noselect" not in info.attributes:
                status = await self._status_items(name, command.status_items)
                if status is not None:
                    self.write(r.status(name, status))
            await self.flush_if_large()
        return _ok("LIST completed")

    async def do_lsub(self: Session, command: c.Lsub) -> Reply:
        mailbox = self._mailbox()
        subscriptions = await self.io(mailbox.subscriptions)
        existing = {f.name: f for f in await self.io(mailbox.folders)}
        pattern = _pattern(command.reference, command.pattern)
        listed = set(subscriptions)
        percent = "%" in command.reference + command.pattern
        for name in subscriptions:
            if pattern.match(name):
                info = existing.get(name)
                attributes = ["\\Noselect"] if info is None or "\\Noselect" in info.attributes else []
                self.write(r.list_response(name, attributes, kind="LSUB"))
                continue
            # RFC 3501 6.3.9: with "%", the unsubscribed parent that the pattern reaches instead
            # of the subscribed name ("foo" for "foo/bar"), flagged \Noselect.
            for parent in parent_names(name) if percent else ():
                if parent not in listed and pattern.match(parent):
                    listed.add(parent)
                    self.write(r.list_response(parent, ["\\Noselect"], kind="LSUB"))
        return _ok("LSUB completed")

    # ----------------------------------------------------------------- STATUS

    def _status_now(self: Session, name: str, items: tuple[str, ...]) -> dict[str, int]:
        folder = self._mailbox().folder(name)
        # uidnext first: reading the state refreshes the listing this process keeps for the
        # folder, which messages() alone would return as last scanned (before new mail).
        uidnext = folder.uidnext
        messages = folder.messages()
        out: dict[str, int] = {}
        for name_ in items:
            item = name_.upper()
            if item == "MESSAGES":
                out[item] = len(messages)
            elif item == "RECENT":
                out[item] = 0
            elif item == "UIDNEXT":
                out[item] = uidnext
            elif item == "UIDVALIDITY":
                out[item] = folder.uidvalidity
            elif item == "UNSEEN":
                out[item] = sum(1 for m in messages if STATUS_DEFAULT_UNSEEN not in m.flags)
            elif item == "HIGHESTMODSEQ":
                out[item] = folder.highestmodseq
            elif item == "DELETED":
                out[item] = sum(1 for m in messages if "\\Deleted" in m.flags)
            elif item == "DELETED-STORAGE":  # RFC 9208 4.3.2, in 1024-octet units as STORAGE
                out[item] = -(-sum(m.wire_size for m in messages if "\\Deleted" in m.flags) // 1024)
            elif item == "SIZE":
                out[item] = sum(m.wire_size for m in messages)
            elif item == "APPENDLIMIT":
                out[item] = self.append_limit
        return out

    async def _status_items(self: Session, name: str, items: tuple[str, ...]) -> dict[str, int] | None:
        try:
            result = await self.io(self._status_now, name, items)
        except (NoSuchFolder, InvalidFolderName, FolderError):
            return None
        if "HIGHESTMODSEQ" in (i.upper() for i in items):
            self.condstore = True  # RFC 7162 3.1: STATUS HIGHESTMODSEQ enables CONDSTORE
        return result

    async def do_status(self: Session, command: c.Status) -> Reply:
        result = await self._status_items(command.mailbox, command.items)
        if result is None:
            return _no("No such folder", b"NONEXISTENT")
        self.write(r.status(command.mailbox, result))
        return _ok("STATUS completed")

    # ----------------------------------------------------------------- APPEND

    async def do_append(self: Session, command: c.Append) -> Reply:
        assert self.user is not None
        # One worker-thread trip for the whole command, the updates of the selected folder
        # included (APPEND to the selected folder is what clients saving a draft or a sent
        # message do).
        return await self.io_then_updates(command, self._append, command, self.user.quota_bytes)

    def _append(self: Session, command: c.Append, quota: int) -> Reply:
        """APPEND in a worker thread."""
        mailbox = self._mailbox()
        try:
            folder = mailbox.folder(command.mailbox)
        except (NoSuchFolder, InvalidFolderName):
            return _no("No such folder", b"TRYCREATE")
        messages = command.messages
        total = sum(len(m.message) for m in messages)
        if any(len(m.message) > self.append_limit for m in messages):
            return _no("Message too big", b"TOOBIG")
        if quota and Maildir(mailbox.root).usage() + total > quota:
            return _no("Over quota", b"OVERQUOTA")
        if any(m.binary and b"\0" in m.message for m in messages):
            # A literal8 (RFC 3516) may carry NUL, which no IMAP literal may carry back out in
            # FETCH; BINARY is not offered, so such a message is refused rather than stored.
            return _bad("NUL in the message: BINARY is not supported")
        uids: list[int] = []
        try:
            for m in messages:
                data = m.message.replace(b"\r\n", b"\n")  # the store keeps LF (see maildir.py)
                when = m.internal_date.timestamp() if m.internal_date else None
                flags = [f for f in m.flags or () if f.lower() != "\\recent"]
                uids.append(folder.append(data, flags, when))
        except FolderError as exc:
            if uids:  # RFC 3502 6.3.11: a failed MULTIAPPEND appends none of the messages
                _discard(folder, uids)
            if isinstance(exc, InvalidFlag):
                return _no(f"Invalid flag: {exc}")
            if isinstance(exc, TooManyKeywords):  # not TRYCREATE: creating the folder won't help
                return _no(f"Cannot append: {exc}", b"LIMIT")
            return _no(f"Cannot append: {exc}", b"TRYCREATE")
        code = r.code("APPENDUID", folder.uidvalidity, r.uid_set(uids))
        return _ok("APPEND completed", code)

    # ----------------------------------------------------------------- SELECT, EXAMINE

    async def do_select(self: Session, command: c.Select) -> Reply:
        return await self._select(command, readonly=False)

    async def do_examine(self: Session, command: c.Examine) -> Reply:
        return await self._select(command, readonly=True)

    async def _select(self: Session, command: c.Select, *, readonly: bool) -> Reply:
        if command.qresync is not None and not self.qresync:
            return _bad("QRESYNC must be enabled first (ENABLE QRESYNC)")
        # A reselect of the same name (what clients do all day) carries on with the session's
        # Folder object: its listing and what it reported are at hand, and the sync below
        # reports everything anew to the new Selected anyway. Otherwise `previous` keeps the
        # folder left behind referenced until the new one is open: the store keeps only a few
        # unused listings, and a reselect by another name still finds it.
        previous = self.selected
        if previous is not None:
            self.selected = None
            self.state = State.AUTHENTICATED
            if self.qresync:
                self.write(b"* OK [CLOSED] Previous mailbox closed\r\n")  # RFC 7162 3.2.11
        if command.condstore:
            self.condstore = True
        mailbox = self._mailbox()
        again = previous.folder if previous is not None and previous.name == command.mailbox else None
        # The first SELECT or EXAMINE takes the INBOX read at LOGIN (or drops it, for another name).
        inbox = self.take_inbox(wanted=command.mailbox.upper() == INBOX)
        if again is None and inbox is not None:
            again = inbox

        def open_folder() -> tuple[Selected, int | None, tuple[int, int, int], bytes]:
            # One trip to the worker thread for everything SELECT reports (each trip costs a
            # thread hand-off, which on a busy machine is most of a small SELECT's time).
            selected = None
            if again is not None:
                with contextlib.suppress(FolderGone):  # deleted or replaced: look it up anew
                    reopened = Selected(again, command.mailbox, readonly=readonly)
                    reopened.open()
                    selected = reopened
            if selected is None:
                selected = Selected(mailbox.folder(command.mailbox), command.mailbox, readonly=readonly)
                selected.open()
            state = selected.folder.state_as_synced()  # what open() saw: UIDNEXT as of EXISTS
            report = b""
            if command.qresync is not None:  # in the worker: it walks the whole folder
                report = _qresync_report(selected, selected.infos(), command.qresync)
            return selected, selected.first_unseen(), state, report

        reopened = None
        if again is not None and command.qresync is None:  # nothing changed: no thread trip
            reopened = Selected.reopened_quietly(again, command.mailbox, readonly=readonly)
        if reopened is not None:
            selected, first_unseen, state = reopened
            report = b""
        else:
            try:
                selected, first_unseen, state, report = await self.io(open_folder)
            except (NoSuchFolder, InvalidFolderName):
                return _no("No such folder", b"NONEXISTENT")
        uidvalidity, uidnext, highest = state
        unseen = b"* OK [UNSEEN %d] First unseen\r\n" % first_unseen if first_unseen is not None else b""
        # RFC 7162 3.1.2.1: a server that keeps modseqs sends HIGHESTMODSEQ on every SELECT.
        self.write(
            selected.flags_announcement()
            + _SELECT_REPORT % (selected.exists, unseen, uidvalidity, uidnext, highest)
            + report
        )
        self.selected = selected
        self.state = State.SELECTED
        self.mailbox_name = command.mailbox
        self._updates = b""  # the folder was read just now: nothing to report yet
        code = r.code("READ-ONLY" if readonly else "READ-WRITE")
        return _ok(f"{'EXAMINE' if readonly else 'SELECT'} completed", code)


# What SELECT and EXAMINE report after the flags, in one piece (a SELECT is a handful of lines,
# each of which would otherwise be put together from its parts).
_SELECT_REPORT = (
    b"* %d EXISTS\r\n"
    b"* 0 RECENT\r\n"
    b"%b"
    b"* OK [UIDVALIDITY %d] UIDs valid\r\n"
    b"* OK [UIDNEXT %d] Predicted next UID\r\n"
    b"* OK [HIGHESTMODSEQ %d] Highest\r\n"
)


def _qresync_report(selected: Selected, infos: list, qresync: c.QResync) -> bytes:
    """RFC 7162 3.2.5: what the client's cache misses since its modseq.

    There is no expunge history, so VANISHED (EARLIER) lists every UID the client may know
    (its known-uids, else 1:UIDNEXT-1) that is not here: more than needed, which the RFC allows,
    and exact for the client. Computed on ranges, never UID by UID (UIDNEXT may be in the
    millions)."""
    if qresync.uidvalidity != selected.folder.uidvalidity:
        return b""  # the client's cache is void anyway; it will refetch
    top = selected.folder.uidnext - 1
    gaps: list[tuple[int, int]] = []  # UIDs in 1..top that are not here
    previous = 0
    for _, info in infos:
        if info.uid > previous + 1:
            gaps.append((previous + 1, min(info.uid - 1, top)))
        previous = info.uid
    if previous < top:
        gaps.append((previous + 1, top))
    if qresync.known_uids is not None and not qresync.known_uids.saved:
        known = [
            (min(lo, hi), max(lo, hi))
            for a, b in qresync.known_uids.ranges
            for lo, hi in [(top if a is None else a, top if b is None else b)]
        ]
        gaps = [
            (max(glo, klo), min(ghi, khi))
            for glo, ghi in gaps
            for klo, khi in known
            if max(glo, klo) <= min(ghi, khi)
        ]
    out = bytearray()
    if gaps:
        spans = ",".join(str(lo) if lo == hi else f"{lo}:{hi}" for lo, hi in sorted(set(gaps)))
        out += b"* VANISHED (EARLIER) " + spans.encode("ascii") + b"\r\n"
    for seq, info in infos:
        if info.modseq > qresync.modseq:
            out += selected.flags_response(
                seq, info.uid, info.flags, info.modseq, condstore=True, with_uid=True
            )
    return bytes(out)


def _discard(folder: Folder, uids: list[int]) -> None:
    folder.store_flags(uids, ["\\Deleted"], Mode.ADD)
    folder.expunge(uids)


def _valid(name: str) -> bool:
    try:
        normalize(name)
    except InvalidFolderName:
        return False
    return True


def _same(a: str, b: str) -> bool:
    try:
        return normalize(a) == normalize(b)
    except InvalidFolderName:
        return False
