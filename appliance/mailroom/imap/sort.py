"""SORT (RFC 5256 3, with RFC 5957 DISPLAYFROM/DISPLAYTO) over the messages SEARCH selected.

    matches = search.evaluate(cmd.keys, views, ctx)
    ordered = sort(cmd.criteria, matches)        # criteria as parsed: ((reverse, key), ...)
    responses.sort(v.uid if cmd.uid else v.seq for v in ordered)

Sort values, compared as case-folded text (close to i;unicode-casemap) or numbers:
- ARRIVAL: INTERNALDATE. DATE: the sent date, the Date: field converted to UTC, or the
  INTERNALDATE when it is missing or unreadable (RFC 5256 2.2). SIZE: RFC822.SIZE.
- FROM, TO, CC: the local part (addr-mailbox) of the first address of that field, empty if none.
- DISPLAYFROM, DISPLAYTO: the first address's decoded display name, else mailbox@host, else
  the mailbox (RFC 5957 3).
- SUBJECT: the base subject (`base_subject`, RFC 5256 2.1).
REVERSE turns one criterion around; messages equal on every criterion stay in sequence order.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from .search import LazyMessage, MessageView, decode_header

KEYS = frozenset(["ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO"])
MAX_ADDRESS_FIELD = 16384  # octets of an address field looked at for the first address

V = TypeVar("V", bound=MessageView)


def sort(criteria: Sequence[tuple[bool, str]], views: Iterable[V]) -> list[V]:
    """`views` ordered by `criteria` ((reverse, key) pairs, most significant first)."""
    items = sorted(views, key=lambda v: v.seq)
    messages = {id(v): LazyMessage(v) for v in items}
    for reverse, name in reversed(criteria):  # stable sorts, least significant first
        value = _VALUES.get(name.upper())
        if value is None:
            raise ValueError(f"unknown sort key {name}")
        values = {id(v): value(messages[id(v)]) for v in items}
        items.sort(key=lambda v: values[id(v)], reverse=reverse)
    return items


def _address_field(m: LazyMessage, name: str) -> tuple[str, str]:
    """(display name, addr-spec) of the first address in field `name`; empty strings if none."""
    raw = m.raw(name)
    if raw is None:
        return "", ""
    text = raw[:MAX_ADDRESS_FIELD].decode("utf-8", "replace").replace("\r", " ").replace("\n", " ")
    for display, addr in email.utils.getaddresses([text]):
        if display or addr:
            return decode_header(display.encode("utf-8")).strip(), addr.strip()
    return "", ""


def _mailbox(m: LazyMessage, name: str) -> str:
    _, addr = _address_field(m, name)
    return addr.rpartition("@")[0].casefold() if "@" in addr else addr.casefold()


def _display(m: LazyMessage, name: str) -> str:
    display, addr = _address_field(m, name)
    return (display or addr).casefold()


_VALUES: dict[str, Callable[[LazyMessage], object]] = {
    "ARRIVAL": lambda m: m.view.internaldate,
    "DATE": lambda m: m.sent_time(),
    "SIZE": lambda m: m.view.size,
    "FROM": lambda m: _mailbox(m, "from"),
    "TO": lambda m: _mailbox(m, "to"),
    "CC": lambda m: _mailbox(m, "cc"),
    "DISPLAYFROM": lambda m: _display(m, "from"),
    "DISPLAYTO": lambda m: _display(m, "to"),
    "SUBJECT": lambda m: base_subject(m.first("subject"))[0].casefold(),
}


# ------------------------------------------------------------------------- base subject (2.1)
_WSP_RUN = re.compile(r"[ \t\r\n]+")
_BLOB = r"\[[^\[\]]*\] *"
_LEADER = re.compile(r"(?:" + _BLOB + r")*(?:re|fwd?) *(?:" + _BLOB + r")?:", re.IGNORECASE)
_BLOB_PREFIX = re.compile(_BLOB)


def base_subject(subject: str) -> tuple[str, bool]:
    """The base subject of a decoded Subject: value and whether it was a reply or forward.

    RFC 5256 2.1 steps 1-7: whitespace runs become one space; trailing "(fwd)" and blanks go;
    leading "Re:", "Fw:", "Fwd:" (with [blob]s around them) and blanks go; a leading [blob]
    goes if something is left; "[fwd: ...]" is unwrapped, all repeated until nothing changes.
    A reply or forward is a subject from which a subj-refwd, a "(fwd)" trailer or a
    "[fwd: ...]" wrapper was removed (RFC 5256 4, REFERENCES step 5).
    """
    s = _WSP_RUN.sub(" ", subject)
    reply = False
    while True:
        # (2) trailers
        while True:
            s = s.rstrip(" ")
            if s[-5:].lower() == "(fwd)":
                s = s[:-5]
                reply = True
            else:
                break
        # (3)-(5) leaders and blobs
        while True:
            before = s
            s = s.lstrip(" ")
            m = _LEADER.match(s)
            if m:
                s = s[m.end() :]
                reply = True
            m = _BLOB_PREFIX.match(s)
            if m and s[m.end() :].strip(" "):
                s = s[m.end() :]
            if s == before:
                break
        # (6) [fwd: ...]
        if s[:5].lower() == "[fwd:" and s.endswith("]"):
            s = s[5:-1]
            reply = True
            continue
        return s, reply
