"""FETCH attributes (RFC 3501 6.4.5 and 9 fetch-att; RFC 3516 BINARY; RFC 7162 MODSEQ)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from . import lexer
from .lexer import Reader

SIMPLE = frozenset(
    [
        "ENVELOPE",
        "FLAGS",
        "INTERNALDATE",
        "RFC822",
        "RFC822.HEADER",
        "RFC822.SIZE",
        "RFC822.TEXT",
        "BODY",
        "BODYSTRUCTURE",
        "UID",
        "MODSEQ",
    ]
)
MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
SECTION_TEXTS = ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME")
_WORD = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.")


@dataclass(frozen=True, slots=True)
class Attr:
    """An attribute without section: FLAGS, UID, ENVELOPE, RFC822.SIZE, ..."""

    name: str


@dataclass(frozen=True, slots=True)
class Section:
    """BODY[...], BODY.PEEK[...], BINARY[...], BINARY.PEEK[...] or BINARY.SIZE[...].

    `kind` is BODY, BINARY or BINARY.SIZE; `part` the part numbers (empty: the whole
    message); `text` one of SECTION_TEXTS or None; `fields` the header names of
    HEADER.FIELDS[.NOT]; `partial` the `<origin.length>`.
    """

    kind: str = "BODY"
    peek: bool = False
    part: tuple[int, ...] = ()
    text: str | None = None
    fields: tuple[str, ...] = ()
    partial: tuple[int, int] | None = None

    def section_bytes(self) -> bytes:
        out = ".".join(str(p) for p in self.part)
        if self.text:
            out = f"{out}.{self.text}" if out else self.text
        spec = out.encode("ascii")
        if self.fields:
            spec += b" (" + b" ".join(lexer.astring(f.encode("ascii")) for f in self.fields) + b")"
        return b"[" + spec + b"]"

    def to_bytes(self) -> bytes:
        name = self.kind + (".PEEK" if self.peek else "")
        out = name.encode("ascii") + self.section_bytes()
        if self.partial:
            out += b"<%d.%d>" % self.partial
        return out

    def response_name(self) -> bytes:
        """The item name in the FETCH response: no .PEEK, only the origin of a partial (7.4.2)."""
        return _response_name(self)


@functools.lru_cache(maxsize=256)  # written once per message fetched: the same few sections
def _response_name(section: Section) -> bytes:
    out = section.kind.encode("ascii") + section.section_bytes()
    if section.partial:
        out += b"<%d>" % section.partial[0]
    return out


FetchAttr = Attr | Section


def read_attributes(r: Reader) -> tuple[str | None, tuple[FetchAttr, ...]]:
    """The macro (ALL/FAST/FULL) or None, and the attributes (empty for a macro)."""
    if r.peek() == b"(":
        return None, r.paren_list(lambda: read_attr(r))
    start = r.pos
    word = r._run(_WORD).decode("ascii").upper()
    if word in MACROS and r.peek() in (b" ", b"\r"):
        return word, ()
    r.pos = start
    return None, (read_attr(r),)


def read_attr(r: Reader) -> FetchAttr:
    name = r._run(_WORD).decode("ascii").upper()
    if r.peek() != b"[":
        if name in SIMPLE:
            return Attr(name)
        raise r.fail(f"unknown fetch attribute {name[:40]}")
    if name not in ("BODY", "BODY.PEEK", "BINARY", "BINARY.PEEK", "BINARY.SIZE"):
        raise r.fail("unexpected section")
    peek = name.endswith(".PEEK")
    kind = name.removesuffix(".PEEK")
    r.expect(b"[")
    part: list[int] = []
    text = None
    fields: tuple[str, ...] = ()
    while r.peek().isdigit():
        part.append(r.number(nonzero=True))
        if not r.take(b"."):
            break
        if not r.peek().isdigit():
            text = r._run(_WORD).decode("ascii").upper()
            if not text:
                raise r.fail("bad section")
            break
    else:
        if r.peek() != b"]":
            text = r._run(_WORD).decode("ascii").upper()
    if text is not None:
        if kind != "BODY" or text not in SECTION_TEXTS or (text == "MIME" and not part):
            raise r.fail("bad section text")
        if text.startswith("HEADER.FIELDS"):
            r.sp()
            fields = r.paren_list(lambda: _field_name(r))
    r.expect(b"]")
    partial = None
    if r.take(b"<"):
        if kind == "BINARY.SIZE":
            raise r.fail("BINARY.SIZE takes no partial")
        origin = r.number()
        r.expect(b".")
        partial = (origin, r.number(nonzero=True))
        r.expect(b">")
    return Section(kind, peek, tuple(part), text, fields, partial)


def _field_name(r: Reader) -> str:
    raw = r.astring()
    if not raw or any(c <= 0x20 or c >= 0x7F or c == 0x3A for c in raw):
        raise r.fail("bad header field name")
    return raw.decode("ascii")


def write_attributes(macro: str | None, attributes: tuple[FetchAttr, ...]) -> bytes:
    if macro:
        return macro.encode("ascii")
    return b"(" + b" ".join(write_attr(a) for a in attributes) + b")"


def write_attr(attr: FetchAttr) -> bytes:
    return attr.name.encode("ascii") if isinstance(attr, Attr) else attr.to_bytes()


def expand(macro: str | None, attributes: tuple[FetchAttr, ...]) -> tuple[FetchAttr, ...]:
    return tuple(Attr(n) for n in MACROS[macro]) if macro else attributes
