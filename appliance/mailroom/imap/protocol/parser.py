"""The incremental command parser: bytes from the socket in, commands and errors out.

Framing follows RFC 3501 2.2 and 7.5: a command is a line, unless the line ends in a literal
`{n}` (synchronizing: the server must send "+ Ready" first, see `ContinuationNeeded`), `{n+}`
(RFC 7888 LITERAL+) or `~{n}` (RFC 3516 literal8), after which n octets and the rest of the
command follow. Limits, all checked before anything is buffered:

- `line_limit`: the octets of a command outside its literals;
- `literal_limit`: the octets of all literals of one command, checked against the announced
  length, so `{400000000}` costs nothing (a small value before authentication, the APPENDLIMIT
  after); a synchronizing literal above it gets a tagged NO [TOOBIG] and the client never sends
  it; a non-synchronizing one gets BAD [TOOBIG] and `fatal`: the caller closes the connection;
- `max_depth`: parenthesis nesting in search programs.

So the parser never holds more than `line_limit + literal_limit` octets.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from . import commands as c
from .commands import Authenticate, Command, Compress, Idle, StartTLS, read_command
from .errors import ParseError, SyntaxProblem
from .lexer import TAG_CHARS, Reader

DEFAULT_LINE_LIMIT = 8192
DEFAULT_LITERAL_LIMIT = 8192  # before authentication; raised to the APPENDLIMIT after
DEFAULT_MAX_DEPTH = 16

_LITERAL_AT_END = re.compile(rb"(~?)\{([^{}]*)\}\Z")
_DIGITS = re.compile(rb"[0-9]{1,10}\Z")


@dataclass(frozen=True, slots=True)
class ContinuationNeeded:
    """The client waits for a continuation request before sending a literal of `size` octets."""

    tag: str | None
    size: int

    def to_response(self) -> bytes:
        return b"+ Ready for literal data\r\n"


@dataclass(frozen=True, slots=True)
class IdleDone:
    """The DONE line that ends IDLE (RFC 2177 3)."""


@dataclass(frozen=True, slots=True)
class SaslResponse:
    """One client line during AUTHENTICATE (RFC 3501 6.2.2): base64, or "*" to cancel."""

    line: bytes

    @property
    def cancelled(self) -> bool:
        return self.line == b"*"


Event = Command | ParseError | ContinuationNeeded | IdleDone | SaslResponse

_NORMAL, _IDLE, _SASL = "normal", "idle", "sasl"
_PAUSING = (Idle, Authenticate, StartTLS, Compress)

# Commands that clients send again and again, word for word (NOOP, IDLE, SELECT INBOX, the
# FETCH of a folder's flags): parsed once per process, then made again from their fields with
# the new tag. Parsing SELECT INBOX takes 6 µs warm, but 35-40 µs right after a big FETCH has
# pushed the parser out of the CPU's caches; a lookup touches far less. Commands with
# credentials (LOGIN, AUTHENTICATE) or literals are never kept; the cache is emptied when full.
_CACHEABLE = frozenset(
    {
        c.Noop, c.Check, c.Capability, c.Idle, c.Namespace, c.Close, c.Unselect, c.Expunge,
        c.Select, c.Examine, c.Status, c.List, c.Lsub, c.Fetch, c.Search, c.UidExpunge,
    }
)  # fmt: skip
_CACHE_SIZE = 512
_parsed: dict[tuple[bytes, bool, int], tuple[type[Command], tuple[object, ...]]] = {}
_TAG_BYTES = bytes(sorted(TAG_CHARS))


def clear_cache() -> None:
    """Forget the command lines parsed so far (see _parsed)."""
    _parsed.clear()


class CommandParser:
    """Feed it what the socket gives; it returns what it could make of it.

    `utf8` is set once the client did `ENABLE UTF8=ACCEPT` (RFC 6855); `literal_limit` is
    raised after authentication. The parser pauses where the meaning of the next line depends
    on the server's answer, keeping what follows in its buffer:

    - after IDLE: `expect_done()` if it was accepted (the next line must be DONE), else
      `resume()`;
    - after AUTHENTICATE and after each SASL response: `expect_sasl_response()` when a
      challenge was sent, `resume()` when the exchange is over;
    - after STARTTLS and COMPRESS: what follows belongs to the new layer; `take_pending()`
      hands it over (after STARTTLS it must be dropped, RFC 7817 / CVE-2011-0411) and resumes.

    Each of these returns the events of the buffered input, as `feed` does. While paused, at
    most `line_limit` octets are kept; more is a fatal error.
    """

    def __init__(
        self,
        *,
        line_limit: int = DEFAULT_LINE_LIMIT,
        literal_limit: int = DEFAULT_LITERAL_LIMIT,
        max_depth: int = DEFAULT_MAX_DEPTH,
        utf8: bool = False,
    ) -> None:
        self.line_limit = line_limit
        self.literal_limit = literal_limit
        self.max_depth = max_depth
        self.utf8 = utf8
        self._buf = bytearray()  # received, not yet framed
        self._cmd = bytearray()  # the command framed so far
        self._line_octets = 0  # non-literal octets in _cmd
        self._literal_octets = 0  # literal octets announced in _cmd
        self._literal_left = 0  # literal octets still to come
        self._skipping = False  # discarding up to the next CRLF after an error
        self._mode = _NORMAL
        self.paused = False
        self.closed = False

    @property
    def buffered(self) -> int:
        return len(self._buf) + len(self._cmd)

    def expect_done(self) -> list[Event]:
        self._mode = _IDLE
        return self.resume()

    def expect_sasl_response(self) -> list[Event]:
        self._mode = _SASL
        return self.resume()

    def resume(self) -> list[Event]:
        self.paused = False
        return self.feed(b"")

    def take_pending(self) -> bytes:
        data = bytes(self._buf)
        self._buf.clear()
        self.paused = False
        return data

    def feed(self, data: bytes) -> list[Event]:
        if self.closed:
            return []
        if self.paused:
            if len(self._buf) + len(data) > self.line_limit:
                return [self._close(ParseError(None, "input while waiting for the server", fatal=True))]
            self._buf += data
            return []
        self._buf += data
        events: list[Event] = []
        while self._buf and not self.paused and not self.closed:
            if not self._step(events):
                break
        return events

    def _close(self, error: ParseError) -> ParseError:
        self.closed = True
        self._buf.clear()
        self._reset()
        return error

    # -- framing -------------------------------------------------------------------------------
    def _reset(self) -> None:
        self._cmd.clear()
        self._line_octets = self._literal_octets = self._literal_left = 0

    def _step(self, events: list[Event]) -> bool:
        """Make progress on the buffer; False when more input is needed."""
        buf = self._buf
        if self._literal_left:
            chunk = buf[: self._literal_left]
            self._cmd += chunk
            del buf[: len(chunk)]
            self._literal_left -= len(chunk)
            return True
        end = buf.find(b"\r\n")
        if self._skipping:
            if end < 0:
                keep = buf[-1:] == b"\r"
                del buf[: len(buf) - keep]
                return False
            del buf[: end + 2]
            self._skipping = False
            return True
        if end < 0:
            if self._line_octets + len(buf) > self.line_limit:
                events.append(self._error("line too long", self._tag(bytes(self._cmd + buf[:200]))))
                self._reset()
                self._skipping = True
                return True
            return False
        line = bytes(buf[:end])
        del buf[: end + 2]
        if self._line_octets + end + 2 > self.line_limit:
            events.append(self._error("line too long", self._tag(bytes(self._cmd) + line[:200])))
            self._reset()
            return True
        if self._mode != _NORMAL and not self._cmd:
            events.append(self._special_line(line))
            return True
        self._cmd += line + b"\r\n"
        self._line_octets += end + 2
        marker = _literal_marker(line)
        if marker is None:
            events.append(self._parse())
            self._reset()
            return True
        _binary, size_text, sync = marker
        tag = self._tag(bytes(self._cmd))
        size = int(size_text) if _DIGITS.match(size_text) else None
        if size is None:
            # "{-1}", "{x}", "{99999999999}": not a literal; the grammar check reports it.
            events.append(self._parse())
            self._reset()
            return True
        if size > self.literal_limit - self._literal_octets:
            self._reset()
            if sync:
                events.append(ParseError(tag, "literal too big", "TOOBIG", "NO"))
            else:
                events.append(self._close(ParseError(tag, "literal too big", "TOOBIG", "BAD", fatal=True)))
            return True
        self._literal_octets += size
        self._literal_left = size
        if sync:
            events.append(ContinuationNeeded(tag, size))
        return True

    def _special_line(self, line: bytes) -> Event:
        mode, self._mode = self._mode, _NORMAL
        if mode == _SASL:
            self.paused = True
            return SaslResponse(line)
        if line.upper() == b"DONE":
            return IdleDone()
        return ParseError(None, "expected DONE")

    def _parse(self) -> Command | ParseError:
        data = bytes(self._cmd)
        space = data.find(b" ")
        key = (data[space + 1 :], self.utf8, self.max_depth)
        known = _parsed.get(key) if space > 0 else None
        if known is not None and not data[:space].translate(None, _TAG_BYTES):
            kind, fields = known
            cmd = kind(data[:space].decode("ascii"), *fields)
        else:
            cmd = self._parse_anew(data)
            kind = type(cmd)
            if kind in _CACHEABLE and not self._literal_octets:
                if len(_parsed) >= _CACHE_SIZE:
                    _parsed.clear()
                names = [f.name for f in dataclasses.fields(cmd)[1:]]  # type: ignore[arg-type]
                _parsed[key] = (kind, tuple(getattr(cmd, name) for name in names))
        if isinstance(cmd, _PAUSING):
            self.paused = True
        return cmd

    def _parse_anew(self, data: bytes) -> Command | ParseError:
        r = Reader(data, utf8=self.utf8, max_depth=self.max_depth)
        tag = None
        try:
            tag = r.tag()
            r.sp()
            cmd = read_command(r, tag)
        except SyntaxProblem as exc:
            return ParseError(tag, exc.message, exc.code, exc.status)
        except (RecursionError, ValueError, IndexError) as exc:  # a bug, not a crash
            return ParseError(tag, f"unparsable command ({type(exc).__name__})")
        return cmd

    def _error(self, message: str, tag: str | None) -> ParseError:
        return ParseError(tag, message)

    @staticmethod
    def _tag(data: bytes) -> str | None:
        """The tag of a command, if its first word is one followed by a space."""
        n = 0
        while n < len(data) and data[n] in TAG_CHARS:
            n += 1
        if n == 0 or n > 64 or data[n : n + 1] != b" ":
            return None
        return data[:n].decode("ascii")


def _literal_marker(line: bytes) -> tuple[bool, bytes, bool] | None:
    """(binary, size text, synchronizing) if the line ends in a literal announcement.

    Only outside a quoted string: `"{5}` inside quotes is text. The size text is returned
    unchecked so that `{-1}` and `{abc}` are reported as syntax errors, not as literals.
    """
    if not line.endswith(b"}"):
        return None
    m = _LITERAL_AT_END.search(line[-32:]) if b"{" in line[-32:] else None
    if m is None:
        return None
    start = len(line) - len(line[-32:]) + m.start()
    in_quotes = False
    i = 0
    while i < start:
        c = line[i]
        if in_quotes and c == 0x5C:
            i += 2
            continue
        if c == 0x22:
            in_quotes = not in_quotes
        i += 1
    if in_quotes:
        return None
    size = m.group(2)
    sync = not size.endswith(b"+")
    return bool(m.group(1)), size.removesuffix(b"+"), sync
