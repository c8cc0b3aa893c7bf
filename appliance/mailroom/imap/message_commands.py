"""IMAP commands of the selected state: FETCH, STORE, SEARCH, SORT, THREAD, COPY, MOVE, EXPUNGE.

RFC 3501 6.4 with UIDPLUS (RFC 4315), MOVE (RFC 6851), CONDSTORE/QRESYNC (RFC 7162), ESEARCH
(RFC 4731), SEARCHRES (RFC 5182), SORT/THREAD (RFC 5256) and UNSELECT (RFC 3691).
Mixed into `session.Session`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..store import FolderError, InvalidFlag, InvalidFolderName, MessageGone, NoSuchFolder, TooManyKeywords
from ..store.folder import Mode
from ..store.maildir import Maildir
from . import fetching
from . import search as engine
from . import sort as sorting
from . import thread as threading
from .base import Reply, State, bad, no, ok
from .protocol import commands as c
from .protocol import responses as r
from .selected import Selected

if TYPE_CHECKING:
    from .session import Session

log = logging.getLogger("mailroom.imap")
BACKGROUND: set[asyncio.Task[None]] = set()  # learning tasks, kept referenced until done
LEARN_AT_ONCE = 100  # messages taught per COPY/MOVE: a mass move of old mail is not a lesson
FETCH_BATCH = 500  # messages rendered per worker-thread call; output is flushed between batches
BADCHARSET = r.code("BADCHARSET", [r.Atom("US-ASCII"), r.Atom("UTF-8")])


class MessageView:
    """One message as SEARCH, SORT and THREAD see it; the content is read only if a key needs it,
    and not kept (the engine parses each message at most once per command)."""

    __slots__ = ("folder", "info", "seq")

    def __init__(self, seq: int, info: Any, folder: Any) -> None:
        self.seq, self.info, self.folder = seq, info, folder

    @property
    def uid(self) -> int:
        return self.info.uid

    @property
    def flags(self) -> frozenset[str]:
        return self.info.flags

    @property
    def modseq(self) -> int:
        return self.info.modseq

    @property
    def size(self) -> int:
        return self.info.wire_size

    @property
    def internaldate(self) -> float:
        return self.info.internaldate

    def data(self) -> bytes:
        try:
            return self.folder.read(self.info.uid)
        except MessageGone:
            return b""


class MessageCommands:
    def _sel(self: Session) -> Selected:
        assert self.selected is not None
        return self.selected

    def _bad_numbers(self: Session, command: Any) -> Reply | None:
        if not getattr(command, "uid", False) and self._sel().out_of_range(command.sequence):
            return bad("Invalid message sequence number")
        return None

    # ----------------------------------------------------------------- simple ones

    async def do_check(self: Session, command: c.Check) -> Reply:
        return ok("CHECK completed")

    async def do_unselect(self: Session, command: c.Unselect) -> Reply:
        self.selected = None
        self.state = State.AUTHENTICATED
        return ok("UNSELECT completed")

    async def do_close(self: Session, command: c.Close) -> Reply:
        selected = self._sel()
        self.selected = None
        self.state = State.AUTHENTICATED
        if not selected.readonly:  # CLOSE expunges silently (RFC 3501 6.4.2)
            await self.io(selected.folder.expunge)
        return ok("CLOSE completed")

    async def do_expunge(self: Session, command: c.Expunge) -> Reply:
        return await self._expunge(command, None)

    async def do_uidexpunge(self: Session, command: c.UidExpunge) -> Reply:
        pairs = self._sel().resolve(command.sequence, uid=True)
        return await self._expunge(command, [uid for _, uid in pairs])

    async def _expunge(self: Session, command: c.Command, uids: list[int] | None) -> Reply:
        selected = self._sel()
        if selected.readonly:
            return no("The folder is read-only", b"READ-ONLY")
        qresync = self.qresync

        def expunge() -> bytes:
            return selected.forget(selected.folder.expunge(uids), qresync=qresync)

        self.write(await self.io_then_updates(command, expunge))
        return ok("EXPUNGE completed")

    # ----------------------------------------------------------------- FETCH

    async def do_fetch(self: Session, command: c.Fetch) -> Reply:
        problem = self._bad_numbers(command)
        if problem:
            return problem
        selected = self._sel()
        items = command.items
        if command.vanished and not (self.qresync and command.uid and command.changedsince is not None):
            return bad("VANISHED needs ENABLE QRESYNC, UID FETCH and CHANGEDSINCE")
        if command.changedsince is not None or any(getattr(i, "name", None) == "MODSEQ" for i in items):
            self.condstore = True
        cheap = fetching.cheap(items)
        runs = selected.runs(
            command.sequence, uid=command.uid, size=fetching.CHEAP_BATCH if cheap else FETCH_BATCH
        )
        if command.vanished:
            await self._report_vanished(command, runs)
        set_seen = not selected.readonly and fetching.sets_seen(items)
        need = fetching.needs_content(items)
        missing = 0
        for number, (seqs, uids) in enumerate(runs, 1):
            if cheap:
                render: Callable[[], tuple[bytes, int]] = functools.partial(
                    fetching.render_cheap,
                    selected,
                    seqs,
                    uids,
                    items,
                    with_uid=command.uid,
                    with_modseq=self.condstore,
                    changedsince=command.changedsince,
                )
            else:
                render = functools.partial(
                    self._fetch_batch,
                    selected,
                    list(zip(seqs, uids, strict=True)),
                    items,
                    need,
                    set_seen,
                    command.uid,
                    command.changedsince,
                )
            if number == len(runs):  # the last batch brings the updates along
                out, gone = await self.io_then_updates(command, render)
            else:
                out, gone = await self.io(render)
            self.write(out)
            missing += gone
            await self.flush_if_large()
        if missing:
            return ok("Some messages were expunged meanwhile", b"EXPUNGEISSUED")
        return ok("FETCH completed")

    def _fetch_batch(
        self: Session,
        selected: Selected,
        batch: list[tuple[int, int]],
        items: tuple[Any, ...],
        need: str | None,
        set_seen: bool,
        uid_command: bool,
        changedsince: int | None,
    ) -> tuple[bytes, int]:
        folder = selected.folder
        infos = [(seq, selected.info(uid)) for seq, uid in batch]
        if changedsince is not None:
            infos = [(seq, info) for seq, info in infos if info is None or info.modseq > changedsince]
        seen_now: set[int] = set()
        if set_seen:
            unseen = [info.uid for _, info in infos if info is not None and "\\Seen" not in info.flags]
            if unseen:
                folder.store_flags(unseen, ["\\Seen"], Mode.ADD)
                seen_now = set(unseen)
                infos = [(seq, selected.info(info.uid) if info else None) for seq, info in infos]
        out = bytearray()
        gone = 0
        for seq, info in infos:
            if info is None:
                gone += 1
                continue
            try:
                content = fetching.read_content(folder, info.uid, need)
                out += fetching.render(
                    seq,
                    info,
                    items,
                    content,
                    with_uid=uid_command,
                    with_modseq=self.condstore,
                    with_flags=info.uid in seen_now,
                )
            except MessageGone:
                gone += 1
        return bytes(out), gone

    async def _report_vanished(
        self: Session, command: c.Fetch, runs: list[tuple[Sequence[int], Sequence[int]]]
    ) -> None:
        selected = self._sel()
        present = {uid for _, uids in runs for uid in uids}
        top = max(selected.folder.uidnext - 1, 1)
        wanted = (
            [u for u in command.sequence.resolve(top) if u not in present]
            if not command.sequence.saved
            else []
        )
        if wanted:
            self.write(r.vanished(sorted(set(wanted)), earlier=True))

    # ----------------------------------------------------------------- STORE

    async def do_store(self: Session, command: c.Store) -> Reply:
        problem = self._bad_numbers(command)
        if problem:
            return problem
        selected = self._sel()
        if selected.readonly:
            return no("The folder is read-only", b"READ-ONLY")
        if command.unchangedsince is not None:
            self.condstore = True
        pairs = selected.resolve(command.sequence, uid=command.uid)
        flags = [flag for flag in command.flags if flag.lower() != "\\recent"]
        mode = {"": Mode.REPLACE, "+": Mode.ADD, "-": Mode.REMOVE}[command.mode]
        try:
            out, modified = await self.io_then_updates(
                command, self._store, selected, pairs, flags, mode, command
            )
        except (InvalidFlag, TooManyKeywords) as exc:
            return no(f"Cannot store flags: {exc}")
        self.write(out)
        if modified:
            return ok("Conditional STORE failed for some", r.code("MODIFIED", r.uid_set(modified)))
        return ok("STORE completed")

    def _store(
        self: Session,
        selected: Selected,
        pairs: list[tuple[int, int]],
        flags: list[str],
        mode: Mode,
        command: c.Store,
    ) -> tuple[bytes, list[int]]:
        modified: list[int] = []
        targets = pairs
        if command.unchangedsince is not None:
            targets = []
            for seq, uid in pairs:
                info = selected.info(uid)
                if info is not None and info.modseq > command.unchangedsince:
                    modified.append(uid if command.uid else seq)
                else:
                    targets.append((seq, uid))
        result = selected.folder.store_flags([uid for _, uid in targets], flags, mode)
        # FLAGS before a FETCH naming a keyword the client was not told of (RFC 3501 7.2.6). The
        # folder's keywords are looked up (a look at the folder) only when a result has one.
        announced = selected.keywords
        if any(f[0] != "\\" and f not in announced for new_flags, _ in result.values() for f in new_flags):
            out = bytearray(selected.keyword_update())
        else:
            out = bytearray()
        for seq, uid in targets:
            if uid not in result:
                continue
            new_flags, modseq = result[uid]
            items: list[tuple[str, object]] = []
            if command.uid or self.qresync:
                items.append(("UID", uid))
            if not command.silent:
                items.append(("FLAGS", [r.Atom(x) for x in sorted(new_flags)]))
            if self.condstore:
                items.append(("MODSEQ", [modseq]))
            if not command.silent or self.condstore:
                out += r.fetch(seq, items)
        return bytes(out), modified

    # ----------------------------------------------------------------- COPY, MOVE

    async def do_copy(self: Session, command: c.Copy) -> Reply:
        return await self._copy(command, move=False)

    async def do_move(self: Session, command: c.Move) -> Reply:
        return await self._copy(command, move=True)

    async def _copy(self: Session, command: c.Copy, *, move: bool) -> Reply:
        problem = self._bad_numbers(command)
        if problem:
            return problem
        selected = self._sel()
        if move and selected.readonly:
            return no("The folder is read-only", b"READ-ONLY")
        assert self.mailbox is not None and self.user is not None
        try:
            dest = await self.io(self.mailbox.folder, command.mailbox)
        except (NoSuchFolder, InvalidFolderName):
            return no("No such folder", b"TRYCREATE")
        pairs = selected.resolve(command.sequence, uid=command.uid)
        uids = [uid for _, uid in pairs]
        if not move and self.user.quota_bytes:
            usage = await self.io(Maildir(self.mailbox.root).usage)
            adding = sum(info.size for uid in uids if (info := selected.info(uid)) is not None)
            if usage + adding > self.user.quota_bytes:
                return no("Over quota", b"OVERQUOTA")
        operation: Callable[..., dict[int, int]] = selected.folder.move if move else selected.folder.copy
        try:
            mapping = await self.io(operation, uids, dest)
        except FolderError as exc:
            return no(f"Cannot copy: {exc}", b"TRYCREATE")
        code = None
        if mapping:
            source = sorted(mapping)
            code = r.code(
                "COPYUID", dest.uidvalidity, r.uid_set(source), r.uid_set(mapping[u] for u in source)
            )
        self.on_copied(selected.name, command.mailbox, mapping, move=move)
        if move:
            if code:
                self.write(r.untagged_status("OK", "Moved", code))
            self.write(selected.forget(list(mapping), qresync=self.qresync))
            return ok("MOVE completed")
        return ok("COPY completed", code)

    def on_copied(self: Session, source: str, target: str, mapping: dict[int, int], *, move: bool) -> None:
        """Teach the spam filter from the user's sorting: a message put into Junk is spam, one
        taken out of Junk (anywhere but Trash) is ham. Runs in the background; failures are
        logged and counted by the filter, never the client's problem."""
        if self.learn is None or not mapping or self.mailbox is None:
            return
        mailbox = self.mailbox
        try:
            into = mailbox.special_use(target)
            out_of = mailbox.special_use(source)
        except InvalidFolderName:
            return
        if into == "\\Junk" and out_of != "\\Junk":
            kind = "spam"
        elif out_of == "\\Junk" and into not in ("\\Junk", "\\Trash"):
            kind = "ham"
        else:
            return
        learn = self.learn
        dest_uids = sorted(mapping.values())

        async def teach() -> None:
            dest = await self.io(mailbox.folder, target)
            for uid in dest_uids[:LEARN_AT_ONCE]:
                try:
                    data = await self.io(dest.read, uid)
                    await learn(kind, data)
                except MessageGone:
                    continue
                except Exception as exc:  # the filter logs and counts its own failures
                    log.warning("learning %s failed user=%s: %s", kind, self.address, exc)
                    return

        task = asyncio.get_running_loop().create_task(teach())
        BACKGROUND.add(task)
        task.add_done_callback(BACKGROUND.discard)

    # ----------------------------------------------------------------- SEARCH, SORT, THREAD

    def _views(self: Session) -> list[MessageView]:
        selected = self._sel()
        return [MessageView(seq, info, selected.folder) for seq, info in selected.infos()]

    def _matching(self: Session, keys: tuple[Any, ...], charset: str | None) -> list[MessageView]:
        """The messages a search program matches (in a worker thread; raises SearchError)."""
        selected = self._sel()
        largest_uid = selected.uids[-1] if selected.uids else 0
        return engine.search(
            keys,
            self._views(),
            saved_uids=selected.saved,
            charset=charset,
            max_seq=selected.exists,
            max_uid=largest_uid,
        )

    async def do_search(self: Session, command: c.Search) -> Reply:
        if not engine.charset_supported(command.charset):
            if any(o.upper() == "SAVE" for o in command.return_options or ()):
                self._sel().saved = []  # RFC 5182 2.1: a SAVE search answered NO saves nothing
            return no("Unsupported charset", BADCHARSET)
        selected = self._sel()
        with_modseq = engine.mentions_modseq(command.keys)
        if with_modseq:
            self.condstore = True
        try:
            matched = await self.io(self._matching, command.keys, command.charset)
        except engine.SearchError as exc:
            return bad(str(exc))
        if command.return_options is None:
            numbers = [v.uid if command.uid else v.seq for v in matched]
            modseq = engine.highest_modseq(matched) if with_modseq else None
            self.write(r.search(numbers, modseq=modseq))
            return ok("SEARCH completed")
        result = engine.esearch_result(
            matched, command.return_options, uid=command.uid, with_modseq=with_modseq
        )
        if result.saved_uids is not None:
            selected.saved = sorted(result.saved_uids)
        if result.fields is not None:
            self.write(r.esearch(command.tag, uid=command.uid, **result.fields))  # type: ignore[arg-type]
        return ok("SEARCH completed")

    async def do_sort(self: Session, command: c.Sort) -> Reply:
        if not engine.charset_supported(command.charset):
            return no("Unsupported charset", BADCHARSET)

        def run() -> list[MessageView]:
            return sorting.sort(command.criteria, self._matching(command.keys, command.charset))

        try:
            ordered = await self.io(run)
        except engine.SearchError as exc:
            return bad(str(exc))
        self.write(r.sort(v.uid if command.uid else v.seq for v in ordered))
        return ok("SORT completed")

    async def do_thread(self: Session, command: c.Thread) -> Reply:
        if not engine.charset_supported(command.charset):
            return no("Unsupported charset", BADCHARSET)

        def run() -> list[r.ThreadNode]:
            matched = self._matching(command.keys, command.charset)
            return threading.thread(command.algorithm, matched, uid=command.uid)

        try:
            roots = await self.io(run)
        except engine.SearchError as exc:
            return bad(str(exc))
        self.write(r.thread(roots))
        return ok("THREAD completed")
