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
    """`views` ordered by `criteria` ((reverse, key) pairs, most significant first).

    Each message is read once and only its sort values are kept while sorting."""
    getters = []
    for _, name in criteria:
        getter = _VALUES.get(name.upper())
        if getter is None:
            raise ValueError(f"unknown sort key {name[:40]}")
        getters.append(getter)
    rows = []
    for view in sorted(views, key=lambda v: v.seq):
        m = LazyMessage(view)
        rows.append((tuple(get(m) for get in getters), view))
    for index in reversed(range(len(criteria))):  # stable sorts, least significant first
        rows.sort(key=lambda row: row[0][index], reverse=criteria[index][0])
    return [view for _, view in rows]


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
_BLOB = re.compile(r"\[[^\[\]]*\] *")
_REFWD = re.compile(r"(?:re|fwd?) *(?:\[[^\[\]]*\] *)?:", re.IGNORECASE)


def base_subject(subject: str) -> tuple[str, bool]:
    """The base subject of a decoded Subject: value and whether it was a reply or forward.

    RFC 5256 2.1 steps 1-7: whitespace runs become one space; trailing "(fwd)" and blanks go;
    leading "Re:", "Fw:", "Fwd:" (with [blob]s around them) and blanks go; a leading [blob]
    goes if something is left; "[fwd: ...]" is unwrapped, all repeated until nothing changes.
    A reply or forward is a subject from which a subj-refwd, a "(fwd)" trailer or a
    "[fwd: ...]" wrapper was removed (RFC 5256 4, REFERENCES step 5).

    The text is never copied while it shrinks (two indexes move inwards), and a run of blobs is
    scanned once, so a hostile subject of thousands of "[x]" or "re:" costs linear time.
    """
    s = _WSP_RUN.sub(" ", subject)
    i, j = 0, len(s)
    reply = False
    while True:
        # (2) trailing blanks and "(fwd)"
        while j > i:
            if s[j - 1] == " ":
                j -= 1
            elif j - i >= 5 and s[j - 5 : j].lower() == "(fwd)":
                j -= 5
                reply = True
            else:
                break
        # (3)-(5) leaders: blanks, *blob refwd; then leading blobs that leave something
        while True:
            while i < j and s[i] == " ":
                i += 1
            blob_ends = []
            pos = i
            while (m := _BLOB.match(s, pos, j)) is not None:
                pos = m.end()
                blob_ends.append(pos)
            m = _REFWD.match(s, pos, j)
            if m is not None:
                i = m.end()
                reply = True
                continue
            # (4) repeated: each blob goes while a non-empty base subject remains after it
            if blob_ends:
                if blob_ends[-1] < j:
                    i = blob_ends[-1]
                elif len(blob_ends) > 1:
                    i = blob_ends[-2]
            break
        # (6) "[fwd:" ... "]"
        if j - i >= 6 and s[i : i + 5].lower() == "[fwd:" and s[j - 1] == "]":
            i += 5
            j -= 1
            reply = True
            continue
        return s[i:j], reply
