"""Server responses as exact octets (RFC 3501 7 and 9, and the extensions' response syntax).

Values are written by `value()`: None → NIL, int → number, `Atom` → as is, str/bytes → a quoted
string when that is possible and short, else a literal, `Literal` → always a literal (a literal8
when it contains NUL, RFC 3516 4.3), lists/tuples → parenthesized lists, datetimes → date-time.
Mailbox names are written in modified UTF-7 through `store.names`, or as UTF-8 with `utf8`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ...store import names
from . import lexer
from .sequence import SequenceSet

DELIMITER = names.SEPARATOR
LONG_STRING = 1000  # longer strings go as literals


class Atom(str):
    """Written as is: flags, keywords, capability names, `\\HasNoChildren`."""


@dataclass(frozen=True, slots=True)
class Literal:
    data: bytes


def string(data: str | bytes, *, utf8: bool = False) -> bytes:
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    if lexer.can_quote(data, utf8=utf8, limit=LONG_STRING):
        return lexer.quoted(data)
    return lexer.literal(data)


def literal(data: bytes) -> bytes:
    if b"\0" in data:
        return b"~" + lexer.literal(data)
    return lexer.literal(data)


def value(v: object, *, utf8: bool = False) -> bytes:
    if v is None:
        return b"NIL"
    if isinstance(v, Atom):
        return v.encode("ascii")
    if isinstance(v, bool):
        raise TypeError("booleans have no IMAP form")
    if isinstance(v, int):
        if v < 0:
            raise ValueError("IMAP numbers are unsigned")
        return b"%d" % v
    if isinstance(v, (str, bytes)):
        return string(v, utf8=utf8)
    if isinstance(v, Literal):
        return literal(v.data)
    if isinstance(v, dt.datetime):
        return lexer.date_time(v)
    if isinstance(v, SequenceSet):
        return v.to_str().encode("ascii")
    if isinstance(v, (list, tuple)):
        return b"(" + b" ".join(value(x, utf8=utf8) for x in v) + b")"
    raise TypeError(f"no IMAP form for {type(v).__name__}")


def mailbox(name: str, *, utf8: bool = False) -> bytes:
    """A mailbox name in a response: modified UTF-7, or UTF-8 after ENABLE UTF8=ACCEPT."""
    if utf8:
        return lexer.astring(name.encode("utf-8"), utf8=True)
    return lexer.astring(names.encode(name).encode("ascii"))


def _text(text: str) -> bytes:
    """Human-readable text: one line, no CR/LF (RFC 3501 9, text)."""
    if not text:
        return b"."
    if "\r" in text or "\n" in text or "\0" in text:
        text = text.replace("\r", " ").replace("\n", " ").replace("\0", " ")
    return text.encode("utf-8", "replace")


def uid_set(uids: Iterable[int]) -> str:
    """Sorted, compressed `1:3,7` form of a set of numbers (RFC 4315 uid-set)."""
    ordered = sorted(set(uids))
    if not ordered:
        raise ValueError("empty set")
    parts: list[str] = []
    start = prev = ordered[0]
    for n in [*ordered[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        parts.append(str(start) if start == prev else f"{start}:{prev}")
        if n is not None:
            start = prev = n
    return ",".join(parts)


def code(name: str, *args: object) -> bytes:
    """A response code: code("UIDNEXT", 5), code("APPENDUID", 7, 3), code("TRYCREATE"),
    code("PERMANENTFLAGS", [Atom("\\\\Seen")]), code("COPYUID", 7, "1:3", "10:12")."""
    out = name.encode("ascii")
    for arg in args:
        out += b" " + value(Atom(arg) if isinstance(arg, str) else arg)
    return out


def tagged(tag: str, status: str, text: str, response_code: bytes | None = None) -> bytes:
    """`tag OK|NO|BAD [code] text` (RFC 3501 7.1)."""
    if status not in ("OK", "NO", "BAD"):
        raise ValueError(f"bad tagged status {status}")
    return _status_line(tag.encode("ascii"), status, text, response_code)


def untagged_status(status: str, text: str, response_code: bytes | None = None) -> bytes:
    """`* OK|NO|BAD|PREAUTH|BYE [code] text`."""
    if status not in ("OK", "NO", "BAD", "PREAUTH", "BYE"):
        raise ValueError(f"bad untagged status {status}")
    return _status_line(b"*", status, text, response_code)


def _status_line(prefix: bytes, status: str, text: str, response_code: bytes | None) -> bytes:
    out = prefix + b" " + status.encode("ascii") + b" "
    if response_code:
        out += b"[" + response_code + b"] "
    return out + _text(text) + b"\r\n"


def continuation(text: str = "Ready") -> bytes:
    return b"+ " + _text(text) + b"\r\n"


def continuation_data(data: bytes) -> bytes:
    """A SASL challenge: `+ base64` (RFC 3501 7.5); data is already base64."""
    return b"+ " + data + b"\r\n"


def untagged(*parts: object, utf8: bool = False) -> bytes:
    """`* part part ...`: Atoms and numbers as they are, other values by `value()`."""
    return b"* " + b" ".join(value(p, utf8=utf8) for p in parts) + b"\r\n"


def capability(caps: Iterable[str]) -> bytes:
    return untagged(Atom("CAPABILITY"), *(Atom(c) for c in caps))


def flags(flag_names: Iterable[str]) -> bytes:
    return untagged(Atom("FLAGS"), [Atom(f) for f in flag_names])


def exists(n: int) -> bytes:
    return b"* %d EXISTS\r\n" % n


def recent(n: int) -> bytes:
    return b"* %d RECENT\r\n" % n


def expunge(seq: int) -> bytes:
    return b"* %d EXPUNGE\r\n" % seq


def vanished(uids: Iterable[int], *, earlier: bool = False) -> bytes:
    """RFC 7162 3.2.10."""
    return b"* VANISHED " + (b"(EARLIER) " if earlier else b"") + uid_set(uids).encode() + b"\r\n"


def fetch(seq: int, items: Sequence[tuple[str | bytes, object]], *, utf8: bool = False) -> bytes:
    """`* seq FETCH (name value ...)`. Body data (BODY[...], BINARY[...], RFC822*) given as
    bytes always goes as a literal; names from `fetch.Section.response_name()` are bytes."""
    out = []
    for name, item in items:
        bname = name.encode("ascii") if isinstance(name, str) else name
        body = isinstance(item, bytes) and bname.startswith((b"BODY[", b"BINARY[", b"RFC822"))
        out.append(bname + b" " + value(Literal(item) if body else item, utf8=utf8))
    return b"* %d FETCH (" % seq + b" ".join(out) + b")\r\n"


def list_response(
    name: str,
    attributes: Iterable[str] = (),
    *,
    kind: str = "LIST",
    delimiter: str | None = DELIMITER,
    extended: Sequence[tuple[str, object]] = (),
    utf8: bool = False,
) -> bytes:
    """`* LIST (\\HasNoChildren) "." name [extended items]` (RFC 3501 7.2.2, RFC 5258 3)."""
    out = b"* " + kind.encode("ascii") + b" (" + " ".join(attributes).encode("ascii") + b") "
    out += (b"NIL" if delimiter is None else lexer.quoted(delimiter.encode("ascii"))) + b" "
    out += mailbox(name, utf8=utf8)
    if extended:
        out += b" (" + b" ".join(lexer.quoted(k.encode("ascii")) + b" " + value(v) for k, v in extended)
        out += b")"
    return out + b"\r\n"


def status(name: str, items: Mapping[str, int], *, utf8: bool = False) -> bytes:
    """`* STATUS name (MESSAGES 3 UNSEEN 1)` (RFC 3501 7.2.4)."""
    pairs = b" ".join(k.encode("ascii") + b" %d" % v for k, v in items.items())
    return b"* STATUS " + mailbox(name, utf8=utf8) + b" (" + pairs + b")\r\n"


def search(numbers: Iterable[int], *, modseq: int | None = None) -> bytes:
    """`* SEARCH 2 3 7` with the (MODSEQ n) of RFC 7162 3.1.5."""
    out = b"* SEARCH" + b"".join(b" %d" % n for n in numbers)
    if modseq is not None:
        out += b" (MODSEQ %d)" % modseq
    return out + b"\r\n"


def esearch(
    tag: str | None,
    *,
    uid: bool = False,
    minimum: int | None = None,
    maximum: int | None = None,
    count: int | None = None,
    all_numbers: Iterable[int] | None = None,
    modseq: int | None = None,
) -> bytes:
    """`* ESEARCH (TAG "a1") UID MIN 1 MAX 9 COUNT 4 ALL 1:3,9` (RFC 4731 3.1); MIN, MAX and ALL
    are left out when nothing matched, COUNT 0 is not."""
    out = b"* ESEARCH"
    if tag is not None:
        out += b" (TAG " + lexer.quoted(tag.encode("ascii")) + b")"
    if uid:
        out += b" UID"
    if minimum is not None:
        out += b" MIN %d" % minimum
    if maximum is not None:
        out += b" MAX %d" % maximum
    if count is not None:
        out += b" COUNT %d" % count
    if all_numbers is not None:
        numbers = list(all_numbers)
        if numbers:
            out += b" ALL " + uid_set(numbers).encode("ascii")
    if modseq is not None:
        out += b" MODSEQ %d" % modseq
    return out + b"\r\n"


def sort(numbers: Iterable[int]) -> bytes:
    return b"* SORT" + b"".join(b" %d" % n for n in numbers) + b"\r\n"


@dataclass(frozen=True, slots=True)
class ThreadNode:
    """A message (or None for a missing parent) and its replies (RFC 5256 4)."""

    number: int | None
    children: tuple[ThreadNode, ...] = ()


def thread(roots: Iterable[ThreadNode]) -> bytes:
    """`* THREAD (2)(3 6 (4 23)(44 7 96))`. Iterative: a thread may be thousands deep."""
    out: list[str] = []
    stack: list[str | ThreadNode] = []
    for root in reversed(list(roots)):
        stack += [")", root, "("]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
            continue
        parts: list[str] = []
        node = item
        while node.number is not None:  # a chain of single replies is written flat
            parts.append(str(node.number))
            if len(node.children) != 1:
                break
            node = node.children[0]
        out.append(" ".join(parts))
        if parts and node.children:
            out.append(" ")
        for child in reversed(node.children):
            stack += [")", child, "("]
    return b"* THREAD " + "".join(out).encode("ascii") + b"\r\n"


def namespace(
    personal: Sequence[tuple[str, str]] | None = (("", DELIMITER),),
    other: Sequence[tuple[str, str]] | None = None,
    shared: Sequence[tuple[str, str]] | None = None,
) -> bytes:
    """`* NAMESPACE (("" ".")) NIL NIL` (RFC 2342 5)."""

    def group(g: Sequence[tuple[str, str]] | None) -> bytes:
        if g is None:
            return b"NIL"
        inner = b"".join(b"(" + mailbox(p) + b" " + lexer.quoted(d.encode()) + b")" for p, d in g)
        return b"(" + inner + b")"

    return b"* NAMESPACE " + group(personal) + b" " + group(other) + b" " + group(shared) + b"\r\n"


def id_response(fields: Mapping[str, str | None] | None) -> bytes:
    """`* ID ("name" "Mailroom")` or `* ID NIL` (RFC 2971 3.2)."""
    if not fields:
        return b"* ID NIL\r\n"
    items = [x for k, v in fields.items() for x in (k, v)]
    return untagged(Atom("ID"), items)


def enabled(caps: Iterable[str]) -> bytes:
    return b"* ENABLED" + b"".join(b" " + c.encode("ascii") for c in caps) + b"\r\n"


def quota(root: str, resources: Sequence[tuple[str, int, int]]) -> bytes:
    """`* QUOTA "" (STORAGE 10 512)`: (resource, usage, limit) triples (RFC 9208 5.1)."""
    inner = b" ".join(b"%s %d %d" % (r.encode("ascii"), u, lim) for r, u, lim in resources)
    return b"* QUOTA " + lexer.astring(root.encode()) + b" (" + inner + b")\r\n"


def quotaroot(name: str, roots: Iterable[str]) -> bytes:
    out = b"* QUOTAROOT " + mailbox(name)
    return out + b"".join(b" " + lexer.astring(r.encode()) for r in roots) + b"\r\n"
