"""The state file's two inodes taking turns (store/statefile.py), and the IDLE watcher that must
see every change although the name comes back to an inode it had before."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mailroom.imap.watcher import signature
from mailroom.store import Folder, Maildir, Mode
from mailroom.store.statefile import SIZE, SLOTS, STATE_FILE, write_state_file


def inode(path: Path) -> int:
    return path.stat().st_ino


def test_the_name_moves_between_two_inodes_that_stay(tmp_path: Path) -> None:
    write_state_file(str(tmp_path), b"one\n", durable=False)
    write_state_file(str(tmp_path), b"two\n", durable=False)
    slots = {inode(tmp_path / slot) for slot in SLOTS}
    assert len(slots) == 2
    seen = set()
    for n in range(6):
        text = b"state %d\n" % n
        write_state_file(str(tmp_path), text, durable=n % 2 == 0)
        assert (tmp_path / STATE_FILE).read_bytes() == text.ljust(SIZE, b"\n")
        seen.add(inode(tmp_path / STATE_FILE))
    assert seen == slots == {inode(tmp_path / slot) for slot in SLOTS}  # no inode made or freed
    assert not (tmp_path / f"{STATE_FILE}.tmp").exists()


def test_a_longer_old_content_does_not_show_through(tmp_path: Path) -> None:
    write_state_file(str(tmp_path), b"x" * 300, durable=False)  # longer than SIZE: kept whole
    write_state_file(str(tmp_path), b"y\n", durable=False)
    write_state_file(str(tmp_path), b"z\n", durable=False)  # back into the inode that held 300
    assert (tmp_path / STATE_FILE).read_bytes() == b"z\n".ljust(SIZE, b"\n")


def test_a_state_file_of_the_old_layout_and_odd_leftovers(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_bytes(b"old\n")  # one inode, no slots (an older Mailroom)
    (tmp_path / f"{STATE_FILE}.tmp").write_bytes(b"left by a crash\n")
    write_state_file(str(tmp_path), b"new\n", durable=True)
    assert (tmp_path / STATE_FILE).read_bytes().rstrip(b"\n") == b"new"
    # Both slots linked to the name's inode by hand: one of them gets an inode of its own.
    for slot in SLOTS:
        (tmp_path / slot).unlink(missing_ok=True)
        os.link(tmp_path / STATE_FILE, tmp_path / slot)
    write_state_file(str(tmp_path), b"newer\n", durable=False)
    assert (tmp_path / STATE_FILE).read_bytes().rstrip(b"\n") == b"newer"
    assert inode(tmp_path / SLOTS[0]) != inode(tmp_path / SLOTS[1])


def test_without_hard_links_a_copy_is_renamed_over_the_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(src: object, dst: object) -> None:
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    for text in (b"a\n", b"b\n", b"c\n"):
        write_state_file(str(tmp_path), text, durable=text == b"b\n")
        assert (tmp_path / STATE_FILE).read_bytes().rstrip(b"\n") == text.rstrip(b"\n")


def test_the_idle_signature_changes_when_the_name_comes_back_to_an_inode(tmp_path: Path) -> None:
    """Two changes in one tick of the file system's clock: the name is on the same inode with
    the same mtime and size as before, and only the content tells."""
    box = Maildir(tmp_path / "user")
    box.create()
    folder = Folder(box.path)
    folder.append(b"Subject: a\r\n\r\na\r\n")
    state = box.path / STATE_FILE
    before, st = signature(box.path), state.stat()
    cur = (box.path / "cur").stat()
    folder.store_flags([1], ["\\Seen"], Mode.ADD)
    folder.store_flags([1], ["\\Flagged"], Mode.ADD)
    assert state.stat().st_ino == st.st_ino  # back on the same inode
    os.utime(state, ns=(st.st_atime_ns, st.st_mtime_ns))  # as if in the same tick
    os.utime(box.path / "cur", ns=(cur.st_atime_ns, cur.st_mtime_ns))
    assert signature(box.path) != before
