"""The selected folder's numbering and updates (imap/selected.py) against a real Maildir."""

from __future__ import annotations

import os
from array import array
from pathlib import Path

import pytest

from mailroom.imap.protocol import SequenceSet
from mailroom.imap.selected import Selected
from mailroom.store import Folder, Maildir, Mode


@pytest.fixture
def maildir(tmp_path: Path) -> Maildir:
    box = Maildir(tmp_path / "alice")
    box.create()
    return box


def opened(maildir: Maildir, n: int) -> Selected:
    for i in range(n):
        maildir.deliver(b"Subject: %d\n\nbody\n" % i)
    selected = Selected(Folder(maildir.path), "INBOX", readonly=False)
    selected.open()
    return selected


def test_sequence_sets_resolve_to_seq_uid_pairs(maildir: Maildir) -> None:
    selected = opened(maildir, 5)
    assert selected.resolve(SequenceSet.parse("2:3,5"), uid=False) == [(2, 2), (3, 3), (5, 5)]
    assert selected.resolve(SequenceSet.parse("4:*"), uid=False) == [(4, 4), (5, 5)]
    assert selected.resolve(SequenceSet.parse("*:4"), uid=True) == [(4, 4), (5, 5)]
    assert selected.resolve(SequenceSet.parse("3,3,1"), uid=True) == [(1, 1), (3, 3)]
    assert selected.resolve(SequenceSet.parse("99"), uid=True) == []
    assert selected.out_of_range(SequenceSet.parse("6"))
    assert not selected.out_of_range(SequenceSet.parse("1:*"))


@pytest.mark.parametrize(
    ("text", "uid"),
    [("1:*", False), ("1:*", True), ("2:3,5", False), ("7,1:4,3:9", False), ("*:4,2", True), ("99", True)],
)
def test_runs_are_the_resolved_pairs_in_chunks_without_a_tuple_per_message(
    maildir: Maildir, text: str, uid: bool
) -> None:
    selected = opened(maildir, 9)
    sequence = SequenceSet.parse(text)
    runs = selected.runs(sequence, uid=uid, size=2)
    assert all(0 < len(seqs) == len(uids) <= 2 for seqs, uids in runs)
    assert [pair for seqs, uids in runs for pair in zip(seqs, uids, strict=True)] == selected.resolve(
        sequence, uid=uid
    )
    # A span is a range and a slice of the UID array: FETCH 1:* of a big folder builds no pairs.
    assert all(isinstance(seqs, range) and isinstance(uids, array) for seqs, uids in runs)


def test_runs_of_the_saved_result(maildir: Maildir) -> None:
    selected = opened(maildir, 5)
    selected.saved = [5, 2, 3]
    runs = selected.runs(SequenceSet.parse("$"), uid=True, size=2)
    assert [(list(seqs), list(uids)) for seqs, uids in runs] == [([2, 3], [2, 3]), ([5], [5])]


def test_other_sessions_changes_become_untagged_responses(maildir: Maildir) -> None:
    selected = opened(maildir, 3)
    other = Folder(maildir.path)
    other.sync()
    other.store_flags([2], ["\\Seen"], "add")
    assert selected.updates(expunge=True, condstore=False, qresync=False) == b"* 2 FETCH (FLAGS (\\Seen))\r\n"
    other.store_flags([1, 3], ["\\Deleted"], "add")
    other.expunge()
    maildir.deliver(b"Subject: new\n\n")
    # During FETCH/STORE/SEARCH no EXPUNGE: the numbers stay, the new message is announced.
    assert selected.updates(expunge=False, condstore=False, qresync=False) == b"* 4 EXISTS\r\n"
    assert selected.uids.tolist() == [1, 2, 3, 4]
    assert selected.info(1) is None  # gone, still numbered
    # The next command that may carry EXPUNGE reports both, highest number first.
    assert selected.updates(expunge=True, condstore=False, qresync=False) == b"* 3 EXPUNGE\r\n* 1 EXPUNGE\r\n"
    assert selected.uids.tolist() == [2, 4]


def test_qresync_reports_vanished_and_condstore_modseq(maildir: Maildir) -> None:
    selected = opened(maildir, 2)
    other = Folder(maildir.path)
    other.sync()
    other.store_flags([1], ["\\Flagged"], "add")
    modseq = other.message(1).modseq
    out = selected.updates(expunge=True, condstore=True, qresync=True)
    assert out == b"* 1 FETCH (UID 1 FLAGS (\\Flagged) MODSEQ (%d))\r\n" % modseq
    other.store_flags([2], ["\\Deleted"], "add")
    other.expunge()
    assert selected.updates(expunge=True, condstore=True, qresync=True) == b"* VANISHED 2\r\n"


def test_sessions_share_the_uid_array_until_one_changes_it(maildir: Maildir) -> None:
    """SELECT copies no UIDs: the listing, each Folder and each session share one array, and
    whoever changes it first takes a copy, so no one sees another's change before its own sync."""
    first = opened(maildir, 4)
    second = Selected(Folder(maildir.path), "INBOX", readonly=False)
    second.open()
    assert second.uids is first.uids  # one array for both sessions (and the listing)
    maildir.deliver(b"Subject: new\n\n")
    writer = Folder(maildir.path)
    writer.sync()  # the listing takes the new message: into a copy of its own
    writer.store_flags([1, 2], ["\\Deleted"], "add")
    writer.expunge()
    assert first.uids.tolist() == second.uids.tolist() == [1, 2, 3, 4]
    assert first.folder.known_uids().tolist() == [1, 2, 3, 4]
    assert first.updates(expunge=True, condstore=False, qresync=False) == (
        b"* 2 EXPUNGE\r\n* 1 EXPUNGE\r\n* 3 EXISTS\r\n"
    )
    assert first.uids.tolist() == [3, 4, 5]
    assert second.uids.tolist() == [1, 2, 3, 4]  # the other session's numbering is its own
    assert second.updates(expunge=False, condstore=False, qresync=False) == b"* 5 EXISTS\r\n"
    assert second.uids.tolist() == [1, 2, 3, 4, 5]
    assert first.uids.tolist() == [3, 4, 5]


def test_a_quiet_reselect_is_what_opening_the_folder_gives(maildir: Maildir) -> None:
    """Selected.reopened_quietly (on the event loop) against open() (in a worker thread)."""
    selected = opened(maildir, 6)
    folder = selected.folder
    folder.store_flags([1, 2, 4], ["\\Seen"], Mode.ADD)
    folder.store_flags([3], ["$Forwarded"], Mode.ADD)
    assert Selected.reopened_quietly(folder, "INBOX", readonly=False) is None  # own changes unseen
    selected.updates(expunge=True, condstore=False, qresync=False)
    assert Selected.reopened_quietly(folder, "INBOX", readonly=False) is None  # new/ just changed
    os.utime(maildir.path / "new", (1_600_000_000, 1_600_000_000))
    selected.updates(expunge=True, condstore=False, qresync=False)
    # The first unseen message is not known without a look at the flags yet: ask open().
    assert Selected.reopened_quietly(folder, "INBOX", readonly=False) is None

    for readonly in (False, True):
        opening = Selected(folder, "INBOX", readonly=readonly)
        opening.open()
        expected = (opening.uids, opening.keywords, opening.first_unseen(), folder.state_as_synced())
        quick = Selected.reopened_quietly(folder, "INBOX", readonly=readonly)
        assert quick is not None
        again, first_unseen, state = quick
        assert (
            (again.uids, again.keywords, first_unseen, state)
            == expected
            == (
                array("I", range(1, 7)),
                ["$Forwarded"],
                3,
                expected[3],
            )
        )
        assert again.readonly is readonly and again.flags_announcement() == opening.flags_announcement()

    maildir.deliver(b"Subject: late\n\nbody\n")
    assert Selected.reopened_quietly(folder, "INBOX", readonly=False) is None
