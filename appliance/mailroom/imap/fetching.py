"""FETCH responses (RFC 3501 6.4.5, 7.4.2) for one message, from the store and the message parser.

Flags, UID, MODSEQ, RFC822.SIZE and INTERNALDATE come from the file name and a stat; the file
is read only when an item needs the content, and only its header when nothing needs more.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Sequence
from operator import itemgetter

from ..store import Folder, MessageInfo
from .message import ParsedMessage
from .protocol import fetch as f
from .protocol import responses as r
from .selected import Selected

# Items that need the whole message; HEADER-only sections need only the header.
_CONTENT_ATTRS = frozenset({"ENVELOPE", "BODY", "BODYSTRUCTURE", "RFC822", "RFC822.TEXT"})
_HEADER_ATTRS = frozenset({"ENVELOPE", "RFC822.HEADER"})
HEADER_READ = 64 * 1024  # octets read for header-only items; a longer header falls back to all


def sets_seen(items: Sequence[f.FetchAttr]) -> bool:
    """Whether fetching these items sets \\Seen (RFC 3501 6.4.5: BODY[...] and RFC822[.TEXT])."""
    for item in items:
        if isinstance(item, f.Section):
            if not item.peek and item.kind in ("BODY", "BINARY"):
                return True
        elif item.name in ("RFC822", "RFC822.TEXT"):
            return True
    return False


def needs_content(items: Sequence[f.FetchAttr]) -> str | None:
    """None (file name is enough), "header" or "all"."""
    need = None
    for item in items:
        if isinstance(item, f.Section):
            header_only = not item.part and item.text in ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT")
            if not (header_only and item.kind == "BODY"):
                return "all"
            need = "header"
        elif item.name in _HEADER_ATTRS:
            need = "header"
        elif item.name in _CONTENT_ATTRS:
            return "all"
    return need


def read_content(folder: Folder, uid: int, need: str | None) -> bytes | None:
    if need is None:
        return None
    with folder.open(uid) as handle:
        if need == "all":
            return handle.read()
        data = handle.read(HEADER_READ)
        if b"\n\n" in data or b"\r\n\r\n" in data or len(data) < HEADER_READ:
            return data
        return data + handle.read()


# The store hands out one frozenset per distinct flag combination, so a mailbox has few of them:
# their rendered form is kept instead of sorting and rendering the flags of every message again
# (UID FETCH 1:* (FLAGS) on a big mailbox). Bounded: keywords make combinations unbounded.
_FLAGS_RENDERED: dict[frozenset[str], bytes] = {}
_FLAGS_RENDERED_MAX = 4096


def flags_value(flags: frozenset[str]) -> bytes:
    """`(\\Seen $Label1 ...)`: the FLAGS value of a message, sorted as before."""
    rendered = _FLAGS_RENDERED.get(flags)
    if rendered is None:
        rendered = r.value([r.Atom(x) for x in sorted(flags)])
        if len(_FLAGS_RENDERED) < _FLAGS_RENDERED_MAX:
            _FLAGS_RENDERED[flags] = rendered
    return rendered


# ENVELOPE of messages fetched before: a client that lists a folder asks for the same ones
# again and again, and parsing the header is most of rendering it. A message's bytes never
# change, and its base name (the part before U=, or before ":" for a name without one) is unique
# to it, so (folder, UID, base name) cannot name another message even after the folder is
# deleted and made again. Bounded: the oldest half goes when it is full.
_ENVELOPES: dict[tuple[str, int, str], bytes] = {}
ENVELOPES_MAX = 16384


def envelope_of(info: MessageInfo, parsed: ParsedMessage) -> bytes:
    name = info.name
    cut = name.find(",U=")
    key = (str(info.folder), info.uid, name[:cut] if cut != -1 else name.partition(":")[0])
    value = _ENVELOPES.get(key)
    if value is None:
        value = parsed.envelope()
        if len(_ENVELOPES) >= ENVELOPES_MAX:
            for old in list(itertools.islice(_ENVELOPES, ENVELOPES_MAX // 2)):
                _ENVELOPES.pop(old, None)  # another thread may have dropped it
        _ENVELOPES[key] = value
    return value


def internaldate(info: MessageInfo) -> dt.datetime:
    return dt.datetime.fromtimestamp(int(info.internaldate), dt.UTC)


def render(
    seq: int,
    info: MessageInfo,
    items: Sequence[f.FetchAttr],
    content: bytes | None,
    *,
    with_uid: bool,
    with_modseq: bool,
    with_flags: bool = False,
) -> bytes:
    """`* seq FETCH (...)` for one message; `content` as read_content() gave it."""
    parsed = ParsedMessage(content) if content is not None else None
    parts: list[bytes] = []
    names: set[str] = set()

    def add(name: str, value: bytes) -> None:
        if name not in names:
            names.add(name)
            parts.append(name.encode("ascii") + b" " + value)

    if with_uid:
        add("UID", b"%d" % info.uid)
    for item in items:
        if isinstance(item, f.Section):
            assert parsed is not None
            if item.kind == "BINARY.SIZE":
                add(item.response_name().decode("ascii"), b"%d" % len(parsed.binary(item.part) or b""))
                continue
            data = parsed.section(item)
            parts.append(item.response_name() + b" " + r.literal(data))
            continue
        name = item.name
        if name == "UID":
            add("UID", b"%d" % info.uid)
        elif name == "FLAGS":
            add("FLAGS", flags_value(info.flags))
        elif name == "INTERNALDATE":
            add("INTERNALDATE", r.value(internaldate(info)))
        elif name == "RFC822.SIZE":
            add("RFC822.SIZE", b"%d" % info.wire_size)
        elif name == "MODSEQ":
            add("MODSEQ", b"(%d)" % info.modseq)
        else:
            assert parsed is not None
            if name == "ENVELOPE":
                add("ENVELOPE", envelope_of(info, parsed))
            elif name == "BODYSTRUCTURE":
                add("BODYSTRUCTURE", parsed.body_structure(True))
            elif name == "BODY":
                add("BODY", parsed.body_structure(False))
            elif name == "RFC822":
                add("RFC822", r.literal(parsed.section(f.Section())))
            elif name == "RFC822.HEADER":
                add("RFC822.HEADER", r.literal(parsed.header_bytes))
            elif name == "RFC822.TEXT":
                add("RFC822.TEXT", r.literal(parsed.text_bytes))
    if with_flags:
        add("FLAGS", flags_value(info.flags))
    if with_modseq:
        add("MODSEQ", b"(%d)" % info.modseq)
    return b"* %d FETCH (" % seq + b" ".join(parts) + b")\r\n"


# FETCH of nothing but UID, FLAGS and MODSEQ (what a client asks for every message of a big
# folder to sync its flags) is answered from the store's columns: no file name, no MessageInfo,
# one format per response, in batches far larger than those that read files.
_CHEAP_ITEMS = {"UID": (b"UID %d", 1), "FLAGS": (b"FLAGS %s", 2), "MODSEQ": (b"MODSEQ (%d)", 3)}
CHEAP_BATCH = 10_000


def cheap(items: Sequence[f.FetchAttr]) -> bool:
    """Whether every item comes from the listing alone (UID, FLAGS, MODSEQ)."""
    return all(not isinstance(item, f.Section) and item.name in _CHEAP_ITEMS for item in items)


def render_cheap(
    selected: Selected,
    seqs: Sequence[int],
    uids: Sequence[int],
    items: Sequence[f.FetchAttr],
    *,
    with_uid: bool,
    with_modseq: bool,
    changedsince: int | None,
) -> tuple[bytes, int]:
    """`* seq FETCH (...)` for each message (seqs and uids side by side, as Selected.runs gives
    them), and how many are gone; items as cheap()."""
    order = ["UID"] if with_uid else []
    order += [item.name for item in items if item.name not in order]  # type: ignore[union-attr]
    if with_modseq and "MODSEQ" not in order:
        order.append("MODSEQ")
    template = b"* %d FETCH (" + b" ".join(_CHEAP_ITEMS[name][0] for name in order) + b")\r\n"
    pick = itemgetter(0, *(_CHEAP_ITEMS[name][1] for name in order))
    pending = selected.pending_expunge
    if not pending and changedsince is None:
        run = selected.folder.columns(uids)
        if run is not None:  # every message is here: whole columns zipped into the template
            flags, modseqs = run
            values = {"UID": uids, "FLAGS": [flags_value(f) for f in flags], "MODSEQ": modseqs}
            rows = zip(seqs, *(values[name] for name in order), strict=True)
            return b"".join([template % row for row in rows]), 0
    summaries = selected.folder.summaries(list(uids))
    out = []
    gone = 0
    for seq, uid, summary in zip(seqs, uids, summaries, strict=True):
        if summary is None or uid in pending:
            gone += 1
            continue
        flags, modseq = summary
        if changedsince is not None and modseq <= changedsince:
            continue
        out.append(template % pick((seq, uid, flags_value(flags), modseq)))
    return b"".join(out), gone
