"""The Authentication-Results header (RFC 8601) and the removal of headers that imitate ours.

One header per message, with our host name as authserv-id, lists every method that ran
(spf, dkim per signature, dmarc). Before it is added, every Authentication-Results that
claims our authserv-id (RFC 8601 5: a forgery, or a copy from an earlier pass) and every
X-Spam-* / X-Virus-* header (the ones we add) is removed, so a header of ours in a mailbox
was written by us.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Header names we add ourselves; anything the sender put there under these names goes.
OWN_PREFIXES = (b"x-spam-", b"x-virus-")
MAX_HEADER_LINES = 10_000  # a header section longer than this is left as it is past that point
_TOKEN = re.compile(r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$")
_DOT_ATOM_ADDRESS = re.compile(r"^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.]*@[A-Za-z0-9.\-]+$")
_COMMENT = re.compile(r"\([^()]*\)")


@dataclass(frozen=True)
class MethodResult:
    """One resinfo: method=result (reason) ptype.property=value ..."""

    method: str  # spf, dkim, dmarc
    result: str  # pass, fail, none, neutral, softfail, temperror, permerror, ...
    comment: str = ""
    properties: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    def render(self) -> str:
        parts = [f"{self.method}={self.result}"]
        if self.comment:
            parts.append(f"({_comment(self.comment)})")
        parts.extend(f"{name}={quote_value(value)}" for name, value in self.properties)
        return " ".join(parts)


def _comment(text: str) -> str:
    """Comment text without characters that would end or nest the comment."""
    cleaned = "".join(c for c in text if c.isprintable() and c not in "()\\")
    return cleaned[:200]


def quote_value(value: str) -> str:
    """A property value as RFC 8601 allows it: a token, an address, or a quoted string."""
    if _TOKEN.match(value) or (_DOT_ATOM_ADDRESS.match(value) and not value.startswith("@")):
        return value
    escaped = "".join(c for c in value if c.isprintable()).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped[:256]}"'


def header(authserv_id: str, results: list[MethodResult]) -> bytes:
    """The complete header field, CRLF-terminated, one resinfo per folded line."""
    if not results:
        return f"Authentication-Results: {authserv_id}; none\r\n".encode()
    body = ";\r\n\t".join(r.render() for r in results)
    return f"Authentication-Results: {authserv_id};\r\n\t{body}\r\n".encode("utf-8", "replace")


def split_message(message: bytes) -> tuple[bytes, bytes]:
    """(header section including its last CRLF, the rest from the empty line on)."""
    if message.startswith(b"\r\n"):
        return b"", message
    end = message.find(b"\r\n\r\n")
    if end < 0:
        return message, b""
    return message[: end + 2], message[end + 2 :]


def fields(head: bytes) -> list[bytes]:
    """The header fields of a header section, each with its continuation lines and CRLFs."""
    out: list[bytes] = []
    if not head:
        return out
    for line in head.split(b"\r\n")[:-1] if head.endswith(b"\r\n") else head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and out:
            out[-1] += line + b"\r\n"
        else:
            out.append(line + b"\r\n")
    return out


def authserv_id_of(value: bytes) -> str:
    """The authserv-id of an Authentication-Results value (comments and version dropped)."""
    text = value.decode("utf-8", "replace")
    previous = None
    while previous != text:  # nested comments, innermost first
        previous, text = text, _COMMENT.sub(" ", text)
    first = text.split(";", 1)[0].strip()
    return first.split()[0].lower() if first.split() else ""


def strip_forged(message: bytes, authserv_id: str) -> tuple[bytes, int]:
    """The message without headers that imitate ours, and how many were removed."""
    head, rest = split_message(message)
    kept: list[bytes] = []
    removed = 0
    ours = authserv_id.lower()
    for index, raw in enumerate(fields(head)):
        if index >= MAX_HEADER_LINES:
            kept.append(raw)
            continue
        name, colon, value = raw.partition(b":")
        lowered = name.strip().lower()
        if colon and (
            lowered.startswith(OWN_PREFIXES)
            or (lowered == b"authentication-results" and authserv_id_of(value) == ours)
        ):
            removed += 1
            continue
        kept.append(raw)
    return b"".join(kept) + rest, removed


def header_values(message: bytes, name: str) -> list[str]:
    """Unfolded values of every header field called name (case-insensitive)."""
    head, _ = split_message(message)
    wanted = name.lower().encode()
    values = []
    for raw in fields(head):
        field_name, colon, value = raw.partition(b":")
        if colon and field_name.strip().lower() == wanted:
            values.append(re.sub(rb"\r\n[ \t]", b" ", value).strip().decode("utf-8", "replace"))
    return values
