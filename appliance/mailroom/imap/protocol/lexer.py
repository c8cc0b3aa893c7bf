"""The tokens of RFC 3501 9 (formal syntax): reading them from a complete command, writing them back.

A `Reader` works on one whole command as the framer in `parser.py` assembled it (lines and literal
data, CRLFs included); it never waits for more input. Every failure raises `SyntaxProblem`.
"""

from __future__ import annotations

import datetime as dt
import re

from ...store import names
from ...store.errors import InvalidFolderName
from .errors import SyntaxProblem
from .sequence import SequenceSet

# RFC 3501 9: atom-specials are "(" ")" "{" SP CTL list-wildcards quoted-specials resp-specials.
_ATOM_SPECIALS = frozenset(b'(){ %*"\\]') | frozenset(range(0x20)) | {0x7F}
ATOM_CHARS = frozenset(range(1, 0x80)) - _ATOM_SPECIALS
ASTRING_CHARS = ATOM_CHARS | {ord("]")}
LIST_CHARS = ATOM_CHARS | {ord("%"), ord("*"), ord("]")}
TAG_CHARS = ASTRING_CHARS - {ord("+")}
# Sequence-set characters, so "1:*" reads as one token.
_SEQ_CHARS = frozenset(b"0123456789:,*$")

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_NUMBER = {m.upper(): i for i, m in enumerate(MONTHS, 1)}
_DATE_TIME = re.compile(rb'"([ \d]\d)-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)"')
_DATE = re.compile(rb"(\d{1,2})-([A-Za-z]{3})-(\d{4})")
MAX_NUMBER64 = 2**63 - 1  # RFC 7162 7, mod-sequence-value


class Reader:
    """Cursor over one command. `utf8` allows 8-bit text in quoted strings (RFC 6855 3)."""

    def __init__(self, data: bytes, *, utf8: bool = False, max_depth: int = 16) -> None:
        self.data = data
        self.pos = 0
        self.utf8 = utf8
        self.max_depth = max_depth
        self.depth = 0

    # -- positions ---------------------------------------------------------------------------
    def fail(self, message: str) -> SyntaxProblem:
        return SyntaxProblem(message)

    def peek(self, n: int = 1) -> bytes:
        return self.data[self.pos : self.pos + n]

    def at(self, token: bytes) -> bool:
        return self.data[self.pos : self.pos + len(token)].upper() == token

    def take(self, token: bytes) -> bool:
        """Consume `token` (case-insensitive) if it is next."""
        if self.at(token):
            self.pos += len(token)
            return True
        return False

    def expect(self, token: bytes, what: str | None = None) -> None:
        if not self.take(token):
            raise self.fail(f"expected {what or token.decode()!s}")

    def sp(self) -> None:
        self.expect(b" ", "a space")

    def at_end(self) -> bool:
        return self.data[self.pos :] == b"\r\n"

    def end(self) -> None:
        if not self.at_end():
            raise self.fail("unexpected characters at the end of the command")

    def enter(self) -> None:
        self.depth += 1
        if self.depth > self.max_depth:
            raise self.fail("too deeply nested")

    def leave(self) -> None:
        self.depth -= 1

    # -- tokens --------------------------------------------------------------------------------
    def _run(self, allowed: frozenset[int]) -> bytes:
        start = self.pos
        data = self.data
        while self.pos < len(data) and data[self.pos] in allowed:
            self.pos += 1
        return data[start : self.pos]

    def atom(self, what: str = "an atom") -> str:
        word = self._run(ATOM_CHARS)
        if not word:
            raise self.fail(f"expected {what}")
        return word.decode("ascii")

    def keyword(self) -> str:
        """An atom, upper-cased: command names, option names, search keys."""
        return self.atom("a keyword").upper()

    def tag(self) -> str:
        word = self._run(TAG_CHARS)
        if not word:
            raise self.fail("missing or invalid tag")
        return word.decode("ascii")

    def number(self, limit: int = 4294967295, *, nonzero: bool = False) -> int:
        digits = self._run(frozenset(b"0123456789"))
        if not digits:
            raise self.fail("expected a number")
        if len(digits) > 20 or int(digits) > limit:
            raise self.fail("number out of range")
        value = int(digits)
        if nonzero and (value == 0 or digits[0:1] == b"0"):
            raise self.fail("expected a non-zero number")
        return value

    def number64(self) -> int:
        return self.number(MAX_NUMBER64)

    def quoted(self) -> bytes:
        self.expect(b'"', "a quoted string")
        out = bytearray()
        data = self.data
        while True:
            if self.pos >= len(data):
                raise self.fail("unterminated quoted string")
            c = data[self.pos]
            self.pos += 1
            if c == 0x22:
                break
            if c == 0x5C:
                if self.pos >= len(data) or data[self.pos] not in (0x22, 0x5C):
                    raise self.fail("bad escape in quoted string")
                out.append(data[self.pos])
                self.pos += 1
            elif c in (0, 0x0A, 0x0D):
                raise self.fail("NUL, CR or LF in a quoted string")
            elif c >= 0x80 and not self.utf8:
                raise self.fail("8-bit characters in a quoted string")
            else:
                out.append(c)
        if self.utf8 and any(b >= 0x80 for b in out):
            try:
                bytes(out).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise self.fail("invalid UTF-8 in a quoted string") from exc
        return bytes(out)

    def literal(self, *, binary: bool = False) -> bytes:
        """`{n}`/`{n+}` CRLF n octets; with `binary` also `~{n}` (RFC 3516 literal8)."""
        is8 = self.take(b"~")
        if is8 and not binary:
            raise self.fail("literal8 is only allowed for APPEND data")
        self.expect(b"{", "a literal")
        n = self.number()
        self.take(b"+")
        self.expect(b"}\r\n", "'}' and CRLF after the literal length")
        value = self.data[self.pos : self.pos + n]
        if len(value) != n:
            raise self.fail("truncated literal")
        self.pos += n
        if not is8 and 0 in value:
            raise self.fail("NUL in a literal")
        return value

    def literal_next(self) -> bool:
        return self.peek() == b"{" or self.peek(2) == b"~{"

    def string(self) -> bytes:
        if self.peek() == b'"':
            return self.quoted()
        if self.literal_next():
            return self.literal()
        raise self.fail("expected a string")

    def astring(self) -> bytes:
        if self.peek() == b'"' or self.literal_next():
            return self.string()
        word = self._run(ASTRING_CHARS)
        if not word:
            raise self.fail("expected an atom or string")
        return word

    def nstring(self) -> bytes | None:
        if self.at(b"NIL") and self.data[self.pos + 3 : self.pos + 4] not in ASTRING_BYTES:
            self.pos += 3
            return None
        return self.string()

    def text_astring(self) -> str:
        """An astring as text: UTF-8, with undecodable octets kept as surrogate escapes."""
        return self.astring().decode("utf-8", "surrogateescape")

    def mailbox(self, *, pattern: bool = False) -> str:
        """A mailbox name (or a LIST pattern) as Unicode; modified UTF-7 decoded by `store.names`."""
        if pattern and self.peek() != b'"' and not self.literal_next():
            raw = self._run(LIST_CHARS)
            if not raw:
                raise self.fail("expected a mailbox pattern")
        else:
            raw = self.astring()
        return decode_mailbox(raw, utf8=self.utf8, fail=self.fail)

    def sequence_set(self) -> SequenceSet:
        word = self._run(_SEQ_CHARS)
        try:
            return SequenceSet.parse(word.decode("ascii"))
        except ValueError as exc:
            raise self.fail("bad sequence set") from exc

    def flag(self) -> str:
        if self.take(b"\\"):
            if self.take(b"*"):
                return "\\*"
            return "\\" + self.atom("a flag")
        return self.atom("a flag")

    def flag_list(self) -> tuple[str, ...]:
        self.expect(b"(")
        flags: list[str] = []
        if not self.take(b")"):
            while True:
                flags.append(self.flag())
                if self.take(b")"):
                    break
                self.sp()
        return tuple(flags)

    def date(self) -> dt.date:
        quoted = self.take(b'"')
        m = _DATE.match(self.data, self.pos)
        if not m:
            raise self.fail("expected a date like 1-Feb-1994")
        self.pos = m.end()
        if quoted:
            self.expect(b'"')
        day, month, year = m.groups()
        return _make(lambda: dt.date(int(year), _month(month, self.fail), int(day)), self.fail)

    def date_time(self) -> dt.datetime:
        m = _DATE_TIME.match(self.data, self.pos)
        if not m:
            raise self.fail('expected a date-time like "01-Feb-1994 21:52:25 +0100"')
        self.pos = m.end()
        day, month, year, hh, mm, ss, sign, zh, zm = m.groups()
        offset = dt.timedelta(hours=int(zh), minutes=int(zm)) * (-1 if sign == b"-" else 1)
        if int(zm) > 59 or offset >= dt.timedelta(hours=24):
            raise self.fail("bad time zone")
        return _make(
            lambda: dt.datetime(
                int(year),
                _month(month, self.fail),
                int(day),
                int(hh),
                int(mm),
                int(ss),
                tzinfo=dt.timezone(offset),
            ),
            self.fail,
        )

    def paren_list(self, item):
        """`"(" item *(SP item) ")"` with at least one item."""
        self.expect(b"(")
        items = [item()]
        while not self.take(b")"):
            self.sp()
            items.append(item())
        return tuple(items)


ASTRING_BYTES = frozenset(bytes([c]) for c in ASTRING_CHARS)


def _month(text: bytes, fail) -> int:
    try:
        return _MONTH_NUMBER[text.decode("ascii").upper()]
    except KeyError:
        raise fail("bad month name") from None


def _make(build, fail):
    try:
        return build()
    except ValueError as exc:
        raise fail("impossible date") from exc


def decode_mailbox(raw: bytes, *, utf8: bool, fail=SyntaxProblem) -> str:
    """Wire form → Unicode: modified UTF-7 (RFC 3501 5.1.3), or after ENABLE UTF8=ACCEPT plain
    UTF-8 in which "&" is an ordinary character (RFC 6855 3)."""
    if utf8:
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise fail("mailbox name is not UTF-8") from exc
    else:
        try:
            name = names.decode(raw.decode("ascii"))
        except (UnicodeDecodeError, InvalidFolderName) as exc:
            raise fail("mailbox name is not valid modified UTF-7") from exc
    return names.INBOX if name.upper() == names.INBOX else name


# -- writing ------------------------------------------------------------------------------------
def literal(data: bytes, *, sync: bool = True) -> bytes:
    return b"{%d%s}\r\n" % (len(data), b"" if sync else b"+") + data


def quoted(data: bytes) -> bytes:
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def can_quote(data: bytes, *, utf8: bool = False, limit: int = 1024) -> bool:
    if len(data) > limit or b"\r" in data or b"\n" in data or b"\0" in data:
        return False
    if any(b >= 0x80 for b in data):
        if not utf8:
            return False
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return False
    return True


def string(data: bytes, *, utf8: bool = False) -> bytes:
    """A string: quoted when possible, else a literal."""
    return quoted(data) if can_quote(data, utf8=utf8) else literal(data)


def astring(data: bytes | str, *, utf8: bool = False) -> bytes:
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    if data and all(c in ASTRING_CHARS for c in data) and data.upper() != b"NIL":
        return data
    return string(data, utf8=utf8)


def mailbox(name: str, *, pattern: bool = False) -> bytes:
    encoded = names.encode(name).encode("ascii")
    if pattern and encoded and all(c in LIST_CHARS for c in encoded):
        return encoded
    return astring(encoded)


def date(value: dt.date) -> bytes:
    return f"{value.day}-{MONTHS[value.month - 1]}-{value.year:04d}".encode("ascii")


def date_time(value: dt.datetime) -> bytes:
    """RFC 3501 9, date-time: `"dd-Mon-yyyy hh:mm:ss +zzzz"`, the day padded with a space."""
    offset = value.utcoffset() or dt.timedelta(0)
    sign = "-" if offset < dt.timedelta(0) else "+"
    minutes = abs(int(offset.total_seconds())) // 60
    return (
        f'"{value.day:2d}-{MONTHS[value.month - 1]}-{value.year:04d} '
        f'{value.hour:02d}:{value.minute:02d}:{value.second:02d} {sign}{minutes // 60:02d}{minutes % 60:02d}"'
    ).encode("ascii")


def flag_list(flags: tuple[str, ...]) -> bytes:
    return b"(" + b" ".join(f.encode("ascii") for f in flags) + b")"
