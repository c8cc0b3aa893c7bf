"""Search keys (RFC 3501 6.4.4 and 9 search-key; RFC 7162 3.1.5 MODSEQ; RFC 5032 OLDER/YOUNGER).

A search program is a tuple of keys, all of which must match. Strings stay bytes: their charset
is the CHARSET of the command, which the session applies.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from . import lexer
from .lexer import Reader
from .sequence import SequenceSet

FLAG_KEYS = frozenset(
    [
        "ALL",
        "ANSWERED",
        "DELETED",
        "DRAFT",
        "FLAGGED",
        "NEW",
        "OLD",
        "RECENT",
        "SEEN",
        "UNANSWERED",
        "UNDELETED",
        "UNDRAFT",
        "UNFLAGGED",
        "UNSEEN",
    ]
)
STRING_KEYS = frozenset(["BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO"])
KEYWORD_KEYS = frozenset({"KEYWORD", "UNKEYWORD"})
DATE_KEYS = frozenset(["BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"])
NUMBER_KEYS = frozenset({"LARGER", "SMALLER"})
INTERVAL_KEYS = frozenset({"OLDER", "YOUNGER"})  # RFC 5032, WITHIN
ENTRY_TYPES = ("PRIV", "SHARED", "ALL")


@dataclass(frozen=True, slots=True)
class Key:
    """A leaf key: `name` upper case, `args` by kind (bytes, str, date, int)."""

    name: str
    args: tuple = ()


@dataclass(frozen=True, slots=True)
class ModSeq:
    """MODSEQ [entry-name entry-type-req] mod-sequence-valzer (RFC 7162 3.1.5)."""

    value: int
    entry: bytes | None = None
    entry_type: str | None = None


@dataclass(frozen=True, slots=True)
class Header:
    field: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class Sequence:
    """A message sequence number set, or with `uid` the UID key."""

    set: SequenceSet
    uid: bool = False


@dataclass(frozen=True, slots=True)
class Not:
    key: SearchKey


@dataclass(frozen=True, slots=True)
class Or:
    left: SearchKey
    right: SearchKey


@dataclass(frozen=True, slots=True)
class And:
    """A parenthesized list of keys."""

    keys: tuple[SearchKey, ...]


SearchKey = Key | ModSeq | Header | Sequence | Not | Or | And


def read_program(r: Reader) -> tuple[SearchKey, ...]:
    """`search-key *(SP search-key)` up to the end of the command."""
    keys = [read_key(r)]
    while not r.at_end():
        r.sp()
        keys.append(read_key(r))
    return tuple(keys)


def read_key(r: Reader) -> SearchKey:
    first = r.peek()
    if first == b"(":
        r.enter()
        keys = r.paren_list(lambda: read_key(r))
        r.leave()
        return And(keys)
    if first.isdigit() or first in (b"*", b"$"):
        return Sequence(r.sequence_set())
    name = r.keyword()
    if name in FLAG_KEYS:
        return Key(name)
    if name == "NOT":
        r.sp()
        r.enter()
        key = read_key(r)
        r.leave()
        return Not(key)
    if name == "OR":
        r.enter()
        r.sp()
        left = read_key(r)
        r.sp()
        right = read_key(r)
        r.leave()
        return Or(left, right)
    r.sp()
    if name in STRING_KEYS:
        return Key(name, (r.astring(),))
    if name in KEYWORD_KEYS:
        return Key(name, (r.atom("a keyword"),))
    if name in DATE_KEYS:
        return Key(name, (r.date(),))
    if name in NUMBER_KEYS:
        return Key(name, (r.number(),))
    if name in INTERVAL_KEYS:
        return Key(name, (r.number(nonzero=True),))
    if name == "HEADER":
        field = r.astring()
        r.sp()
        return Header(field, r.astring())
    if name == "UID":
        return Sequence(r.sequence_set(), uid=True)
    if name == "MODSEQ":
        if r.peek() == b'"':
            entry = r.quoted()
            r.sp()
            entry_type = r.keyword()
            if entry_type not in ENTRY_TYPES:
                raise r.fail("bad MODSEQ entry type")
            r.sp()
            return ModSeq(r.number64(), entry, entry_type)
        return ModSeq(r.number64())
    raise r.fail(f"unknown search key {name[:40]}")


def write_key(key: SearchKey) -> bytes:
    if isinstance(key, And):
        return b"(" + b" ".join(write_key(k) for k in key.keys) + b")"
    if isinstance(key, Not):
        return b"NOT " + write_key(key.key)
    if isinstance(key, Or):
        return b"OR " + write_key(key.left) + b" " + write_key(key.right)
    if isinstance(key, Sequence):
        return (b"UID " if key.uid else b"") + key.set.to_str().encode("ascii")
    if isinstance(key, Header):
        return b"HEADER " + lexer.astring(key.field) + b" " + lexer.astring(key.value)
    if isinstance(key, ModSeq):
        if key.entry is None:
            return b"MODSEQ %d" % key.value
        return b"MODSEQ %s %s %d" % (
            lexer.quoted(key.entry),
            (key.entry_type or "ALL").lower().encode("ascii"),
            key.value,
        )
    out = key.name.encode("ascii")
    for arg in key.args:
        if isinstance(arg, bytes):
            out += b" " + lexer.astring(arg)
        elif isinstance(arg, dt.date):
            out += b" " + lexer.date(arg)
        elif isinstance(arg, int):
            out += b" %d" % arg
        else:
            out += b" " + str(arg).encode("ascii")
    return out


def write_program(keys: tuple[SearchKey, ...]) -> bytes:
    return b" ".join(write_key(k) for k in keys)
