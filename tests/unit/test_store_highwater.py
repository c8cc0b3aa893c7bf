"""The high-water mark written before an expunge (store/highwater.py): two slots written in turn,
a torn slot never hides the one before it, and a folder whose state a crash took back heals from
the mark, so an expunged UID is never given again and HIGHESTMODSEQ never falls back."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mailroom.store import Folder, Maildir
from mailroom.store import folder as folder_module
from mailroom.store.folder import STATE_FILE
from mailroom.store.highwater import HIGHWATER_FILE, SLOT, Mark, read_highwater, write_highwater


@pytest.fixture
def maildir(tmp_path: Path) -> Maildir:
    box = Maildir(tmp_path / "user")
    box.create()
    return box


def new_process() -> None:
    """What a daemon started after a crash knows: no listing in memory."""
    folder_module._registry.__init__()


def slot_text(folder: Path, n: int) -> bytes:
    return (folder / HIGHWATER_FILE).read_bytes()[n * SLOT : n * SLOT + 128].split(b"\n")[0]


def test_marks_go_to_the_two_slots_in_turn(tmp_path: Path) -> None:
    assert read_highwater(tmp_path) is None
    write_highwater(tmp_path, Mark(7, 10, 20))
    assert (tmp_path / HIGHWATER_FILE).stat().st_size == 2 * SLOT
    assert read_highwater(tmp_path) == Mark(7, 10, 20)
    write_highwater(tmp_path, Mark(7, 11, 21))
    write_highwater(tmp_path, Mark(7, 12, 22))
    assert read_highwater(tmp_path) == Mark(7, 12, 22)
    assert b" 3 7 12 22 " in slot_text(tmp_path, 0)  # seq 3 went back to slot 0
    assert b" 2 7 11 21 " in slot_text(tmp_path, 1)


@pytest.mark.parametrize("damage", [b"\0" * 64, b"mailroom-highwater 1 9 7 99 99 1\n", b"x"])
def test_a_torn_write_leaves_the_mark_before_it(tmp_path: Path, damage: bytes) -> None:
    write_highwater(tmp_path, Mark(7, 10, 20))
    write_highwater(tmp_path, Mark(7, 11, 21))  # slot 1
    # A crash tore the next write, into slot 0 (a wrong checksum, zeros, half a line).
    with open(tmp_path / HIGHWATER_FILE, "r+b") as f:
        f.write(damage)
    assert read_highwater(tmp_path) == Mark(7, 11, 21)
    # The next write goes to the slot that is not the intact one, and wins.
    write_highwater(tmp_path, Mark(7, 12, 22))
    assert read_highwater(tmp_path) == Mark(7, 12, 22)
    assert b" 7 11 21 " in slot_text(tmp_path, 1)


def test_a_file_not_of_our_making_is_made_anew(tmp_path: Path) -> None:
    (tmp_path / HIGHWATER_FILE).write_bytes(b"mailroom-highwater 1 1 7 10 20 0\n")  # short, bad crc
    assert read_highwater(tmp_path) is None
    write_highwater(tmp_path, Mark(7, 10, 20))
    assert read_highwater(tmp_path) == Mark(7, 10, 20)
    assert (tmp_path / HIGHWATER_FILE).stat().st_size == 2 * SLOT


def crash_after_expunge(maildir: Maildir) -> tuple[int, int, int]:
    """Append and expunge one message, then take the state file back to before the append (a
    crash lost the writes that were not fsynced); return (uidvalidity, its UID, HIGHESTMODSEQ
    as clients were told)."""
    folder = Folder(maildir.path)
    folder.append(b"Subject: keep\r\n\r\nkeep\r\n")
    before = (maildir.path / STATE_FILE).read_bytes()
    uid = folder.append(b"Subject: gone\r\n\r\ngone\r\n", ["\\Deleted"])
    assert folder.expunge() == [uid]
    told = folder.highestmodseq
    (maildir.path / STATE_FILE).write_bytes(before)
    new_process()
    return folder.uidvalidity, uid, told


def test_after_a_crash_an_expunged_uid_is_not_given_again(maildir: Maildir) -> None:
    uidvalidity, uid, told = crash_after_expunge(maildir)
    folder = Folder(maildir.path)
    assert folder.uidvalidity == uidvalidity
    assert folder.uidnext == uid + 1
    assert folder.highestmodseq >= told
    assert folder.append(b"Subject: next\r\n\r\nnext\r\n") == uid + 1
    assert f"uidnext={uid + 2}".encode() in (maildir.path / STATE_FILE).read_bytes()


def test_without_the_mark_the_crash_would_give_the_uid_again(maildir: Maildir) -> None:
    """The hazard the mark exists for (the test above fails without it)."""
    _, uid, _ = crash_after_expunge(maildir)
    (maildir.path / HIGHWATER_FILE).unlink()
    assert Folder(maildir.path).uidnext == uid


def test_a_mark_of_another_uidvalidity_is_ignored(maildir: Maildir) -> None:
    folder = Folder(maildir.path)
    folder.append(b"Subject: a\r\n\r\na\r\n")
    write_highwater(maildir.path, Mark(folder.uidvalidity + 1, 1000, 1000))
    new_process()
    assert Folder(maildir.path).uidnext == 2


def test_an_expunge_flushes_the_mark_once_and_renames_nothing_durably(
    maildir: Maildir, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = Folder(maildir.path)
    for flags in ([], ["\\Deleted"], ["\\Deleted"]):
        folder.append(b"Subject: x\r\n\r\nx\r\n", flags)
    folder.expunge([2])  # the first expunge makes the file
    calls: list[str] = []
    real_fsync, real_fdatasync = os.fsync, os.fdatasync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "fdatasync", lambda fd: (calls.append("fdatasync"), real_fdatasync(fd))[1])
    assert folder.expunge() == [3]
    assert calls == ["fdatasync", "fsync"]  # the mark, then cur/ for the unlink
