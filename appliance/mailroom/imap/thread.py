"""THREAD (RFC 5256 3): ORDEREDSUBJECT and REFERENCES over the messages SEARCH selected.

    matches = search.evaluate(cmd.keys, views, ctx)
    roots = thread(cmd.algorithm, matches, uid=cmd.uid)   # ValueError for another algorithm
    responses.thread(roots)

Each `responses.ThreadNode` carries a sequence number (or UID with `uid=True`), or None for a
missing parent that holds several threads with one subject together.

The sent date is the Date: field in UTC, or the INTERNALDATE when it is missing or unreadable;
equal sent dates keep sequence order. Subjects compare as case-folded base subjects
(`sort.base_subject`). Message-IDs compare exactly (the text between < and >).

Bounds against hostile headers: only the last `MAX_REFERENCES` Message-IDs of a References field
count, and linking a message under a parent walks at most `MAX_DEPTH` ancestors to rule out a
loop; a deeper chain is not linked (the message starts its own thread). Every tree walk is
iterative, so deep threads do not exhaust the stack.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .protocol.responses import ThreadNode
from .search import LazyMessage, MessageView
from .sort import base_subject

ALGORITHMS = ("ORDEREDSUBJECT", "REFERENCES")
MAX_REFERENCES = 100
MAX_DEPTH = 10000
MAX_ID_FIELD = 65536  # octets of a References/In-Reply-To/Message-ID field read

_MSG_ID = re.compile(rb"<([^<>\s]+)>")


class _Info:
    """What threading needs of one message, read once."""

    __slots__ = ("msgid", "number", "refs", "reply", "sent", "seq", "subject")

    def __init__(self, view: MessageView, uid: bool, with_refs: bool) -> None:
        m = LazyMessage(view)
        self.number = view.uid if uid else view.seq
        self.seq = view.seq
        self.sent = m.sent_time()
        base, self.reply = base_subject(m.first("subject"))
        self.subject = base.casefold()
        self.msgid: bytes | None = None
        self.refs: list[bytes] = []
        if with_refs:
            ids = _ids(m.raw("message-id"))
            self.msgid = ids[0] if ids else None
            refs = _ids(m.raw("references"))
            if not refs:
                refs = _ids(m.raw("in-reply-to"))[:1]
            self.refs = refs[-MAX_REFERENCES:]

    def key(self) -> tuple[float, int]:
        return self.sent, self.seq


def _ids(raw: bytes | None) -> list[bytes]:
    if raw is None:
        return []
    return _MSG_ID.findall(raw[-MAX_ID_FIELD:])


def thread(algorithm: str, views: Sequence[MessageView], *, uid: bool = False) -> list[ThreadNode]:
    """The threads of `views` as trees, in the order the response lists them."""
    name = algorithm.upper()
    if name not in ALGORITHMS:
        raise ValueError(f"unknown THREAD algorithm {algorithm[:40]}")
    infos = [_Info(v, uid, name == "REFERENCES") for v in sorted(views, key=lambda v: v.seq)]
    if name == "ORDEREDSUBJECT":
        return ordered_subject(infos)
    return references(infos)


# --------------------------------------------------------------------------- ORDEREDSUBJECT
def ordered_subject(infos: list[_Info]) -> list[ThreadNode]:
    """Sort by base subject then sent date; each run of one subject is a thread whose first
    message is the parent of all the others; threads ordered by their first message's date."""
    ordered = sorted(infos, key=lambda i: (i.subject, i.sent, i.seq))
    threads: list[tuple[tuple[float, int], ThreadNode]] = []
    start = 0
    while start < len(ordered):
        end = start + 1
        while end < len(ordered) and ordered[end].subject == ordered[start].subject:
            end += 1
        first = ordered[start]
        children = tuple(ThreadNode(i.number) for i in ordered[start + 1 : end])
        threads.append((first.key(), ThreadNode(first.number, children)))
        start = end
    threads.sort(key=lambda t: t[0])
    return [node for _, node in threads]


# ------------------------------------------------------------------------------- REFERENCES
class _Container:
    __slots__ = ("children", "info", "parent")

    def __init__(self, info: _Info | None = None) -> None:
        self.info = info
        self.parent: _Container | None = None
        self.children: list[_Container] = []

    def add(self, child: _Container) -> None:
        child.parent = self
        self.children.append(child)

    def unlink(self) -> None:
        if self.parent is not None:
            self.parent.children.remove(self)
            self.parent = None

    def first_message(self) -> _Info | None:
        node: _Container | None = self
        while node is not None and node.info is None:
            node = node.children[0] if node.children else None
        return None if node is None else node.info


def _would_loop(parent: _Container, child: _Container) -> bool:
    """Whether making `child` a child of `parent` makes a loop (or the check is too deep)."""
    node: _Container | None = parent
    for _ in range(MAX_DEPTH):
        if node is None:
            return False
        if node is child:
            return True
        node = node.parent
    return node is not None


def _link(parent: _Container, child: _Container) -> None:
    if child.parent is None and not _would_loop(parent, child):
        parent.add(child)


def _sort_key(c: _Container) -> tuple[float, int]:
    info = c.first_message()
    return (0.0, 0) if info is None else info.key()


def _preorder(root: _Container) -> list[_Container]:
    out = []
    stack = [root]
    while stack:
        node = stack.pop()
        out.append(node)
        stack.extend(reversed(node.children))
    return out


def references(infos: list[_Info]) -> list[ThreadNode]:
    """RFC 5256 3, REFERENCES, steps 1-6."""
    # (1) id_table and links
    table: dict[bytes, _Container] = {}
    containers: list[_Container] = []
    for info in infos:
        container = table.get(info.msgid) if info.msgid is not None else None
        if container is not None and container.info is None:
            container.info = info
        else:  # no Message-ID, or a duplicate: a unique one
            container = _Container(info)
            if info.msgid is not None and info.msgid not in table:
                table[info.msgid] = container
            containers.append(container)
        # (A) link the references, parent before child
        previous: _Container | None = None
        for ref in info.refs:
            ref_container = table.get(ref)
            if ref_container is None:
                ref_container = table[ref] = _Container()
                containers.append(ref_container)
            if previous is not None and ref_container is not previous:
                _link(previous, ref_container)
            previous = ref_container
        # (B) the last reference is the parent; no references: no parent
        container.unlink()
        if previous is not None and previous is not container:
            _link(previous, container)
    # (2) the root set
    root = _Container()
    for container in containers:
        if container.parent is None:
            root.add(container)
    # (3) prune dummies, children before parents
    for node in reversed(_preorder(root)):
        kept: list[_Container] = []
        for child in node.children:
            if child.info is not None:
                kept.append(child)
            elif not child.children:
                continue
            elif node is root and len(child.children) > 1:
                kept.append(child)
            else:
                for grandchild in child.children:
                    grandchild.parent = node
                kept.extend(child.children)
        node.children = kept
    for child in root.children:
        child.parent = None
    # (4) sort the top level by sent date (a dummy by its earliest child)
    for top in root.children:
        if top.info is None:
            top.children.sort(key=_sort_key)
    roots = sorted(root.children, key=_sort_key)
    # (5) gather threads with the same base subject
    roots = _gather_subjects(roots)
    # (6) sort every set of siblings by sent date, the deepest first
    top = _Container()
    top.children = roots
    for node in reversed(_preorder(top)):
        node.children.sort(key=_sort_key)
    return _to_nodes(top.children)


def _subject_of(c: _Container) -> tuple[str, bool]:
    info = c.first_message()
    return ("", False) if info is None else (info.subject, info.reply)


def _gather_subjects(roots: list[_Container]) -> list[_Container]:
    table: dict[str, _Container] = {}
    for c in roots:
        subject, _ = _subject_of(c)
        if not subject:
            continue
        old = table.get(subject)
        if (
            old is None
            or (old.info is not None and c.info is None)
            or (old.info is not None and old.info.reply and c.info is not None and not c.info.reply)
        ):
            table[subject] = c
    gone: set[int] = set()
    replaced: dict[int, _Container] = {}
    for c in roots:
        if id(c) in gone or c.parent is not None:
            continue
        subject, reply = _subject_of(c)
        if not subject:
            continue
        old = table[subject]
        if old is c:
            continue
        if old.info is None and c.info is None:
            for child in c.children:
                old.add(child)
            c.children = []
            gone.add(id(c))
        elif old.info is None or (reply and not old.info.reply):
            old.add(c)
            gone.add(id(c))
        else:
            dummy = _Container()
            replaced[id(old)] = dummy
            dummy.add(old)
            dummy.add(c)
            gone.add(id(c))
            table[subject] = dummy
    return [replaced.get(id(c), c) for c in roots if id(c) not in gone]


def _to_nodes(roots: list[_Container]) -> list[ThreadNode]:
    top = _Container()
    top.children = roots
    built: dict[int, ThreadNode] = {}
    for node in reversed(_preorder(top)):
        children = tuple(built.pop(id(c)) for c in node.children)
        built[id(node)] = ThreadNode(None if node.info is None else node.info.number, children)
    return list(built[id(top)].children)
