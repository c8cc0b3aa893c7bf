"""IMAP mailbox names: modified UTF-7 (RFC 3501 5.1.3) and the rules for safe folder names.

Folder directories hold the modified UTF-7 form (as Courier and Dovecot do for Maildir++), so any
Maildir tool sees plain ASCII names. The API of the store takes and returns Unicode names.
"""

from __future__ import annotations

import base64
import re

from .errors import InvalidFolderName

SEPARATOR = "."
INBOX = "INBOX"
# One directory entry on Linux; ".<encoded name>" must fit.
NAME_MAX = 255

_B64_ALPHABET = re.compile(r"[A-Za-z0-9+,]+\Z")


def _printable(ch: str) -> bool:
    return 0x20 <= ord(ch) <= 0x7E


def _plain(text: str) -> bool:
    """Printable ASCII without '&': its own modified UTF-7 form (INBOX, most names)."""
    return text.isascii() and text.isprintable() and "&" not in text


def encode(name: str) -> str:
    """Unicode → modified UTF-7. Raises InvalidFolderName for lone surrogates."""
    if _plain(name):
        return name
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if not pending:
            return
        try:
            raw = "".join(pending).encode("utf-16-be")
        except UnicodeEncodeError as exc:
            raise InvalidFolderName(f"name contains an unpaired surrogate: {name!r}") from exc
        text = base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",")
        out.append(f"&{text}-")
        pending.clear()

    for ch in name:
        if _printable(ch):
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    return "".join(out)


def decode(encoded: str) -> str:
    """Modified UTF-7 → Unicode, strictly: only the one canonical encoding of a name is accepted."""
    if _plain(encoded):
        return encoded
    out: list[str] = []
    i = 0
    after_shift = False
    while i < len(encoded):
        ch = encoded[i]
        if ch != "&":
            if not _printable(ch):
                raise InvalidFolderName(f"raw non-ASCII or control character in {encoded!r}")
            out.append(ch)
            after_shift = False
            i += 1
            continue
        end = encoded.find("-", i + 1)
        if end == -1:
            raise InvalidFolderName(f"unterminated '&' in {encoded!r}")
        chunk = encoded[i + 1 : end]
        i = end + 1
        if not chunk:
            out.append("&")
            after_shift = False
            continue
        if after_shift:
            raise InvalidFolderName(f"two adjacent encoded runs in {encoded!r}")
        if not _B64_ALPHABET.match(chunk) or len(chunk) % 4 == 1:
            raise InvalidFolderName(f"bad modified base64 {chunk!r} in {encoded!r}")
        raw = base64.b64decode(chunk.replace(",", "/") + "=" * (-len(chunk) % 4))
        if len(raw) % 2 or base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",") != chunk:
            raise InvalidFolderName(f"non-canonical modified base64 {chunk!r} in {encoded!r}")
        try:
            text = raw.decode("utf-16-be")
        except UnicodeDecodeError as exc:
            raise InvalidFolderName(f"bad UTF-16 in {encoded!r}") from exc
        if any(_printable(c) for c in text):
            raise InvalidFolderName(f"printable ASCII must not be base64-encoded: {encoded!r}")
        out.append(text)
        after_shift = True
    return "".join(out)


def normalize(name: str) -> str:
    """Validate a Unicode folder name and return its canonical form (INBOX in upper case).

    Refused: empty names or hierarchy levels (which also covers '..', leading or trailing '.'),
    '/', NUL and other control characters, the LIST wildcards '%' and '*', unpaired surrogates,
    and names whose directory (".<modified UTF-7>") would be longer than 255 bytes.
    """
    if not isinstance(name, str) or not name:
        raise InvalidFolderName("empty folder name")
    # Printable ASCII needs no look at each character for controls (INBOX, most names).
    if not (name.isascii() and name.isprintable()) or "/" in name or "%" in name or "*" in name:
        for ch in name:
            if ch == "/" or ch in "%*" or ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0:
                raise InvalidFolderName(f"character {ch!r} is not allowed in folder name {name!r}")
    levels = name.split(SEPARATOR)
    if any(not level for level in levels):
        raise InvalidFolderName(f"empty hierarchy level in folder name {name!r}")
    if levels[0].upper() == INBOX:
        levels[0] = INBOX
    canonical = SEPARATOR.join(levels)
    if canonical != INBOX and len(("." + encode(canonical)).encode("ascii")) > NAME_MAX:
        raise InvalidFolderName(f"folder name too long: {name[:40]!r}...")
    return canonical


def directory_name(name: str) -> str:
    """The Maildir++ directory of a (non-INBOX) folder: '.' + modified UTF-7 of the name."""
    canonical = normalize(name)
    if canonical == INBOX:
        raise InvalidFolderName("INBOX is the Maildir root, not a Maildir++ folder")
    return "." + encode(canonical)


def from_directory(entry: str) -> str | None:
    """The folder name of a Maildir++ directory entry, or None if it is not a valid one."""
    if not entry.startswith(".") or entry in (".", ".."):
        return None
    try:
        name = decode(entry[1:])
        canonical = normalize(name)
    except InvalidFolderName:
        return None
    if canonical == INBOX or encode(canonical) != entry[1:]:
        return None
    return canonical


def parent_names(name: str) -> list[str]:
    """The superior names of a name, outermost first: 'a.b.c' → ['a', 'a.b']."""
    levels = name.split(SEPARATOR)
    return [SEPARATOR.join(levels[:n]) for n in range(1, len(levels))]
