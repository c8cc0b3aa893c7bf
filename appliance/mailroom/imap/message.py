"""A stored message as IMAP sees it: ENVELOPE, BODY/BODYSTRUCTURE and BODY[section] (RFC 3501
6.4.5 and 7.4.2, RFC 9051 7.5.2), computed byte-exactly over the message as sent.

Maildir files have LF line ends; IMAP sends CRLF, so every size, line count and offset here is over
`to_crlf(data)` (a lone LF becomes CRLF, a CRLF stays, a lone CR stays as it is).

`ParsedMessage(data)` is built once per message and parses lazily: the top header is split only
when something needs it (ENVELOPE, HEADER.FIELDS, `header()`), and the body is split into parts
only when BODYSTRUCTURE, a part number or BINARY asks (then the whole tree once, in part order).
The MIME splitter is our own and works on octets (the `email` package loses offsets and is slow).
Its output matches Dovecot 2.3's for well-formed messages (the tests compare with Dovecot's imap);
the known differences are on broken input and noted below.

- A header ends at its first empty line; a header with no empty line runs to the end of its part
  (the body is then empty). A line without a colon stays in the header (it is in
  HEADER.FIELDS.NOT and matches no field name).
- Multipart bodies split at lines `--boundary` [`--`] followed by nothing but spaces/tabs
  (RFC 2046 5.1.1); the CRLF before a delimiter belongs to the delimiter (also when an
  encapsulated message ends in its header, where Dovecot counts that CRLF in). Preamble and
  epilogue are not parts. A missing close delimiter ends the last part at the end of its parent.
  A multipart with no parts is written as an empty text/plain part, as Dovecot does.
- Text lines are the line ends in a part's body (a last line ended only by the delimiter's CRLF
  is not counted), as Dovecot counts them.
- Part numbers (RFC 3501 6.4.5): part 1 of a single-part message is its body; the parts of a
  message/rfc822 part are those of the encapsulated message; as in Dovecot, part 1 of a single
  part inside a multipart is that part again. A part that does not exist gives b"".
- Containers (multipart, message/rfc822|global) nest at most `MAX_DEPTH` deep and a message has
  at most `MAX_PARTS` parts; past either, and for a multipart without a boundary, the container is
  an opaque single part (a multipart keeps its type; a message/* becomes application/octet-stream,
  as its BODYSTRUCTURE form needs an envelope). So is a message/rfc822 part whose
  Content-Transfer-Encoding is not 7bit/8bit/binary (Dovecot parses the encoded text instead).
- Content-* fields count whether or not there is a MIME-Version field (Dovecot ignores all but
  Content-Type without one). An invalid Content-Type is text/plain; charset=us-ascii (RFC 2045).
- Strings are written raw: header values are unfolded (CRLFs removed) but not decoded, so
  encoded-words stay as sent and 8-bit octets go as literals. NUL is allowed in no IMAP string:
  in ENVELOPE/BODYSTRUCTURE strings it becomes U+FFFD, in BODY[...] / RFC822.* data 0x80 (same
  length, so sizes hold), both as Dovecot does; BINARY[...] data keeps it (a literal8).
- Types, subtypes and parameter names are written as sent (clients compare them without regard
  to case); quoted values are unquoted; an unquoted value ends at white space or ";" and may hold
  "=" (boundary=----=_Part_1, which Dovecot cuts at the "="). RFC 2231 continuations
  (`name*0*=`, `name*1=`...) are joined into one parameter after the plain ones; when any segment
  is extended the result is named `name*` and keeps the `charset'language'%XX` form as sent (like
  Dovecot), so a client decodes it as it would a single `name*=` parameter. Text parts get the
  default ("charset" "us-ascii") when they have no charset.
- ENVELOPE takes the last Date/Subject/In-Reply-To/Message-ID field and the addresses of all
  From/Sender/Reply-To/To/Cc/Bcc fields of a kind, as Dovecot does. Addresses keep a quoted local
  part with its quotes (so mailbox@host is the address as sent; Dovecot unquotes it); display
  names are unquoted phrases with encoded-words left as sent. A missing mailbox or domain is
  "MISSING_MAILBOX" / "MISSING_DOMAIN" (an empty host would read as group syntax).
- The body MD5 is the Content-MD5 header when there is one, else NIL.
"""

from __future__ import annotations

import binascii
import re
from email.header import decode_header, make_header

from .protocol import fetch, lexer
from .protocol.responses import LONG_STRING, value

MAX_DEPTH = 20  # nested multipart / message parts; deeper containers are opaque
MAX_PARTS = 5000  # parts in one message; the rest of a body stays in the last part
MAX_ADDRESSES = 1000  # per address header in an ENVELOPE
MAX_STRUCTURED = 64 * 1024  # characters of an address or MIME header field that are parsed

EMPTY_BODY = b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0)'
EMPTY_BODYSTRUCTURE = b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL)'

_LONE_LF = re.compile(rb"(?<!\r)\n")
_IDENTITY_CTE = frozenset(["", "7bit", "8bit", "binary"])
_ENCAPSULATED = frozenset([("message", "rfc822"), ("message", "global")])
_CONTINUATION = re.compile(r"(.+?)\*(\d{1,4})(\*?)\Z", re.S)
_ATTR_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$&+-.^_`|~")


def to_crlf(data: bytes) -> bytes:
    """The message as sent: every lone LF made CRLF (existing CRLFs and lone CRs kept)."""
    if b"\n" not in data:
        return data
    if b"\r" not in data:
        return data.replace(b"\n", b"\r\n")
    return _LONE_LF.sub(b"\r\n", data)


def _no_nul(data: bytes) -> bytes:
    return data.replace(b"\0", b"\x80") if b"\0" in data else data


def partial(data: bytes, start: int, length: int) -> bytes:
    """`<start.length>` of section data (RFC 3501 6.4.5): empty when start is past the end."""
    if start < 0 or length < 0:
        return b""
    return data[start : start + length]


# -- module-level shortcuts ---------------------------------------------------------------------
def envelope(data: bytes) -> bytes:
    return ParsedMessage(data).envelope()


def body_structure(data: bytes, extensible: bool) -> bytes:
    return ParsedMessage(data).body_structure(extensible)


def section(data: bytes, sec: fetch.Section) -> bytes:
    return ParsedMessage(data).section(sec)


# -- the parsed message -------------------------------------------------------------------------
class ParsedMessage:
    """One message, parsed lazily. `data` is the stored form (LF or CRLF); everything returned is
    over the CRLF form, which is `self.data`."""

    __slots__ = ("_root", "_split", "data")

    def __init__(self, data: bytes) -> None:
        self.data = to_crlf(bytes(data))
        self._root = _Entity(self, 0, len(self.data), 0, _Budget())
        self._split = False

    def _tree(self) -> _Entity:
        """The root with every multipart split (once, in part order)."""
        if not self._split:
            self._split = True
            self._root.split_tree()
        return self._root

    @property
    def size(self) -> int:
        """RFC822.SIZE: octets of the message with CRLF line ends."""
        return len(self.data)

    @property
    def header_bytes(self) -> bytes:
        """RFC822.HEADER / BODY[HEADER]: the header including the empty line that ends it."""
        return _no_nul(self._root.header_bytes())

    @property
    def text_bytes(self) -> bytes:
        """RFC822.TEXT / BODY[TEXT]: everything after the header."""
        return _no_nul(self._root.body_bytes())

    def header(self, name: str) -> list[str]:
        """Every value of the named top-level header field, unfolded and decoded (RFC 2047
        encoded-words; 8-bit octets as UTF-8, else Latin-1), for SEARCH and SORT."""
        return [_decode_text(v) for v in self._root.raw_values(name.lower())]

    def raw_header(self, name: str) -> list[bytes]:
        """Every value of the named top-level header field, unfolded, not decoded."""
        return self._root.raw_values(name.lower())

    def envelope(self) -> bytes:
        """The ENVELOPE value: `("date" "subject" (from) (sender) ... "message-id")`."""
        return _envelope(self._root)

    def body_structure(self, extensible: bool = True) -> bytes:
        """BODYSTRUCTURE (extensible) or BODY (not) of the whole message."""
        return _body(self._tree(), extensible)

    def section(self, sec: fetch.Section) -> bytes:
        """BODY[section] contents, with `sec.partial` applied when it is set. A part that does
        not exist gives b"" (RFC 3501 leaves it open; Dovecot sends an empty string too).
        BINARY sections are decoded as `binary()` does (b"" for an unknown encoding). NULs in
        BODY data are sent as 0x80 (RFC 3501 allows no NUL in a literal); BINARY keeps them."""
        out = _no_nul(self._section(sec)) if sec.kind == "BODY" else (self.binary(sec.part) or b"")
        if sec.partial:
            out = partial(out, *sec.partial)
        return out

    def binary(self, part: tuple[int, ...]) -> bytes | None:
        """BINARY[part] (RFC 3516): the part's body with its Content-Transfer-Encoding undone;
        None when the encoding is unknown (the server answers NO [UNKNOWN-CTE])."""
        if not part:
            return self.data  # the whole message is never transfer-encoded
        entity = self._tree().find(part)
        if entity is None:
            return b""
        if entity.kind == "multipart":
            return entity.body_bytes()
        return _decode_cte(entity.cte().lower(), entity.body_bytes())

    def _section(self, sec: fetch.Section) -> bytes:
        if not sec.part:
            target = self._root
        else:
            entity = self._tree().find(sec.part)
            if entity is None:
                return b""
            if sec.text is None:
                return entity.body_bytes()
            if sec.text == "MIME":
                return entity.header_bytes()
            if entity.kind != "message":
                return b""  # HEADER/TEXT of a part are only defined for message/rfc822
            target = entity.inner()
        if sec.text is None:
            return self.data
        if sec.text == "HEADER":
            return target.header_bytes()
        if sec.text == "TEXT":
            return target.body_bytes()
        if sec.text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            wanted = {f.lower() for f in sec.fields}
            keep = sec.text == "HEADER.FIELDS"
            out = [raw for name, raw in target.fields() if (name in wanted) == keep]
            return b"".join(r if r.endswith(b"\r\n") else r + b"\r\n" for r in out) + b"\r\n"
        return b""


class _Budget:
    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts = 1


class _Entity:
    """A message or MIME part: its header [start, body_start) and body [body_start, end)."""

    __slots__ = (
        "_body_start",
        "_children",
        "_ctype",
        "_fields",
        "_index",
        "_inner",
        "_kind",
        "budget",
        "depth",
        "digest_child",
        "end",
        "msg",
        "start",
    )

    def __init__(self, msg, start, end, depth, budget, digest_child=False):
        self.msg = msg
        self.start = start
        self.end = end
        self.depth = depth
        self.budget = budget
        self.digest_child = digest_child
        self._body_start = None
        self._fields = None
        self._index = None
        self._ctype = None
        self._kind = None
        self._children = None
        self._inner = None

    # -- header ------------------------------------------------------------------------------
    @property
    def body_start(self) -> int:
        if self._body_start is None:
            data, start, end = self.msg.data, self.start, self.end
            if data.startswith(b"\r\n", start, end):
                self._body_start = start + 2
            else:
                blank = data.find(b"\r\n\r\n", start, end)
                self._body_start = end if blank < 0 else blank + 4
        return self._body_start

    def header_bytes(self) -> bytes:
        return self.msg.data[self.start : self.body_start]

    def body_bytes(self) -> bytes:
        return self.msg.data[self.body_start : self.end]

    def fields(self) -> list[tuple[str | None, bytes]]:
        """(lower-case name or None, raw field with its CRLF) in order."""
        if self._fields is None:
            self._fields = _split_fields(self.header_bytes())
        return self._fields

    def raw_values(self, name: str) -> list[bytes]:
        if self._index is None:
            index: dict[str | None, list[bytes]] = {}
            for n, raw in self.fields():
                index.setdefault(n, []).append(raw)
            self._index = index
        return [_unfold(raw) for raw in self._index.get(name, ())]

    def last(self, name: str) -> bytes | None:
        """The last such field (ENVELOPE takes the last, as Dovecot does)."""
        values = self.raw_values(name)
        return values[-1] if values else None

    def first(self, name: str) -> bytes | None:
        values = self.raw_values(name)
        return values[0] if values else None

    # -- MIME --------------------------------------------------------------------------------
    def ctype(self) -> tuple[str, str, list[tuple[str, str]]]:
        """(type, subtype, params) as sent."""
        if self._ctype is None:
            raw = self.first("content-type")
            parsed = None if raw is None else _content_type(raw[:MAX_STRUCTURED].decode("latin-1"))
            if parsed is None:
                if self.digest_child:
                    parsed = ("message", "rfc822", [])
                else:
                    parsed = ("text", "plain", [("charset", "us-ascii")])
            self._ctype = parsed
        return self._ctype

    def cte(self) -> str:
        raw = self.first("content-transfer-encoding")
        if raw is None:
            return ""
        words = _strip_comments(raw[:MAX_STRUCTURED].decode("latin-1")).split()
        return words[0] if words else ""  # a token: "base64 junk" is base64

    @property
    def kind(self) -> str:
        """multipart, message (encapsulated, parsed), or leaf (anything else, or opaque)."""
        if self._kind is None:
            ctype, sub, params = self.ctype()
            key = (ctype.lower(), sub.lower())
            kind = "leaf"
            if self.depth < MAX_DEPTH:
                if key[0] == "multipart" and _param(params, "boundary"):
                    kind = "multipart"
                elif key in _ENCAPSULATED and self.cte().lower() in _IDENTITY_CTE:
                    kind = "message"
            self._kind = kind
        return self._kind

    def opaque_message(self) -> bool:
        ctype, sub, _ = self.ctype()
        return self.kind == "leaf" and (ctype.lower(), sub.lower()) in _ENCAPSULATED

    def split_tree(self) -> None:
        """Split every multipart of the message once, in part order, so that the MAX_PARTS
        budget always falls on the same parts whatever is asked first."""
        stack = [self]
        while stack:
            e = stack.pop()
            if e.kind == "multipart":
                stack.extend(reversed(e.children()))
            elif e.kind == "message":
                stack.append(e.inner())

    def children(self) -> list[_Entity]:
        if self._children is None:
            self._children = []
            if self.kind == "multipart":
                _, sub, params = self.ctype()
                boundary = _param(params, "boundary").encode("latin-1")
                digest = sub.lower() == "digest"
                for start, end in _split_multipart(
                    self.msg.data, self.body_start, self.end, boundary, self.budget
                ):
                    self._children.append(_Entity(self.msg, start, end, self.depth + 1, self.budget, digest))
        return self._children

    def inner(self) -> _Entity:
        if self._inner is None:
            self._inner = _Entity(self.msg, self.body_start, self.end, self.depth + 1, self.budget)
        return self._inner

    def find(self, numbers: tuple[int, ...]) -> _Entity | None:
        """The part with these numbers (RFC 3501 6.4.5), or None."""
        cur, as_message, message_body = self, True, False
        for n in numbers:
            if message_body and cur.kind != "message":
                return None  # the body of a single-part message has no parts (as in Dovecot)
            parts = cur._parts(as_message)
            if n < 1 or n > len(parts):
                return None
            nxt = parts[n - 1]
            message_body = as_message and nxt is cur
            if not as_message and cur.kind == "message":
                message_body = nxt is cur.inner()
            cur, as_message = nxt, False
        return cur

    def _parts(self, as_message: bool) -> list[_Entity]:
        if self.kind == "multipart":
            return self.children()
        if self.kind == "message" and not as_message:
            return self.inner()._parts(True)
        # part 1 of a single-part message is its body; like Dovecot, part 1 of any other
        # single part is that part again (RFC 3501 leaves it undefined)
        return [self]


# -- header fields --------------------------------------------------------------------------------
def _split_fields(block: bytes) -> list[tuple[str | None, bytes]]:
    if block.endswith(b"\r\n\r\n"):
        block = block[:-2]
    elif block == b"\r\n":
        return []
    out: list[tuple[str | None, bytes]] = []
    lines = block.split(b"\r\n")
    ended = lines[-1] == b""
    if ended:
        lines.pop()
    current: list[bytes] = []
    for line in lines:
        if current and line[:1] in (b" ", b"\t"):
            current.append(line)
            continue
        if current:
            out.append((_field_name(current[0]), b"\r\n".join(current) + b"\r\n"))
        current = [line]
    if current:
        raw = b"\r\n".join(current) + (b"\r\n" if ended else b"")
        out.append((_field_name(current[0]), raw))
    return out


def _field_name(line: bytes) -> str | None:
    colon = line.find(b":")
    if colon <= 0 or line[:1] in (b" ", b"\t"):
        return None
    name = line[:colon].rstrip(b" \t")
    if not name:
        return None
    return name.decode("latin-1").lower()


def _unfold(raw: bytes) -> bytes:
    value_part = raw[raw.find(b":") + 1 :]
    return value_part.replace(b"\r\n", b"").replace(b"\r", b"").replace(b"\n", b"").strip(b" \t")


def _decode_text(raw: bytes) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    if "=?" not in text:
        return text
    try:
        return str(make_header(decode_header(text)))
    except Exception:  # any malformed encoded-word or unknown charset: keep the raw text
        return text


# -- MIME header values (RFC 2045, RFC 2231) -------------------------------------------------------
def _strip_comments(s: str) -> str:
    if "(" not in s:
        return s
    out, depth, quoted, i = [], 0, False, 0
    while i < len(s):
        ch = s[i]
        if quoted:
            if ch == "\\" and i + 1 < len(s):
                out.append(s[i : i + 2])
                i += 2
                continue
            quoted = ch != '"'
            out.append(ch)
        elif ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
        elif ch == "\\" and depth:
            i += 1
        elif not depth:
            quoted = ch == '"'
            out.append(ch)
        i += 1
    return "".join(out)


def _content_type(raw: str) -> tuple[str, str, list[tuple[str, str]]] | None:
    raw = _strip_comments(raw)
    head, _, rest = raw.partition(";")
    ctype, slash, sub = head.partition("/")
    ctype, sub = ctype.strip(), sub.strip()
    if not slash or not _is_token(ctype) or not _is_token(sub):
        return None
    return ctype, sub, _params(rest)


def _disposition(raw: str) -> tuple[str, list[tuple[str, str]]] | None:
    raw = _strip_comments(raw)
    head, _, rest = raw.partition(";")
    head = head.strip()
    if not _is_token(head):
        return None
    return head, _params(rest)


def _is_token(s: str) -> bool:
    return bool(s) and not any(c in ' \t"()<>@,;:\\/[]?=' or ord(c) < 0x21 for c in s)


def _params(s: str) -> list[tuple[str, str]]:
    """`; name=value; name="quoted"` leniently: an unquoted value runs to the next ';'."""
    raw: list[tuple[str, str]] = []
    i, n = 0, len(s)
    while i < n and len(raw) < 200:
        while i < n and s[i] in " \t;":
            i += 1
        if i >= n:
            break
        eq = s.find("=", i)
        semi = s.find(";", i)
        if eq < 0 or (0 <= semi < eq):
            i = n if semi < 0 else semi + 1
            continue
        name = s[i:eq].strip()
        i = eq + 1
        while i < n and s[i] in " \t":
            i += 1
        if i < n and s[i] == '"':
            i += 1
            buf = []
            while i < n and s[i] != '"':
                if s[i] == "\\" and i + 1 < n:
                    i += 1
                buf.append(s[i])
                i += 1
            val = "".join(buf)
            semi = s.find(";", i)
            i = n if semi < 0 else semi + 1
        else:
            # a token; leniently also with tspecials such as "=" (boundary=----=_Part_1),
            # up to whitespace or ";" (then anything up to the ";" is dropped)
            semi = s.find(";", i)
            end = n if semi < 0 else semi
            val = s[i:end].strip().split(None, 1)[0] if s[i:end].strip() else ""
            i = end + 1
        if name:
            raw.append((name, val))
    return _join_rfc2231(raw)


def _join_rfc2231(params: list[tuple[str, str]]) -> list[tuple[str, str]]:
    if not any("*" in name for name, _ in params):
        return _first_of_each(params)
    pieces: dict[str, dict[int, tuple[bool, str]]] = {}
    order: list[tuple[str, str | None]] = []  # (name, value), or (base, None) for a joined one
    for name, val in params:
        m = _CONTINUATION.match(name)
        if m:
            base, index, ext = m.group(1), int(m.group(2)), bool(m.group(3))
            key = base.lower()
            if key not in pieces:
                pieces[key] = {}
                order.append((base, None))
            pieces[key].setdefault(index, (ext, val))
        else:
            order.append((name, val))
    out = [(name, val) for name, val in order if val is not None]  # plain ones first
    for name, val in order:
        if val is not None:
            continue
        segs = pieces[name.lower()]
        indexes = []
        i = 0
        while i in segs:  # RFC 2231 3: segments 0, 1, 2, ... in order; stop at a gap
            indexes.append(i)
            i += 1
        if not indexes:
            indexes = sorted(segs)
        if any(segs[k][0] for k in indexes):
            text = "".join(segs[k][1] if segs[k][0] else _pct(segs[k][1]) for k in indexes)
            if not segs[indexes[0]][0]:
                text = "''" + text  # the joined value needs the charset'language' prefix
            out.append((name + "*", text))
        else:
            out.append((name, "".join(segs[k][1] for k in indexes)))
    return _first_of_each(out)


def _pct(s: str) -> str:
    return "".join(
        c if c in _ATTR_CHARS else "".join(f"%{b:02X}" for b in c.encode("latin-1", "replace")) for c in s
    )


def _first_of_each(params: list[tuple[str, str]]) -> list[tuple[str, str]]:
    seen: set[str] = set()
    out = []
    for name, val in params:
        if name.lower() not in seen:
            seen.add(name.lower())
            out.append((name, val))
    return out


def _param(params: list[tuple[str, str]], name: str) -> str:
    for n, v in params:
        if n.lower() == name:
            return v
    return ""


# -- multipart splitting (RFC 2046 5.1.1) ------------------------------------------------------------
def _split_multipart(data: bytes, start: int, end: int, boundary: bytes, budget: _Budget):
    delim = b"--" + boundary
    needle = b"\r\n" + delim
    parts: list[tuple[int, int]] = []
    part_start: int | None = None
    search = start
    cand = start if data.startswith(delim, start, end) else -1
    while True:
        if cand < 0:
            found = data.find(needle, search, end)
            if found < 0:
                break
            cand = found + 2
        crlf = data.find(b"\r\n", cand, end)
        eol = end if crlf < 0 else crlf
        rest = data[cand + len(delim) : eol]
        closing = rest.startswith(b"--")
        if (rest[2:] if closing else rest).strip(b" \t"):
            search, cand = cand, -1  # "--boundaryX": not a delimiter line
            continue
        if part_start is not None:
            parts.append((part_start, cand - 2 if cand - 2 >= part_start else cand))
        if closing:
            return parts
        if budget.parts >= MAX_PARTS:
            part_start = None
            if parts:
                parts[-1] = (parts[-1][0], end)
            return parts
        budget.parts += 1
        part_start = end if crlf < 0 else crlf + 2
        search, cand = eol, -1
    if part_start is not None:
        parts.append((part_start, end))
    return parts


# -- writing -----------------------------------------------------------------------------------------
def _s(v: bytes | str | None) -> bytes:
    """An nstring from raw header octets (or latin-1 text standing for them)."""
    if v is None:
        return b"NIL"
    if isinstance(v, str):
        v = v.encode("latin-1", "replace")
    if v.isascii() and len(v) <= LONG_STRING and b"\r" not in v and b"\n" not in v and b"\0" not in v:
        return lexer.quoted(v)  # what value() writes for it, without its slower checks
    return value(v.replace(b"\0", "\ufffd".encode()))


def _envelope(e: _Entity) -> bytes:
    from_ = _address_field(e, "from")
    sender = _address_field(e, "sender")
    reply_to = _address_field(e, "reply-to")
    items = [
        _s(e.last("date")),
        _s(e.last("subject")),
        from_,
        from_ if sender == b"NIL" else sender,
        from_ if reply_to == b"NIL" else reply_to,
        _address_field(e, "to"),
        _address_field(e, "cc"),
        _address_field(e, "bcc"),
        _s(e.last("in-reply-to")),
        _s(e.last("message-id")),
    ]
    return b"(" + b" ".join(items) + b")"


# The same address fields come back message after message (the user's own address in To:, the
# few people and lists that write): their ENVELOPE form is kept, keyed by the unfolded values.
# Bounded; emptied when full. Shared by the worker threads (single dict operations).
_ADDRESS_FIELDS: dict[tuple[bytes, ...], bytes] = {}
_ADDRESS_FIELDS_MAX = 4096


def _address_field(e: _Entity, name: str) -> bytes:
    """The ENVELOPE address list of every such field together, NIL when there is none."""
    raws = tuple(e.raw_values(name))
    if not raws:
        return b"NIL"
    rendered = _ADDRESS_FIELDS.get(raws)
    if rendered is None:
        out: list[tuple] = []
        for raw in raws:
            out += parse_addresses(raw[:MAX_STRUCTURED].decode("latin-1"))
        rendered = _address_list(out[:MAX_ADDRESSES])
        if len(_ADDRESS_FIELDS) >= _ADDRESS_FIELDS_MAX:
            _ADDRESS_FIELDS.clear()
        _ADDRESS_FIELDS[raws] = rendered
    return rendered


def _address_list(addrs: list[tuple]) -> bytes:
    if not addrs:
        return b"NIL"
    return b"(" + b"".join(b"(" + b" ".join(_s(x) for x in a) + b")" for a in addrs) + b")"


_ATOM = re.compile(r'[^\s"\[<>@,;:()]+')  # dots stay in atoms: dot-atoms and "Joe Q. Public"


def _tokens(s: str) -> list[tuple]:
    """RFC 5322 lexical tokens: ("q", unquoted, as sent), ("c", comment), ("d", [literal]),
    ("s", special), ("a", atom); whitespace dropped. An unbalanced quote, comment or literal
    runs to the end of the text."""
    out: list[tuple] = []
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c.isspace() or c == ")":
            i += 1
        elif c == "(":
            depth, j, buf = 0, i, []
            while j < n:
                ch = s[j]
                if ch == "\\" and j + 1 < n:
                    buf.append(s[j + 1])
                    j += 2
                    continue
                if ch == "(":
                    depth += 1
                    if depth > 1:
                        buf.append(ch)
                elif ch == ")":
                    depth -= 1
                    if depth == 0:
                        j += 1
                        break
                    buf.append(ch)
                else:
                    buf.append(ch)
                j += 1
            out.append(("c", "".join(buf)))
            i = j
        elif c == '"' or c == "[":
            close = '"' if c == '"' else "]"
            j, buf = i + 1, []
            while j < n and s[j] != close:
                if s[j] == "\\" and j + 1 < n:
                    j += 1
                buf.append(s[j])
                j += 1
            j = min(j + 1, n)
            if c == '"':
                out.append(("q", "".join(buf), s[i:j]))
            else:
                out.append(("d", s[i:j]))
            i = j
        elif c in "<>@,;:":
            out.append(("s", c))
            i += 1
        else:
            m = _ATOM.match(s, i)
            if m is None:
                i += 1
                continue
            out.append(("a", m.group()))
            i = m.end()
    return out


def parse_addresses(s: str) -> list[tuple[str | None, str | None, str | None, str | None]]:
    """An address-list as ENVELOPE address tuples (name, adl, mailbox, host), with group start
    (NIL NIL name NIL) and end (NIL NIL NIL NIL) markers (RFC 3501 7.4.2). Lenient."""
    toks = _tokens(s)
    out: list[tuple] = []
    in_group = False
    i = 0
    n = len(toks)
    while i < n and len(out) < MAX_ADDRESSES:
        # one mailbox, group start, or group end
        phrase: list[tuple] = []
        while i < n and not (toks[i][0] == "s" and toks[i][1] in ",;:<"):
            phrase.append(toks[i])
            i += 1
        sep = toks[i][1] if i < n else ""
        if sep == ":" and not in_group:
            out.append((None, None, _phrase(phrase) or "", None))
            in_group = True
            i += 1
            continue
        if sep == "<":
            i += 1
            inner: list[tuple] = []
            while i < n and not (toks[i][0] == "s" and toks[i][1] == ">"):
                inner.append(toks[i])
                i += 1
            i += 1  # the ">"
            name = _phrase(phrase)
            adl, mailbox, host = _route_addr(inner)
            # anything between ">" and the next "," or ";" (comments, junk) is ignored
            while i < n and not (toks[i][0] == "s" and toks[i][1] in ",;"):
                i += 1
            sep = toks[i][1] if i < n else ""
            out.append((name, adl, mailbox, host))
        elif phrase:
            spec = _addr_spec(phrase)
            if spec is not None:
                out.append(spec)
        i += 1
        if sep == ";" and in_group:
            out.append((None, None, None, None))
            in_group = False
            while i < n and toks[i] != ("s", ","):  # junk after a group's ";"
                i += 1
    if in_group:
        out.append((None, None, None, None))
    return out


def _phrase(toks: list[tuple]) -> str | None:
    words = [t[1] for t in toks if t[0] in ("a", "q", "d") or t == ("s", "@")]
    if not words:
        comments = [t[1] for t in toks if t[0] == "c" and t[1].strip()]
        return comments[-1].strip() if comments else None
    return " ".join(words)


def _route_addr(toks: list[tuple]) -> tuple[str | None, str, str]:
    toks = [t for t in toks if t[0] != "c"]
    adl = None
    if toks and toks[0] == ("s", "@"):
        for k, t in enumerate(toks):
            if t == ("s", ":"):
                adl = _raw(toks[:k])
                toks = toks[k + 1 :]
                break
    spec = _addr_spec(toks)
    if spec is None:  # "<>"
        return adl, "MISSING_MAILBOX", "MISSING_DOMAIN"
    return adl, spec[2], spec[3]


def _addr_spec(toks: list[tuple]) -> tuple[str | None, None, str, str] | None:
    """local@domain, the name from a comment; None when there is nothing but comments."""
    comments = [t[1].strip() for t in toks if t[0] == "c" and t[1].strip()]
    toks = [t for t in toks if t[0] != "c"]
    if not toks:
        return None
    at = max((k for k, t in enumerate(toks) if t == ("s", "@")), default=-1)
    if at < 0:
        local, host = _raw(toks), "MISSING_DOMAIN"
    else:
        # the domain is one dot-atom or domain-literal; words after it are junk
        after = toks[at + 1 : at + 2]
        local = _raw(toks[:at])
        host = after[0][1] if after and after[0][0] in ("a", "d") else "MISSING_DOMAIN"
    return (comments[-1] if comments else None, None, local or "MISSING_MAILBOX", host)


def _raw(toks: list[tuple]) -> str:
    return "".join(t[2] if t[0] == "q" else t[1] for t in toks)


def _params_value(params: list[tuple[str, str]], text: bool) -> bytes:
    items = list(params)
    if text and not any(n.lower() == "charset" for n, _ in items):
        items.append(("charset", "us-ascii"))
    if not items:
        return b"NIL"
    return b"(" + b" ".join(_s(n) + b" " + _s(v) for n, v in items) + b")"


def _ext(e: _Entity, params: list[tuple[str, str]] | None) -> bytes:
    """md5 (single parts only: params None), disposition, language, location."""
    out = []
    if params is None:
        out.append(_s(e.first("content-md5")))
    raw = e.first("content-disposition")
    dsp = None if raw is None else _disposition(raw[:MAX_STRUCTURED].decode("latin-1"))
    out.append(b"NIL" if dsp is None else b"(" + _s(dsp[0]) + b" " + _params_value(dsp[1], False) + b")")
    raw = e.first("content-language")
    langs = []
    if raw is not None:
        text = _strip_comments(raw[:MAX_STRUCTURED].decode("latin-1"))
        langs = [x.strip() for x in text.split(",") if x.strip()][:100]
    out.append(b"(" + b" ".join(_s(x) for x in langs) + b")" if langs else b"NIL")
    out.append(_s(e.first("content-location")))
    return b" ".join(out)


def _body(e: _Entity, ext: bool) -> bytes:
    ctype, sub, params = e.ctype()
    if e.kind == "multipart":
        kids = e.children()
        inner = (
            b"".join(_body(c, ext) for c in kids) if kids else (EMPTY_BODYSTRUCTURE if ext else EMPTY_BODY)
        )
        out = inner + b" " + _s(sub)
        if ext:
            out += b" " + _params_value(params, False) + b" " + _ext(e, [])
        return b"(" + out + b")"
    if e.opaque_message():
        ctype, sub = "application", "octet-stream"
    text = ctype.lower() == "text"
    body = e.body_bytes()
    fields = [
        _s(ctype),
        _s(sub),
        _params_value(params, text),
        _s(e.first("content-id")),
        _s(e.first("content-description")),
        _s(e.cte() or "7bit"),
        b"%d" % len(body),
    ]
    if text:
        fields.append(b"%d" % _lines(body))
    elif e.kind == "message":
        inner = e.inner()
        fields += [_envelope(inner), _body(inner, ext), b"%d" % _lines(body)]
    if ext:
        fields.append(_ext(e, None))
    return b"(" + b" ".join(fields) + b")"


def _lines(body: bytes) -> int:
    """Text lines: the line ends in the body. A last line without one (a part ended by the
    CRLF of the next delimiter) is not counted, as Dovecot counts."""
    return body.count(b"\n")


def _decode_cte(cte: str, body: bytes) -> bytes | None:
    if cte in _IDENTITY_CTE:
        return body
    if cte == "base64":
        cleaned = re.sub(rb"[^A-Za-z0-9+/]", b"", body)
        cleaned = cleaned[: len(cleaned) - len(cleaned) % 4] if len(cleaned) % 4 == 1 else cleaned
        cleaned += b"=" * (-len(cleaned) % 4)
        try:
            return binascii.a2b_base64(cleaned)
        except binascii.Error:
            return b""
    if cte == "quoted-printable":
        return binascii.a2b_qp(body)
    return None
