"""Mailbox: the Maildir++ folder tree of one user, CREATE/DELETE/RENAME semantics, subscriptions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mailroom.store import (
    SPECIAL_USE,
    Folder,
    FolderExists,
    FolderGone,
    InvalidFolderName,
    Mailbox,
    Maildir,
    MaildirStore,
    Mode,
    NoSuchFolder,
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return MaildirStore(tmp_path).mailbox("alice@example.test").path


def listing(mailbox: Mailbox) -> dict[str, set[str]]:
    return {info.name: set(info.attributes) for info in mailbox.folders()}


def test_first_open_creates_inbox_and_special_folders(root: Path) -> None:
    Maildir(root).deliver(b"Subject: early\n\n")
    mailbox = Mailbox(root)
    names = [info.name for info in mailbox.folders()]
    assert names[0] == "INBOX"
    assert set(names) == {"INBOX", *SPECIAL_USE}
    assert {info.name: info.special_use for info in mailbox.folders()}["Sent"] == "\\Sent"
    assert mailbox.special_use("Junk") == "\\Junk"
    assert mailbox.special_use("Lists") is None
    for name in SPECIAL_USE:
        assert (root / f".{name}" / "cur").is_dir()
    assert set(mailbox.subscriptions()) == set(SPECIAL_USE)
    assert mailbox.folder("inbox").sync().new_uids == [1]
    # folders get distinct UIDVALIDITYs even when created in the same second
    uidvalidities = [mailbox.folder(name).uidvalidity for name in SPECIAL_USE]
    assert len(set(uidvalidities)) == len(uidvalidities)
    # a deleted special folder is not forced back on the next open
    mailbox.delete("Junk")
    assert "Junk" not in listing(Mailbox(root))


def test_if_set_up_opens_only_a_mailbox_whose_first_open_is_done_and_writes_nothing(root: Path) -> None:
    def tree() -> list[str]:
        return sorted(str(p.relative_to(root.parent)) for p in root.parent.rglob("*"))

    assert Mailbox.if_set_up(root) is None
    assert not root.exists()  # nothing made for a mailbox that is not there
    Maildir(root).deliver(b"Subject: early\n\n")  # delivered to, never opened
    before = tree()
    assert Mailbox.if_set_up(root) is None
    assert tree() == before  # no special folders, no state
    Mailbox(root)  # the first open
    before = tree()
    opened = Mailbox.if_set_up(root)
    assert opened is not None and opened.folder("INBOX").sync().new_uids == [1]


def test_create_makes_parents_and_encodes_names(root: Path) -> None:
    mailbox = Mailbox(root)
    mailbox.create("Projekte.Entwürfe.2024")
    assert (root / ".Projekte.Entw&APw-rfe.2024" / "cur").is_dir()
    assert (root / ".Projekte" / "cur").is_dir()
    folders = listing(mailbox)
    assert folders["Projekte"] == {"\\HasChildren"}
    assert folders["Projekte.Entwürfe.2024"] == {"\\HasNoChildren"}
    with pytest.raises(FolderExists):
        mailbox.create("Projekte")
    with pytest.raises(FolderExists):
        mailbox.create("inbox")
    assert mailbox.folder("Projekte.Entwürfe.2024").append(b"x") == 1
    assert not list((root / "tmp").iterdir())


ESCAPES = ["../escape", "a/b", "/abs", "a..b", ".x", "x.", "nul\x00", "tab\t", "x" * 300]


@pytest.mark.parametrize("name", ESCAPES)
def test_names_that_could_leave_the_maildir_are_refused(root: Path, tmp_path: Path, name: str) -> None:
    mailbox = Mailbox(root)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    for call in (mailbox.create, mailbox.folder, mailbox.delete, mailbox.subscribe):
        with pytest.raises(InvalidFolderName):
            call(name)
    with pytest.raises(InvalidFolderName):
        mailbox.rename("Sent", name)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_delete_follows_rfc3501(root: Path) -> None:
    mailbox = Mailbox(root)
    with pytest.raises(InvalidFolderName):
        mailbox.delete("INBOX")
    with pytest.raises(NoSuchFolder):
        mailbox.delete("Nope")
    mailbox.create("Lists.python")
    mailbox.folder("Lists").append(b"to be removed")
    opened = mailbox.folder("Lists")
    mailbox.delete("Lists")  # allowed: children stay, the name becomes \Noselect
    assert listing(mailbox)["Lists"] == {"\\Noselect", "\\HasChildren"}
    assert (root / ".Lists.python" / "cur").is_dir()
    with pytest.raises(NoSuchFolder):
        mailbox.folder("Lists")
    with pytest.raises(NoSuchFolder):
        mailbox.delete("Lists")  # \Noselect with children: an error
    with pytest.raises(FolderGone):
        opened.append(b"into a deleted folder")
    mailbox.delete("Lists.python")
    assert "Lists" not in listing(mailbox)
    assert not list((root / "tmp").iterdir())


def test_rename_moves_children_and_keeps_uids(root: Path) -> None:
    mailbox = Mailbox(root)
    mailbox.create("Work.Clients")
    work = mailbox.folder("Work")
    work.append(b"one")
    uidvalidity = work.uidvalidity
    mailbox.rename("Work", "Archive.2024.Work")
    assert "Work" not in listing(mailbox)
    assert "Archive.2024" in listing(mailbox)  # created as a superior name
    moved = mailbox.folder("Archive.2024.Work")
    assert moved.uidvalidity == uidvalidity
    assert [m.uid for m in moved.messages()] == [1]
    assert mailbox.folder("Archive.2024.Work.Clients")
    with pytest.raises(FolderGone):
        work.sync()
    # a new folder under the old name must not reuse the old UIDVALIDITY
    assert mailbox.create("Work").uidvalidity != uidvalidity
    with pytest.raises(FolderExists):
        mailbox.rename("Work", "Sent")
    with pytest.raises(NoSuchFolder):
        mailbox.rename("Nope", "Other")
    with pytest.raises(InvalidFolderName):
        mailbox.rename("Work", "Work.Inner")


def test_rename_inbox_moves_its_messages_and_leaves_it_empty(root: Path) -> None:
    box = Maildir(root)
    box.deliver(b"Subject: one\n\n")
    mailbox = Mailbox(root)
    inbox = mailbox.folder("INBOX")
    inbox.sync()
    inbox.store_flags([1], ["\\Seen"], Mode.ADD)
    box.deliver(b"Subject: two\n\n")  # still in new/
    mailbox.create("INBOX.child")
    uidvalidity, uidnext = inbox.uidvalidity, inbox.uidnext
    old = mailbox.rename("INBOX", "Old mail")
    assert sorted(old.read(m.uid) for m in old.messages()) == [b"Subject: one\n\n", b"Subject: two\n\n"]
    assert {m.uid: m.flags for m in old.messages()} == {1: {"\\Seen"}, 2: frozenset()}
    fresh = Folder(root)
    assert fresh.messages() == []
    assert fresh.uidvalidity == uidvalidity
    assert fresh.uidnext >= uidnext
    assert not os.listdir(root / "new") and not os.listdir(root / "cur")
    assert mailbox.folder("INBOX.child")  # INBOX's children are unaffected
    assert inbox.sync().expunged_uids == [1]


def test_subscriptions_file_is_one_name_per_line(root: Path) -> None:
    mailbox = Mailbox(root)
    mailbox.subscribe("Entwürfe")
    mailbox.subscribe("Entwürfe")
    mailbox.subscribe("Not there yet")
    mailbox.unsubscribe("Trash")
    mailbox.unsubscribe("never subscribed")
    lines = (root / "subscriptions").read_text().splitlines()
    assert lines == ["Sent", "Drafts", "Junk", "Archive", "Entw&APw-rfe", "Not there yet"]
    assert Mailbox(root).subscriptions()[-2:] == ["Entwürfe", "Not there yet"]
