"""One dataclass per IMAP command, each able to read itself from a `Reader` and write itself back.

RFC 3501 6 (IMAP4rev1) with RFC 2177 (IDLE), 2342 (NAMESPACE), 2971 (ID), 4314-free quota of
RFC 9208 (GETQUOTA, GETQUOTAROOT), 4731 (ESEARCH), 4959 (SASL-IR), 4978 (COMPRESS), 5161
(ENABLE), 5256 (SORT, THREAD), 5258 (LIST-EXTENDED), 5819 (LIST-STATUS), 6154 (SPECIAL-USE),
6851 (MOVE), 3691 (UNSELECT), 7162 (CONDSTORE, QRESYNC) and 3516 (BINARY APPEND).
Values are checked for syntax only; what they mean is the session's business.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from . import fetch as fetch_mod
from . import lexer
from . import search as search_mod
from .lexer import Reader
from .sequence import SequenceSet

STATUS_ITEMS = frozenset(
    [
        "MESSAGES",
        "RECENT",
        "UIDNEXT",
        "UIDVALIDITY",
        "UNSEEN",
        "HIGHESTMODSEQ",
        "SIZE",
        "DELETED",
        "DELETED-STORAGE",
        "APPENDLIMIT",
    ]
)
LIST_SELECT_OPTIONS = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})
LIST_RETURN_OPTIONS = frozenset({"SUBSCRIBED", "CHILDREN", "SPECIAL-USE"})
SEARCH_RETURN_OPTIONS = frozenset({"MIN", "MAX", "ALL", "COUNT", "SAVE"})
FIRST = SequenceSet(((1, 1),))  # the placeholder default of the sequence fields
SORT_KEYS = frozenset(["ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO"])


@dataclass(frozen=True, slots=True)
class Command:
    tag: str
    NAME: ClassVar[str] = ""

    @property
    def name(self) -> str:
        return ("UID " if getattr(self, "uid", False) else "") + self.NAME

    def to_bytes(self) -> bytes:
        args = self._args()
        line = self.tag.encode("ascii") + b" " + self.name.encode("ascii")
        return line + (b" " + args if args else b"") + b"\r\n"

    def _args(self) -> bytes:
        return b""


# -- commands without arguments -----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Capability(Command):
    NAME = "CAPABILITY"


@dataclass(frozen=True, slots=True)
class Noop(Command):
    NAME = "NOOP"


@dataclass(frozen=True, slots=True)
class Logout(Command):
    NAME = "LOGOUT"


@dataclass(frozen=True, slots=True)
class StartTLS(Command):
    NAME = "STARTTLS"


@dataclass(frozen=True, slots=True)
class Check(Command):
    NAME = "CHECK"


@dataclass(frozen=True, slots=True)
class Close(Command):
    NAME = "CLOSE"


@dataclass(frozen=True, slots=True)
class Unselect(Command):
    NAME = "UNSELECT"


@dataclass(frozen=True, slots=True)
class Expunge(Command):
    NAME = "EXPUNGE"


@dataclass(frozen=True, slots=True)
class Idle(Command):
    NAME = "IDLE"


@dataclass(frozen=True, slots=True)
class Namespace(Command):
    NAME = "NAMESPACE"


_NO_ARGS: dict[str, type[Command]] = {
    c.NAME: c for c in (Capability, Noop, Logout, StartTLS, Check, Close, Unselect, Expunge, Idle, Namespace)
}


# -- authentication -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Login(Command):
    user: str = ""
    password: str = ""
    NAME = "LOGIN"

    def _args(self) -> bytes:
        return lexer.astring(self.user) + b" " + lexer.astring(self.password)

    def __repr__(self) -> str:  # keep passwords out of logs
        return f"Login(tag={self.tag!r}, user={self.user!r}, password=...)"


@dataclass(frozen=True, slots=True)
class Authenticate(Command):
    """`initial_response` is the decoded SASL-IR response (RFC 4959): b"" for "=", None if absent."""

    mechanism: str = ""
    initial_response: bytes | None = None
    NAME = "AUTHENTICATE"

    def _args(self) -> bytes:
        out = self.mechanism.encode("ascii")
        if self.initial_response is not None:
            out += b" " + (base64.b64encode(self.initial_response) or b"=")
        return out

    def __repr__(self) -> str:
        return f"Authenticate(tag={self.tag!r}, mechanism={self.mechanism!r}, initial_response=...)"


@dataclass(frozen=True, slots=True)
class Compress(Command):
    mechanism: str = "DEFLATE"
    NAME = "COMPRESS"

    def _args(self) -> bytes:
        return self.mechanism.encode("ascii")


@dataclass(frozen=True, slots=True)
class Enable(Command):
    capabilities: tuple[str, ...] = ()
    NAME = "ENABLE"

    def _args(self) -> bytes:
        return " ".join(self.capabilities).encode("ascii")


@dataclass(frozen=True, slots=True)
class Id(Command):
    """RFC 2971: field/value pairs, or None for `ID NIL`."""

    parameters: tuple[tuple[str, str | None], ...] | None = None
    NAME = "ID"

    def _args(self) -> bytes:
        if self.parameters is None:
            return b"NIL"
        items = []
        for key, value in self.parameters:
            items.append(lexer.string(key.encode("utf-8", "surrogateescape")))
            items.append(b"NIL" if value is None else lexer.string(value.encode("utf-8", "surrogateescape")))
        return b"(" + b" ".join(items) + b")"


# -- mailboxes ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class QResync:
    """The QRESYNC parameter of SELECT/EXAMINE (RFC 7162 3.2.5)."""

    uidvalidity: int
    modseq: int
    known_uids: SequenceSet | None = None
    seq_match: tuple[SequenceSet, SequenceSet] | None = None

    def to_bytes(self) -> bytes:
        out = b"QRESYNC (%d %d" % (self.uidvalidity, self.modseq)
        if self.known_uids is not None:
            out += b" " + self.known_uids.to_str().encode("ascii")
        if self.seq_match is not None:
            seqs, uids = self.seq_match
            out += b" (%s %s)" % (seqs.to_str().encode("ascii"), uids.to_str().encode("ascii"))
        return out + b")"


@dataclass(frozen=True, slots=True)
class Select(Command):
    mailbox: str = ""
    condstore: bool = False
    qresync: QResync | None = None
    NAME = "SELECT"

    def _args(self) -> bytes:
        params = []
        if self.condstore:
            params.append(b"CONDSTORE")
        if self.qresync:
            params.append(self.qresync.to_bytes())
        out = lexer.mailbox(self.mailbox)
        return out + (b" (" + b" ".join(params) + b")" if params else b"")


@dataclass(frozen=True, slots=True)
class Examine(Select):
    NAME = "EXAMINE"


@dataclass(frozen=True, slots=True)
class MailboxCommand(Command):
    """A command whose only argument is a mailbox name."""

    mailbox: str = ""

    def _args(self) -> bytes:
        return lexer.mailbox(self.mailbox)


@dataclass(frozen=True, slots=True)
class Create(MailboxCommand):
    """CREATE, with the USE parameter of RFC 6154 5.2 (CREATE-SPECIAL-USE)."""

    special_use: tuple[str, ...] | None = None
    NAME = "CREATE"

    def _args(self) -> bytes:
        out = lexer.mailbox(self.mailbox)
        if self.special_use is not None:
            out += b" (USE " + lexer.flag_list(self.special_use) + b")"
        return out


@dataclass(frozen=True, slots=True)
class Delete(MailboxCommand):
    NAME = "DELETE"


@dataclass(frozen=True, slots=True)
class Subscribe(MailboxCommand):
    NAME = "SUBSCRIBE"


@dataclass(frozen=True, slots=True)
class Unsubscribe(MailboxCommand):
    NAME = "UNSUBSCRIBE"


@dataclass(frozen=True, slots=True)
class GetQuotaRoot(MailboxCommand):
    NAME = "GETQUOTAROOT"


@dataclass(frozen=True, slots=True)
class GetQuota(Command):
    root: str = ""
    NAME = "GETQUOTA"

    def _args(self) -> bytes:
        return lexer.astring(self.root)


@dataclass(frozen=True, slots=True)
class Rename(Command):
    mailbox: str = ""
    new_name: str = ""
    NAME = "RENAME"

    def _args(self) -> bytes:
        return lexer.mailbox(self.mailbox) + b" " + lexer.mailbox(self.new_name)


@dataclass(frozen=True, slots=True)
class List(Command):
    """LIST with LIST-EXTENDED (RFC 5258), LIST-STATUS (RFC 5819) and SPECIAL-USE (RFC 6154).

    `select_options`/`return_options` are None when absent; STATUS items of RETURN are in
    `status_items`, not in `return_options`.
    """

    reference: str = ""
    patterns: tuple[str, ...] = ("",)
    select_options: tuple[str, ...] | None = None
    return_options: tuple[str, ...] | None = None
    status_items: tuple[str, ...] | None = None
    NAME = "LIST"

    def _args(self) -> bytes:
        out = b""
        if self.select_options is not None:
            out += b"(" + " ".join(self.select_options).encode("ascii") + b") "
        out += lexer.mailbox(self.reference) + b" "
        pats = [lexer.mailbox(p, pattern=True) for p in self.patterns]
        out += pats[0] if len(pats) == 1 else b"(" + b" ".join(pats) + b")"
        if self.return_options is not None or self.status_items is not None:
            opts = [o.encode("ascii") for o in self.return_options or ()]
            if self.status_items is not None:
                opts.append(b"STATUS (" + " ".join(self.status_items).encode("ascii") + b")")
            out += b" RETURN (" + b" ".join(opts) + b")"
        return out


@dataclass(frozen=True, slots=True)
class Lsub(Command):
    reference: str = ""
    pattern: str = ""
    NAME = "LSUB"

    def _args(self) -> bytes:
        return lexer.mailbox(self.reference) + b" " + lexer.mailbox(self.pattern, pattern=True)


@dataclass(frozen=True, slots=True)
class Status(Command):
    mailbox: str = ""
    items: tuple[str, ...] = ()
    NAME = "STATUS"

    def _args(self) -> bytes:
        return lexer.mailbox(self.mailbox) + b" (" + " ".join(self.items).encode("ascii") + b")"


@dataclass(frozen=True, slots=True)
class AppendMessage:
    """One message of an APPEND; `binary` when it came as a literal8 (RFC 3516 4.4)."""

    flags: tuple[str, ...] | None = None
    internal_date: dt.datetime | None = None
    message: bytes = b""
    binary: bool = False

    def to_bytes(self) -> bytes:
        out = b""
        if self.flags is not None:
            out += lexer.flag_list(self.flags) + b" "
        if self.internal_date is not None:
            out += lexer.date_time(self.internal_date) + b" "
        return out + (b"~" if self.binary else b"") + lexer.literal(self.message)

    def __repr__(self) -> str:
        return (
            f"AppendMessage(flags={self.flags!r}, internal_date={self.internal_date!r}, "
            f"message=<{len(self.message)} octets>, binary={self.binary!r})"
        )


@dataclass(frozen=True, slots=True)
class Append(Command):
    """APPEND of one message, or several with MULTIAPPEND (RFC 3502): see `messages`."""

    mailbox: str = ""
    flags: tuple[str, ...] | None = None
    internal_date: dt.datetime | None = None
    message: bytes = b""
    binary: bool = False
    more: tuple[AppendMessage, ...] = ()
    NAME = "APPEND"

    @property
    def messages(self) -> tuple[AppendMessage, ...]:
        first = AppendMessage(self.flags, self.internal_date, self.message, self.binary)
        return (first, *self.more)

    def _args(self) -> bytes:
        return lexer.mailbox(self.mailbox) + b"".join(b" " + m.to_bytes() for m in self.messages)

    def __repr__(self) -> str:
        return (
            f"Append(tag={self.tag!r}, mailbox={self.mailbox!r}, flags={self.flags!r}, "
            f"internal_date={self.internal_date!r}, message=<{len(self.message)} octets>, "
            f"binary={self.binary!r}, more={self.more!r})"
        )


# -- messages -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Search(Command):
    """SEARCH; `return_options` (RFC 4731 ESEARCH) is None without RETURN."""

    uid: bool = False
    charset: str | None = None
    return_options: tuple[str, ...] | None = None
    keys: tuple[search_mod.SearchKey, ...] = ()
    NAME = "SEARCH"

    def _args(self) -> bytes:
        out = b""
        if self.return_options is not None:
            out += b"RETURN (" + " ".join(self.return_options).encode("ascii") + b") "
        if self.charset is not None:
            out += b"CHARSET " + lexer.astring(self.charset) + b" "
        return out + search_mod.write_program(self.keys)


@dataclass(frozen=True, slots=True)
class Fetch(Command):
    """FETCH; `macro` is ALL/FAST/FULL (then `attributes` is empty); see `items`."""

    uid: bool = False
    sequence: SequenceSet = FIRST
    macro: str | None = None
    attributes: tuple[fetch_mod.FetchAttr, ...] = ()
    changedsince: int | None = None
    vanished: bool = False
    NAME = "FETCH"

    @property
    def items(self) -> tuple[fetch_mod.FetchAttr, ...]:
        return fetch_mod.expand(self.macro, self.attributes)

    def _args(self) -> bytes:
        out = self.sequence.to_str().encode("ascii") + b" "
        out += fetch_mod.write_attributes(self.macro, self.attributes)
        mods = []
        if self.changedsince is not None:
            mods.append(b"CHANGEDSINCE %d" % self.changedsince)
        if self.vanished:
            mods.append(b"VANISHED")
        return out + (b" (" + b" ".join(mods) + b")" if mods else b"")


@dataclass(frozen=True, slots=True)
class Store(Command):
    """STORE: `mode` is "" (replace), "+" or "-"; UNCHANGEDSINCE of RFC 7162 3.1.3."""

    uid: bool = False
    sequence: SequenceSet = FIRST
    mode: str = ""
    silent: bool = False
    flags: tuple[str, ...] = ()
    unchangedsince: int | None = None
    NAME = "STORE"

    def _args(self) -> bytes:
        out = self.sequence.to_str().encode("ascii") + b" "
        if self.unchangedsince is not None:
            out += b"(UNCHANGEDSINCE %d) " % self.unchangedsince
        item = self.mode + "FLAGS" + (".SILENT" if self.silent else "")
        return out + item.encode("ascii") + b" " + lexer.flag_list(self.flags)


@dataclass(frozen=True, slots=True)
class Copy(Command):
    uid: bool = False
    sequence: SequenceSet = FIRST
    mailbox: str = ""
    NAME = "COPY"

    def _args(self) -> bytes:
        return self.sequence.to_str().encode("ascii") + b" " + lexer.mailbox(self.mailbox)


@dataclass(frozen=True, slots=True)
class Move(Copy):
    NAME = "MOVE"


@dataclass(frozen=True, slots=True)
class UidExpunge(Command):
    sequence: SequenceSet = FIRST
    NAME = "UID EXPUNGE"

    def _args(self) -> bytes:
        return self.sequence.to_str().encode("ascii")


@dataclass(frozen=True, slots=True)
class Sort(Command):
    """SORT (RFC 5256): `criteria` are (reverse, key) pairs."""

    uid: bool = False
    criteria: tuple[tuple[bool, str], ...] = ()
    charset: str = "UTF-8"
    keys: tuple[search_mod.SearchKey, ...] = ()
    NAME = "SORT"

    def _args(self) -> bytes:
        crit = " ".join(("REVERSE " if rev else "") + key for rev, key in self.criteria)
        out = b"(" + crit.encode("ascii") + b") " + lexer.astring(self.charset)
        return out + b" " + search_mod.write_program(self.keys)


@dataclass(frozen=True, slots=True)
class Thread(Command):
    uid: bool = False
    algorithm: str = "REFERENCES"
    charset: str = "UTF-8"
    keys: tuple[search_mod.SearchKey, ...] = ()
    NAME = "THREAD"

    def _args(self) -> bytes:
        out = self.algorithm.encode("ascii") + b" " + lexer.astring(self.charset)
        return out + b" " + search_mod.write_program(self.keys)


@dataclass(frozen=True, slots=True)
class Unknown(Command):
    """A command name this parser does not know; the session answers BAD. `rest` is raw."""

    command: str = ""
    rest: bytes = b""

    @property
    def name(self) -> str:
        return self.command

    def _args(self) -> bytes:
        return self.rest


# -- reading ------------------------------------------------------------------------------------
def read_command(r: Reader, tag: str) -> Command:
    """Read the command after `tag SP` up to the final CRLF."""
    name = r.keyword()
    uid = False
    if name == "UID":
        r.sp()
        name = r.keyword()
        if name == "EXPUNGE":
            r.sp()
            cmd: Command = UidExpunge(tag, r.sequence_set())
            r.end()
            return cmd
        if name not in _UID_COMMANDS:
            raise r.fail(f"UID {name[:40]} is not a command")
        uid = True
    if name in _NO_ARGS:
        r.end()
        return _NO_ARGS[name](tag)
    reader = _READERS.get(name)
    if reader is None:
        rest = r.data[r.pos : -2]
        if (rest and not rest.startswith(b" ")) or b"\0" in rest:
            raise r.fail("malformed command")
        return Unknown(tag, name, rest[1:])
    if name in _UID_COMMANDS:
        r.sp()
        cmd = reader(r, tag, uid)
    else:
        r.sp()
        cmd = reader(r, tag)
    r.end()
    return cmd


def _read_login(r: Reader, tag: str) -> Login:
    user = r.text_astring()
    r.sp()
    return Login(tag, user, r.text_astring())


def _read_authenticate(r: Reader, tag: str) -> Authenticate:
    mechanism = r.keyword()
    initial = None
    if r.take(b" "):
        raw = r._run(frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="))
        if raw == b"=":
            initial = b""
        else:
            try:
                initial = base64.b64decode(raw, validate=True)
            except binascii.Error as exc:
                raise r.fail("bad base64 in the initial response") from exc
            if not initial:
                raise r.fail("empty initial response must be sent as '='")
    return Authenticate(tag, mechanism, initial)


def _read_compress(r: Reader, tag: str) -> Compress:
    return Compress(tag, r.keyword())


def _read_enable(r: Reader, tag: str) -> Enable:
    caps = [r.keyword()]
    while r.take(b" "):
        caps.append(r.keyword())
    return Enable(tag, tuple(caps))


def _read_id(r: Reader, tag: str) -> Id:
    if r.take(b"NIL"):
        return Id(tag, None)
    r.expect(b"(")
    params: list[tuple[str, str | None]] = []
    if not r.take(b")"):
        while True:
            key = r.string().decode("utf-8", "surrogateescape")
            r.sp()
            value = r.nstring()
            params.append((key, None if value is None else value.decode("utf-8", "surrogateescape")))
            if len(params) > 30:
                raise r.fail("too many ID fields")
            if r.take(b")"):
                break
            r.sp()
    return Id(tag, tuple(params))


def _read_select(cls: type[Select]) -> Callable[[Reader, str], Select]:
    def read(r: Reader, tag: str) -> Select:
        mailbox = r.mailbox()
        condstore = False
        qresync = None
        if r.take(b" "):
            r.expect(b"(")
            while True:
                param = r.keyword()
                if param == "CONDSTORE" and not condstore:
                    condstore = True
                elif param == "QRESYNC" and qresync is None:
                    r.sp()
                    qresync = _read_qresync(r)
                else:
                    raise r.fail("unknown or repeated select parameter")
                if r.take(b")"):
                    break
                r.sp()
        return cls(tag, mailbox, condstore, qresync)

    return read


def _read_qresync(r: Reader) -> QResync:
    r.expect(b"(")
    uidvalidity = r.number(nonzero=True)
    r.sp()
    modseq = r.number64()
    known = seq_match = None
    if r.take(b" "):
        if r.peek() != b"(":
            known = r.sequence_set()
            if r.take(b" "):
                seq_match = _read_seq_match(r)
        else:
            seq_match = _read_seq_match(r)
    r.expect(b")")
    return QResync(uidvalidity, modseq, known, seq_match)


def _read_seq_match(r: Reader) -> tuple[SequenceSet, SequenceSet]:
    r.expect(b"(")
    seqs = r.sequence_set()
    r.sp()
    uids = r.sequence_set()
    r.expect(b")")
    return seqs, uids


def _read_mailbox_only(cls: type[MailboxCommand]) -> Callable[[Reader, str], MailboxCommand]:
    return lambda r, tag: cls(tag, r.mailbox())


def _read_create(r: Reader, tag: str) -> Create:
    mailbox = r.mailbox()
    use = None
    if r.take(b" "):
        r.expect(b"(USE ", "(USE")
        use = r.flag_list()
        if not use or not all(f.startswith("\\") for f in use):
            raise r.fail("USE takes special-use attributes")
        r.expect(b")")
    return Create(tag, mailbox, use)


def _read_getquota(r: Reader, tag: str) -> GetQuota:
    return GetQuota(tag, r.text_astring())


def _read_rename(r: Reader, tag: str) -> Rename:
    old = r.mailbox()
    r.sp()
    return Rename(tag, old, r.mailbox())


def _options(r: Reader, allowed: frozenset[str]) -> tuple[str, ...]:
    r.expect(b"(")
    opts: list[str] = []
    if not r.take(b")"):
        opts.append(_option(r, allowed))
        while not r.take(b")"):
            r.sp()
            opts.append(_option(r, allowed))
    return tuple(opts)


def _option(r: Reader, allowed: frozenset[str]) -> str:
    opt = r.keyword()
    if opt not in allowed:
        raise r.fail(f"unknown option {opt[:40]}")
    return opt


def _read_list(r: Reader, tag: str) -> List:
    select = None
    if r.peek() == b"(":
        select = _options(r, LIST_SELECT_OPTIONS)
        r.sp()
    reference = r.mailbox()
    r.sp()
    if r.peek() == b"(":
        patterns = r.paren_list(lambda: r.mailbox(pattern=True))
    else:
        patterns = (r.mailbox(pattern=True),)
    returns = status = None
    if r.take(b" "):
        r.expect(b"RETURN", "RETURN")
        r.sp()
        r.expect(b"(")
        opts: list[str] = []
        while not r.take(b")"):
            if opts or status is not None:
                r.sp()
            opt = r.keyword()
            if opt == "STATUS" and status is None:
                r.sp()
                status = _status_items(r)
            elif opt in LIST_RETURN_OPTIONS:
                opts.append(opt)
            else:
                raise r.fail(f"unknown return option {opt[:40]}")
        returns = tuple(opts) if opts or status is None else None
    return List(tag, reference, patterns, select, returns, status)


def _read_lsub(r: Reader, tag: str) -> Lsub:
    reference = r.mailbox()
    r.sp()
    return Lsub(tag, reference, r.mailbox(pattern=True))


def _status_items(r: Reader) -> tuple[str, ...]:
    return r.paren_list(lambda: _option(r, STATUS_ITEMS))


def _read_status(r: Reader, tag: str) -> Status:
    mailbox = r.mailbox()
    r.sp()
    return Status(tag, mailbox, _status_items(r))


def _read_append(r: Reader, tag: str) -> Append:
    mailbox = r.mailbox()
    messages = []
    while r.take(b" "):
        messages.append(_read_append_message(r))
    if not messages:
        raise r.fail("APPEND needs a message")
    first, *more = messages
    return Append(tag, mailbox, first.flags, first.internal_date, first.message, first.binary, tuple(more))


def _read_append_message(r: Reader) -> AppendMessage:
    flags = None
    date = None
    if r.peek() == b"(":
        flags = r.flag_list()
        r.sp()
    if r.peek() == b'"':
        date = r.date_time()
        r.sp()
    binary = r.peek() == b"~"
    return AppendMessage(flags, date, r.literal(binary=True), binary)


def _read_charset(r: Reader) -> str:
    raw = r.astring()
    if not raw.isascii():
        raise r.fail("bad charset name")
    return raw.decode("ascii")


def _read_search(r: Reader, tag: str, uid: bool) -> Search:
    returns = None
    charset = None
    if r.take(b"RETURN "):
        returns = _options(r, SEARCH_RETURN_OPTIONS)
        r.sp()
    if r.take(b"CHARSET "):
        charset = _read_charset(r)
        r.sp()
    return Search(tag, uid, charset, returns, search_mod.read_program(r))


def _read_fetch(r: Reader, tag: str, uid: bool) -> Fetch:
    seq = r.sequence_set()
    r.sp()
    macro, attrs = fetch_mod.read_attributes(r)
    changedsince = None
    vanished = False
    if r.take(b" "):
        r.expect(b"(")
        while True:
            mod = r.keyword()
            if mod == "CHANGEDSINCE" and changedsince is None:
                r.sp()
                changedsince = r.number64()
            elif mod == "VANISHED" and not vanished:
                vanished = True
            else:
                raise r.fail("unknown or repeated fetch modifier")
            if r.take(b")"):
                break
            r.sp()
    return Fetch(tag, uid, seq, macro, attrs, changedsince, vanished)


def _read_store(r: Reader, tag: str, uid: bool) -> Store:
    seq = r.sequence_set()
    r.sp()
    unchangedsince = None
    if r.take(b"("):
        r.expect(b"UNCHANGEDSINCE", "UNCHANGEDSINCE")
        r.sp()
        unchangedsince = r.number64()
        r.expect(b")")
        r.sp()
    mode = ""
    if r.peek() in (b"+", b"-"):
        mode = r.peek().decode()
        r.pos += 1
    r.expect(b"FLAGS", "FLAGS")
    silent = r.take(b".SILENT")
    r.sp()
    if r.peek() == b"(":
        flags = r.flag_list()
    else:
        items = [r.flag()]
        while r.take(b" "):
            items.append(r.flag())
        flags = tuple(items)
    return Store(tag, uid, seq, mode, silent, flags, unchangedsince)


def _read_copy(cls: type[Copy]) -> Callable[[Reader, str, bool], Copy]:
    def read(r: Reader, tag: str, uid: bool) -> Copy:
        seq = r.sequence_set()
        r.sp()
        return cls(tag, uid, seq, r.mailbox())

    return read


def _read_sort(r: Reader, tag: str, uid: bool) -> Sort:
    def criterion() -> tuple[bool, str]:
        reverse = r.take(b"REVERSE ")
        return reverse, _option(r, SORT_KEYS)

    criteria = r.paren_list(criterion)
    r.sp()
    charset = _read_charset(r)
    r.sp()
    return Sort(tag, uid, criteria, charset, search_mod.read_program(r))


def _read_thread(r: Reader, tag: str, uid: bool) -> Thread:
    algorithm = r.keyword()
    r.sp()
    charset = _read_charset(r)
    r.sp()
    return Thread(tag, uid, algorithm, charset, search_mod.read_program(r))


_UID_COMMANDS: dict[str, Callable[[Reader, str, bool], Command]] = {
    "SEARCH": _read_search,
    "FETCH": _read_fetch,
    "STORE": _read_store,
    "COPY": _read_copy(Copy),
    "MOVE": _read_copy(Move),
    "SORT": _read_sort,
    "THREAD": _read_thread,
}
_READERS: dict[str, Callable[..., Command]] = {
    "LOGIN": _read_login,
    "AUTHENTICATE": _read_authenticate,
    "COMPRESS": _read_compress,
    "ENABLE": _read_enable,
    "ID": _read_id,
    "SELECT": _read_select(Select),
    "EXAMINE": _read_select(Examine),
    "CREATE": _read_create,
    "DELETE": _read_mailbox_only(Delete),
    "SUBSCRIBE": _read_mailbox_only(Subscribe),
    "UNSUBSCRIBE": _read_mailbox_only(Unsubscribe),
    "GETQUOTAROOT": _read_mailbox_only(GetQuotaRoot),
    "GETQUOTA": _read_getquota,
    "RENAME": _read_rename,
    "LIST": _read_list,
    "LSUB": _read_lsub,
    "STATUS": _read_status,
    "APPEND": _read_append,
    **_UID_COMMANDS,
}
