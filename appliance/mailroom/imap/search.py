"""SEARCH: which messages match a search program (RFC 3501 6.4.4, RFC 4731 ESEARCH, RFC 5182
SEARCHRES, RFC 7162 MODSEQ, RFC 5032 OLDER/YOUNGER).

The session hands in one `MessageView` per message of the selected mailbox, in sequence order,
and a `SearchContext`; the keys come parsed from `protocol/search.py`:

    if not charset_supported(cmd.charset):  ->  NO [BADCHARSET (US-ASCII UTF-8)]
    matches = evaluate(cmd.keys, views, SearchContext(charset=cmd.charset, saved_uids=...))
    # or, the same: search(cmd.keys, views, charset=cmd.charset, saved_uids=...)
    numbers = [v.uid if cmd.uid else v.seq for v in matches]
    # plain SEARCH: responses.search(numbers, modseq=highest_modseq(matches) if mentions_modseq(...))
    # SEARCH RETURN (...): r = esearch_result(matches, cmd.return_options, uid=cmd.uid, ...)
    #   r.saved_uids is not None -> remember it for "$"; r.fields is not None ->
    #   responses.esearch(tag, uid=cmd.uid, **r.fields)

`evaluate` raises `SearchError` when a search string is not valid in the command's charset
(the session answers BAD).

Semantics chosen here:
- Strings match as case-insensitive substrings (Unicode case folding) of DECODED text: header
  values with their RFC 2047 encoded-words decoded (raw 8-bit headers read as UTF-8); bodies with
  base64/quoted-printable undone and text/* parts converted from their charset. BODY looks at
  every text/* part of a multipart (and at the headers and text of attached message/rfc822);
  TEXT is the decoded header plus BODY. Attachments that are not text are not searched.
- BEFORE/ON/SINCE compare the INTERNALDATE's date in `SearchContext.tz` (UTC by default).
  SENTBEFORE/SENTON/SENTSINCE use the date written in the Date: header, its time and zone
  disregarded (RFC 3501); without a readable Date: the INTERNALDATE's date stands in (as RFC 5256
  does for the sent date).
- Keys that need only what the view holds in memory (flags, UIDs, sequence numbers, modseq,
  RECENT) never call `data()`; `size` and `internaldate` are read only by the keys that need them.
  Within an AND, cheap keys run first, so `UNSEEN BODY x` reads only unseen messages.
- A message is parsed at most once per evaluation; `LazyMessage` (shared with sort and thread)
  holds the parse.
"""

from __future__ import annotations

import binascii
import codecs
import datetime as dt
import email.utils
import functools
import re
import time
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from .protocol import search as keys_mod
from .protocol.sequence import SequenceSet

SUPPORTED_CHARSETS = ("US-ASCII", "UTF-8")
SYSTEM_FLAGS = {
    "ANSWERED": "\\Answered",
    "DELETED": "\\Deleted",
    "DRAFT": "\\Draft",
    "FLAGGED": "\\Flagged",
    "SEEN": "\\Seen",
}
MAX_MIME_DEPTH = 20  # multipart nesting followed for BODY/TEXT
MAX_MIME_PARTS = 500  # parts looked at in one message
UTC = dt.UTC


class MessageView(Protocol):
    """One message as the session sees it. Everything but `data()` is cheap."""

    @property
    def seq(self) -> int: ...
    @property
    def uid(self) -> int: ...
    @property
    def flags(self) -> frozenset[str]:
        """System flags as "\\Seen", "\\Answered"...; keywords as stored."""
        ...

    @property
    def modseq(self) -> int: ...
    @property
    def size(self) -> int:
        """RFC822.SIZE (octets of the CRLF form)."""
        ...

    @property
    def internaldate(self) -> float:
        """INTERNALDATE, seconds since the epoch."""
        ...

    def data(self) -> bytes:
        """The whole message as stored (LF or CRLF line ends). May read the disk."""
        ...


V = TypeVar("V", bound=MessageView)


@dataclass(frozen=True, slots=True)
class SearchContext:
    """What the keys need beyond the messages.

    `max_seq`/`max_uid`: what `*` stands for in sequence sets and UID sets (the number of messages
    and the UID of the last one); None means "the largest among the views passed in".
    `recent_uids`: the \\Recent messages (RECENT, NEW, OLD). `saved_uids`: the SEARCHRES result
    `$` refers to, as UIDs (None: nothing saved, `$` matches nothing). `charset`: the CHARSET of
    the command (None is US-ASCII, with 8-bit strings taken as UTF-8). `tz`: the server's zone for
    BEFORE/ON/SINCE. `now`: the clock for OLDER/YOUNGER (None: time.time()).
    """

    max_seq: int | None = None
    max_uid: int | None = None
    recent_uids: frozenset[int] = frozenset()
    saved_uids: frozenset[int] | None = None
    charset: str | None = None
    tz: dt.tzinfo = UTC
    now: float | None = None


class SearchError(ValueError):
    """A search program that cannot be evaluated (a string not valid in its charset)."""


def charset_supported(charset: str | None) -> bool:
    """True for the CHARSETs SEARCH/SORT/THREAD accept (None = the default, US-ASCII)."""
    return charset is None or charset.upper() in SUPPORTED_CHARSETS


# ---------------------------------------------------------------------------------- evaluation
Predicate = Callable[[MessageView, "LazyMessage | None"], bool]
# Costs: what a key needs to look at. A program below HEADERS never builds a LazyMessage.
MEMORY, ATTRIBUTES, HEADERS, BODY = 0, 1, 2, 3


def evaluate(keys: Sequence[keys_mod.SearchKey], views: Iterable[V], ctx: SearchContext) -> list[V]:
    """The views matching all of `keys`, in the order given."""
    views = views if isinstance(views, Sequence) else list(views)
    if ctx.max_seq is None or ctx.max_uid is None:
        max_seq = max((v.seq for v in views), default=0) if ctx.max_seq is None else ctx.max_seq
        max_uid = max((v.uid for v in views), default=0) if ctx.max_uid is None else ctx.max_uid
        ctx = SearchContext(max_seq, max_uid, ctx.recent_uids, ctx.saved_uids, ctx.charset, ctx.tz, ctx.now)
    cost, pred = _Compiler(ctx).compile(keys_mod.And(tuple(keys)))
    if cost < HEADERS:
        return [v for v in views if pred(v, None)]
    return [v for v in views if pred(v, LazyMessage(v))]


def search(
    keys: Sequence[keys_mod.SearchKey],
    views: Iterable[V],
    *,
    saved_uids: Iterable[int] | None = None,
    recent_uids: Iterable[int] = (),
    charset: str | None = None,
    max_seq: int | None = None,
    max_uid: int | None = None,
) -> list[V]:
    """`evaluate` with the context given as keyword arguments."""
    saved = None if saved_uids is None else frozenset(saved_uids)
    ctx = SearchContext(max_seq, max_uid, frozenset(recent_uids), saved, charset)
    return evaluate(keys, views, ctx)


def mentions_modseq(keys: Iterable[keys_mod.SearchKey]) -> bool:
    """Whether MODSEQ appears anywhere in the program (RFC 7162 3.1.5: reply with (MODSEQ n))."""
    for key in keys:
        if isinstance(key, keys_mod.ModSeq):
            return True
        if isinstance(key, keys_mod.Not) and mentions_modseq((key.key,)):
            return True
        if isinstance(key, keys_mod.Or) and mentions_modseq((key.left, key.right)):
            return True
        if isinstance(key, keys_mod.And) and mentions_modseq(key.keys):
            return True
    return False


def highest_modseq(matches: Iterable[MessageView]) -> int | None:
    """The (MODSEQ n) of a SEARCH result: the highest modseq among the matches, None if none."""
    return max((v.modseq for v in matches), default=None)


@dataclass(frozen=True, slots=True)
class ESearchResult:
    """`fields`: keyword arguments for `responses.esearch(tag, uid=..., **fields)`, or None when
    no ESEARCH response is due (RETURN (SAVE) alone, RFC 5182 2.4). `saved_uids`: what "$" refers
    to from now on when SAVE was asked, else None."""

    fields: dict[str, object] | None
    saved_uids: frozenset[int] | None


def esearch_result(
    matches: Sequence[MessageView],
    options: Iterable[str],
    *,
    uid: bool,
    with_modseq: bool = False,
) -> ESearchResult:
    """Shape a result for `SEARCH RETURN (options)`: MIN, MAX, COUNT, ALL, SAVE.

    RETURN () means ALL (RFC 4731 3.1). SAVE with MIN and/or MAX but neither ALL nor COUNT saves
    only those messages (RFC 5182 2.1). With `with_modseq` (MODSEQ in the program) the MODSEQ is
    the highest of the messages reported: all of them, or only the MIN/MAX ones (RFC 7162 3.1.5).
    """
    opts = {o.upper() for o in options} or {"ALL"}
    number = (lambda v: v.uid) if uid else (lambda v: v.seq)
    lo = min(matches, key=number, default=None)
    hi = max(matches, key=number, default=None)
    only_ends = bool(opts & {"MIN", "MAX"}) and not opts & {"ALL", "COUNT"}
    reported: list[MessageView] = list(matches)
    if only_ends:
        reported = [v for v in ((lo if "MIN" in opts else None), (hi if "MAX" in opts else None)) if v]
    saved = frozenset(v.uid for v in reported) if "SAVE" in opts else None
    if not opts - {"SAVE"}:
        return ESearchResult(None, saved)
    fields: dict[str, object] = {}
    if "MIN" in opts and lo is not None:
        fields["minimum"] = number(lo)
    if "MAX" in opts and hi is not None:
        fields["maximum"] = number(hi)
    if "COUNT" in opts:
        fields["count"] = len(matches)
    if "ALL" in opts:
        fields["all_numbers"] = sorted(number(v) for v in matches)
    if with_modseq:
        modseq = highest_modseq(reported)
        if modseq is not None:
            fields["modseq"] = modseq
    return ESearchResult(fields, saved)


class _Compiler:
    def __init__(self, ctx: SearchContext) -> None:
        self.ctx = ctx
        self.lowered: dict[frozenset[str], frozenset[str]] = {}

    def compile(self, key: keys_mod.SearchKey) -> tuple[int, Predicate]:
        if isinstance(key, keys_mod.And):
            parts = sorted((self.compile(k) for k in key.keys), key=lambda cp: cp[0])
            if len(parts) == 1:
                return parts[0]
            preds = tuple(p for _, p in parts)

            def all_of(v: MessageView, m: LazyMessage | None) -> bool:
                return all(p(v, m) for p in preds)

            return (parts[-1][0] if parts else MEMORY), all_of
        if isinstance(key, keys_mod.Not):
            cost, inner = self.compile(key.key)
            return cost, lambda v, m: not inner(v, m)
        if isinstance(key, keys_mod.Or):
            a, b = sorted((self.compile(key.left), self.compile(key.right)), key=lambda cp: cp[0])
            pa, pb = a[1], b[1]
            return b[0], lambda v, m: pa(v, m) or pb(v, m)
        if isinstance(key, keys_mod.Sequence):
            return MEMORY, self._sequence(key)
        if isinstance(key, keys_mod.ModSeq):
            value = key.value
            return MEMORY, lambda v, m: v.modseq >= value
        if isinstance(key, keys_mod.Header):
            field = key.field.decode("latin-1").strip().lower()
            needle = self._needle(key.value)

            def header(v: MessageView, m: LazyMessage | None) -> bool:
                assert m is not None
                values = m.decoded(field)
                if not needle:
                    return bool(values)
                return any(needle in value.casefold() for value in values)

            return HEADERS, header
        return self._key(key)

    def _key(self, key: keys_mod.Key) -> tuple[int, Predicate]:
        name = key.name
        ctx = self.ctx
        if name == "ALL":
            return MEMORY, lambda v, m: True
        if name in SYSTEM_FLAGS:
            flag = SYSTEM_FLAGS[name]
            return MEMORY, lambda v, m: flag in v.flags
        if name.startswith("UN") and name[2:] in SYSTEM_FLAGS:
            flag = SYSTEM_FLAGS[name[2:]]
            return MEMORY, lambda v, m: flag not in v.flags
        recent = ctx.recent_uids
        if name == "RECENT":
            return MEMORY, lambda v, m: v.uid in recent
        if name == "OLD":
            return MEMORY, lambda v, m: v.uid not in recent
        if name == "NEW":
            return MEMORY, lambda v, m: v.uid in recent and "\\Seen" not in v.flags
        if name in ("KEYWORD", "UNKEYWORD"):
            word = key.args[0].lower()
            lowered = self._lowered
            if name == "KEYWORD":
                return MEMORY, lambda v, m: word in lowered(v.flags)
            return MEMORY, lambda v, m: word not in lowered(v.flags)
        if name == "LARGER":
            n = key.args[0]
            return ATTRIBUTES, lambda v, m: v.size > n
        if name == "SMALLER":
            n = key.args[0]
            return ATTRIBUTES, lambda v, m: v.size < n
        if name in ("BEFORE", "ON", "SINCE"):
            start = _day_start(key.args[0], ctx.tz)
            end = _day_start(key.args[0] + dt.timedelta(days=1), ctx.tz)
            if name == "BEFORE":
                return ATTRIBUTES, lambda v, m: v.internaldate < start
            if name == "ON":
                return ATTRIBUTES, lambda v, m: start <= v.internaldate < end
            return ATTRIBUTES, lambda v, m: v.internaldate >= start
        if name in ("SENTBEFORE", "SENTON", "SENTSINCE"):
            day = key.args[0]
            tz = ctx.tz

            def sent(v: MessageView, m: LazyMessage | None) -> bool:
                assert m is not None
                d = m.sent_day()
                if d is None:
                    d = dt.datetime.fromtimestamp(v.internaldate, tz).date()
                if name == "SENTBEFORE":
                    return d < day
                if name == "SENTON":
                    return d == day
                return d >= day

            return HEADERS, sent
        if name in ("OLDER", "YOUNGER"):
            seconds = key.args[0]
            now = time.time() if ctx.now is None else ctx.now
            if name == "OLDER":
                return ATTRIBUTES, lambda v, m: now - v.internaldate >= seconds
            return ATTRIBUTES, lambda v, m: now - v.internaldate <= seconds
        if name in ("FROM", "TO", "CC", "BCC", "SUBJECT"):
            field = name.lower()
            needle = self._needle(key.args[0])
            return HEADERS, lambda v, m: any(needle in s.casefold() for s in m.decoded(field))
        if name == "BODY":
            needle = self._needle(key.args[0])
            return BODY, lambda v, m: needle in m.body_text()
        if name == "TEXT":
            needle = self._needle(key.args[0])
            return BODY, lambda v, m: needle in m.header_text() or needle in m.body_text()
        raise SearchError(f"unsupported search key {name}")

    def _lowered(self, flags: frozenset[str]) -> frozenset[str]:
        lowered = self.lowered.get(flags)
        if lowered is None:
            lowered = self.lowered[flags] = frozenset(f.lower() for f in flags)
        return lowered

    def _sequence(self, key: keys_mod.Sequence) -> Predicate:
        if key.set.saved:
            saved = self.ctx.saved_uids or frozenset()
            return lambda v, m: v.uid in saved
        largest = (self.ctx.max_uid if key.uid else self.ctx.max_seq) or 0
        starts, ends = _intervals(key.set, largest)
        if key.uid:
            return lambda v, m: _in_intervals(v.uid, starts, ends)
        return lambda v, m: _in_intervals(v.seq, starts, ends)

    def _needle(self, raw: bytes) -> str:
        charset = (self.ctx.charset or "UTF-8").upper()
        codec = "ascii" if charset == "US-ASCII" else "utf-8"
        try:
            text = raw.decode(codec)
        except UnicodeDecodeError as exc:
            raise SearchError(f"search string is not valid {charset}") from exc
        return text.casefold()


def _intervals(seqset: SequenceSet, largest: int) -> tuple[list[int], list[int]]:
    """The set as sorted, merged [start, end] intervals (`*` is `largest`)."""
    pairs = []
    for a, b in seqset.ranges:
        lo = largest if a is None else a
        hi = largest if b is None else b
        pairs.append((min(lo, hi), max(lo, hi)))
    pairs.sort()
    starts: list[int] = []
    ends: list[int] = []
    for lo, hi in pairs:
        if ends and lo <= ends[-1] + 1:
            ends[-1] = max(ends[-1], hi)
        else:
            starts.append(lo)
            ends.append(hi)
    return starts, ends


def _in_intervals(n: int, starts: list[int], ends: list[int]) -> bool:
    i = bisect_right(starts, n) - 1
    return i >= 0 and n <= ends[i]


def _day_start(day: dt.date, tz: dt.tzinfo) -> float:
    return dt.datetime.combine(day, dt.time(), tzinfo=tz).timestamp()


# ---------------------------------------------------------------------------------- messages
class LazyMessage:
    """One message parsed on demand: header fields, decoded values, body text. Never raises on
    malformed input; what cannot be decoded is skipped or replaced. It keeps the header block and
    what it derived, never the body's octets, so many of them can be alive at once."""

    __slots__ = ("_body", "_decoded", "_fields", "_header", "_header_text", "_headers", "view")

    def __init__(self, view: MessageView) -> None:
        self.view = view
        self._header: bytes | None = None
        self._fields: list[tuple[str, bytes]] | None = None
        self._headers: dict[str, list[bytes]] | None = None
        self._decoded: dict[str, list[str]] = {}
        self._body: str | None = None
        self._header_text: str | None = None

    def fields(self) -> list[tuple[str, bytes]]:
        """The header fields in order, as `parse_headers` gives them."""
        if self._fields is None:
            if self._header is None:
                self._header = split_message(self.view.data())[0]
            self._fields = parse_headers(self._header)
        return self._fields

    def headers(self) -> dict[str, list[bytes]]:
        """Field name (lower case) -> raw unfolded values, in order."""
        if self._headers is None:
            self._headers = {}
            for name, value in self.fields():
                self._headers.setdefault(name, []).append(value)
        return self._headers

    def raw(self, name: str) -> bytes | None:
        """The first `name` field's raw value."""
        values = self.headers().get(name)
        return values[0] if values else None

    def decoded(self, name: str) -> list[str]:
        """Every `name` field's value, RFC 2047 decoded."""
        values = self._decoded.get(name)
        if values is None:
            values = self._decoded[name] = [decode_header(v) for v in self.headers().get(name, ())]
        return values

    def first(self, name: str) -> str:
        values = self.decoded(name)
        return values[0] if values else ""

    def sent_day(self) -> dt.date | None:
        """The date written in the Date: field (its own zone), None when unreadable."""
        parsed = _parse_date(self.raw("date"))
        return None if parsed is None else parsed[0]

    def sent_time(self) -> float:
        """The sent date as epoch seconds (RFC 5256 2.2): Date: in UTC, else the INTERNALDATE."""
        parsed = _parse_date(self.raw("date"))
        return self.view.internaldate if parsed is None else parsed[1]

    def header_text(self) -> str:
        """The whole header, decoded and case folded."""
        if self._header_text is None:
            lines = [f"{name}: {decode_header(value)}" for name, value in self.fields()]
            self._header_text = "\n".join(lines).casefold()
        return self._header_text

    def body_text(self) -> str:
        """The text of every text/* part, decoded and case folded."""
        if self._body is None:
            header, body = split_message(self.view.data())
            if self._header is None:
                self._header = header
            texts = _texts(self.fields(), body, 0, [MAX_MIME_PARTS], "text/plain")
            self._body = "\n".join(texts).casefold()
        return self._body


_HEADER_END = re.compile(rb"\r?\n\r?\n")


def split_message(raw: bytes) -> tuple[bytes, bytes]:
    """(header block, body) at the first empty line; no empty line: all header."""
    if raw.startswith((b"\n", b"\r\n")):
        return b"", raw[2 if raw.startswith(b"\r\n") else 1 :]
    m = _HEADER_END.search(raw)
    if m is None:
        return raw, b""
    return raw[: m.start()], raw[m.end() :]


def parse_headers(block: bytes) -> list[tuple[str, bytes]]:
    """Header fields as (lower-case name, unfolded value without the leading blank)."""
    fields: list[tuple[str, list[bytes]]] = []
    for raw_line in block.split(b"\n"):
        line = raw_line[:-1] if raw_line.endswith(b"\r") else raw_line
        if line[:1] in (b" ", b"\t"):
            if fields:
                fields[-1][1].append(line)
            continue
        name, colon, value = line.partition(b":")
        name = name.rstrip(b" \t")
        if not colon or not name or b" " in name:
            fields.append(("", []))  # not a field (an mbox From_ line, garbage): skip its folds
            continue
        fields.append((name.decode("latin-1").lower(), [value.lstrip(b" \t")]))
    return [(name, b"".join(parts).rstrip(b" \t")) for name, parts in fields if name]


_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_BLOCKED_CODECS = frozenset(
    {"unicode_escape", "raw_unicode_escape", "punycode", "idna", "undefined", "mbcs", "oem"}
)


def decode_header(raw: bytes) -> str:
    """A raw field value as text: 8-bit octets as UTF-8 (else Latin-1), then RFC 2047
    encoded-words decoded. Adjacent encoded-words in one charset are joined before decoding (a
    character split across two words survives); unknown charsets keep the word as written."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    if "=?" not in text:
        return text
    out: list[str] = []
    pending: tuple[str, bytearray, list[str]] | None = None

    def flush() -> None:
        nonlocal pending
        if pending is not None:
            charset, data, raw_words = pending
            decoded = decode_charset(bytes(data), charset)
            out.append("".join(raw_words) if decoded is None else decoded)
            pending = None

    pos = 0
    for m in _ENCODED_WORD.finditer(text):
        between = text[pos : m.start()]
        if pending is None or between.strip(" \t\r\n"):
            flush()
            out.append(between)
        pos = m.end()
        charset = m.group(1).split("*", 1)[0].lower()  # RFC 2231 language suffix
        data = _word_bytes(m.group(2), m.group(3))
        if data is None:
            flush()
            out.append(m.group(0))
        elif pending is not None and pending[0] == charset:
            pending[1].extend(data)
            pending[2].append(m.group(0))
        else:
            flush()
            pending = (charset, bytearray(data), [m.group(0)])
    flush()
    out.append(text[pos:])
    return "".join(out)


def _word_bytes(encoding: str, text: str) -> bytes | None:
    try:
        raw = text.encode("ascii")
    except UnicodeEncodeError:
        return None
    if encoding in "bB":
        return decode_base64(raw)
    return binascii.a2b_qp(raw, header=True)


def decode_base64(raw: bytes) -> bytes:
    """Lenient base64: characters outside the alphabet ignored, missing padding supplied."""
    data = re.sub(rb"[^A-Za-z0-9+/]", b"", raw)
    extra = len(data) % 4
    if extra == 1:
        data = data[:-1]
    elif extra:
        data += b"=" * (4 - extra)
    try:
        return binascii.a2b_base64(data)
    except binascii.Error:
        return b""


@functools.lru_cache(maxsize=256)
def _codec(charset: str) -> str | None:
    try:
        info = codecs.lookup(charset)
    except (LookupError, ValueError):
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name.replace("-", "_") in _BLOCKED_CODECS:
        return None
    return info.name


def decode_charset(data: bytes, charset: str | None) -> str | None:
    """`data` in `charset` as text (bad octets replaced); None when the charset is unknown."""
    codec = _codec((charset or "us-ascii").strip().strip('"').lower()[:64])
    if codec is None:
        return None
    if codec == "ascii":  # us-ascii labels on UTF-8 text are common; nothing is lost this way
        codec = "utf-8"
    try:
        return data.decode(codec, "replace")
    except (UnicodeError, LookupError, ValueError):
        return None


_PARAM = re.compile(r';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;\s]*)')


def content_type(value: bytes | None, default: str = "text/plain") -> tuple[str, dict[str, str]]:
    """(type/subtype lower case, parameters with lower-case names); RFC 2045 default if absent."""
    if value is None:
        return default, {}
    text = value[:8192].decode("latin-1")
    main = text.split(";", 1)[0].strip().lower()
    if "/" not in main:
        main = default
    params = {}
    for m in _PARAM.finditer(text):
        v = m.group(2)
        if v.startswith('"'):
            v = re.sub(r"\\(.)", r"\1", v[1:-1])
        params.setdefault(m.group(1).lower(), v)
    return main, params


def decode_transfer(body: bytes, encoding: bytes | None) -> bytes:
    cte = (encoding or b"").strip().lower()
    if cte == b"base64":
        return decode_base64(body)
    if cte == b"quoted-printable":
        return binascii.a2b_qp(body)
    return body


def _texts(
    fields: list[tuple[str, bytes]], body: bytes, depth: int, budget: list[int], default: str
) -> Iterator[str]:
    budget[0] -= 1
    if budget[0] < 0:
        return
    heads = dict(reversed(fields))  # the first occurrence wins
    ctype, params = content_type(heads.get("content-type"), default)
    if ctype.startswith("multipart/"):
        boundary = params.get("boundary", "")
        if not boundary or depth >= MAX_MIME_DEPTH:
            return
        child_default = "message/rfc822" if ctype == "multipart/digest" else "text/plain"
        for part in split_multipart(body, boundary.encode("latin-1", "replace")):
            header, part_body = split_message(part)
            yield from _texts(parse_headers(header), part_body, depth + 1, budget, child_default)
            if budget[0] < 0:
                return
    elif ctype in ("message/rfc822", "message/global"):
        if depth >= MAX_MIME_DEPTH:
            return
        inner = decode_transfer(body, heads.get("content-transfer-encoding"))
        header, inner_body = split_message(inner)
        inner_fields = parse_headers(header)
        yield "\n".join(f"{name}: {decode_header(value)}" for name, value in inner_fields)
        yield from _texts(inner_fields, inner_body, depth + 1, budget, "text/plain")
    elif ctype.startswith("text/"):
        data = decode_transfer(body, heads.get("content-transfer-encoding"))
        text = decode_charset(data, params.get("charset"))
        yield data.decode("utf-8", "replace") if text is None else text


def split_multipart(body: bytes, boundary: bytes) -> list[bytes]:
    """The parts between `--boundary` lines (RFC 2046 5.1.1); preamble and epilogue dropped."""
    if not boundary or len(boundary) > 200:
        return []
    delimiter = re.compile(rb"(?m)^--" + re.escape(boundary) + rb"(--)?[ \t]*\r?$")
    parts = []
    start = None
    for m in delimiter.finditer(body):
        if start is not None:
            end = m.start()
            if body[end - 2 : end] == b"\r\n":
                end -= 2
            elif body[end - 1 : end] == b"\n":
                end -= 1
            parts.append(body[start:end])
        if m.group(1):
            return parts
        nl = body.find(b"\n", m.end())
        start = len(body) if nl < 0 else nl + 1
        if len(parts) >= MAX_MIME_PARTS:
            return parts
    if start is not None:
        parts.append(body[start:])
    return parts


def _parse_date(raw: bytes | None) -> tuple[dt.date, float] | None:
    """A Date: value as (the date as written, epoch seconds); None when unreadable."""
    if raw is None:
        return None
    try:
        parts = email.utils.parsedate_tz(raw.decode("latin-1")[:200])
        if parts is None:
            return None
        year, month, day, hour, minute, second = parts[:6]
        written = dt.date(year, month, day)
        offset = parts[9] or 0
        zone = dt.timezone(dt.timedelta(seconds=offset if abs(offset) < 86400 else 0))
        stamp = dt.datetime(year, month, day, tzinfo=zone) + dt.timedelta(
            hours=hour, minutes=minute, seconds=second
        )
        return written, stamp.timestamp()
    except (ValueError, TypeError, OverflowError, IndexError):
        return None
