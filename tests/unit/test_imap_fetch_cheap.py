"""FETCH of UID/FLAGS/MODSEQ answered from the store's columns gives the very bytes of the general
renderer, for every order of the items, with and without UID FETCH, CONDSTORE and CHANGEDSINCE."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from mailroom.imap import fetching
from mailroom.imap.protocol import SequenceSet
from mailroom.imap.protocol.fetch import Attr, Section
from mailroom.imap.selected import Selected
from mailroom.store import Folder, Maildir, Mode


@pytest.fixture
def selected(tmp_path: Path) -> Selected:
    box = Maildir(tmp_path / "example.test" / "alice")
    box.create()
    for i in range(8):
        box.deliver(f"Subject: m{i}\n\nbody {i}\n".encode())
    folder = Folder(box.path)
    folder.sync()
    folder.store_flags([2, 3], ["\\Seen", "$Label1"], Mode.ADD)
    folder.store_flags([5], ["\\Answered", "\\Flagged", "\\Deleted", "\\Draft", "\\Seen"], Mode.ADD)
    view = Selected(Folder(box.path), "INBOX", readonly=False)
    view.open()
    return view


def general(selected: Selected, batch, items, with_uid, with_modseq, changedsince) -> bytes:  # type: ignore[no-untyped-def]
    out = b""
    for seq, uid in batch:
        info = selected.info(uid)
        if info is None or (changedsince is not None and info.modseq <= changedsince):
            continue
        out += fetching.render(seq, info, items, None, with_uid=with_uid, with_modseq=with_modseq)
    return out


@pytest.mark.parametrize("with_uid", [False, True])
@pytest.mark.parametrize("with_modseq", [False, True])
@pytest.mark.parametrize("changedsince", [None, 2])
def test_cheap_fetch_matches_the_general_renderer(
    selected: Selected, with_uid: bool, with_modseq: bool, changedsince: int | None
) -> None:
    batch = selected.resolve(SequenceSet.parse("1:*"), uid=False)
    for size in (1, 2, 3):
        for names in itertools.permutations(["UID", "FLAGS", "MODSEQ"], size):
            items = tuple(Attr(name) for name in names)
            assert fetching.cheap(items)
            out, gone = fetching.render_cheap(
                selected,
                [seq for seq, _ in batch],
                [uid for _, uid in batch],
                items,
                with_uid=with_uid,
                with_modseq=with_modseq,
                changedsince=changedsince,
            )
            assert gone == 0
            assert out == general(selected, batch, items, with_uid, with_modseq, changedsince), names
            assert out  # something was rendered (every message, or those changed since 2)


def test_cheap_fetch_counts_messages_expunged_meanwhile(selected: Selected) -> None:
    selected.pending_expunge.add(4)
    batch = [(seq, uid) for seq, uid in enumerate(selected.uids, 1)]
    batch.append((99, 4242))  # a UID the store does not have
    out, gone = fetching.render_cheap(
        selected,
        [seq for seq, _ in batch],
        [uid for _, uid in batch],
        (Attr("FLAGS"),),
        with_uid=True,
        with_modseq=False,
        changedsince=None,
    )
    assert gone == 2
    assert b"UID 4 " not in out and out.count(b"FETCH") == 7
    assert b"* 5 FETCH (UID 5 FLAGS (\\Answered \\Deleted \\Draft \\Flagged \\Seen))\r\n" in out


def test_items_that_need_more_than_the_listing_are_not_cheap() -> None:
    assert not fetching.cheap((Attr("FLAGS"), Attr("INTERNALDATE")))
    assert not fetching.cheap((Attr("UID"), Attr("RFC822.SIZE")))
    assert not fetching.cheap((Attr("FLAGS"), Section()))
