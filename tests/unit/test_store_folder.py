"""Folder: UIDs, flags and MODSEQ kept in Maildir file names, the state file, rebuild, append/copy/move."""

from __future__ import annotations

import multiprocessing
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mailroom.store import Folder, FolderGone, InvalidFlag, Maildir, MessageGone, Mode, TooManyKeywords
from mailroom.store import folder as folder_module
from mailroom.store.folder import STATE_FILE, UIDVALIDITY_FILE
from mailroom.store.highwater import HIGHWATER_FILE, read_highwater
from tests.conftest import held_elsewhere

NAME = re.compile(r"^(?P<base>[^:]+),U=(?P<uid>\d+),M=(?P<modseq>\d+):2,(?P<flags>[A-Za-z]*)$")


@pytest.fixture
def maildir(tmp_path: Path) -> Maildir:
    box = Maildir(tmp_path / "example.test" / "alice")
    box.create()
    return box


def deliver(box: Maildir, n: int, tag: str = "m") -> list[str]:
    return [box.deliver(f"Subject: {tag}{i}\n\nbody {i}\n".encode()) for i in range(n)]


def in_another_process(action: Callable[[], object]) -> None:
    child = multiprocessing.get_context("fork").Process(target=action)
    child.start()
    child.join(timeout=30)
    assert child.exitcode == 0


def cur_names(box: Maildir) -> list[str]:
    return sorted(os.listdir(box.path / "cur"))


def uid_of_base(box: Maildir) -> dict[str, int]:
    result = {}
    for name in cur_names(box):
        match = NAME.match(name)
        assert match, name
        result[match["base"]] = int(match["uid"])
    return result


def test_sync_moves_new_mail_to_cur_with_uids_in_arrival_order(maildir: Maildir) -> None:
    delivered = deliver(maildir, 5)
    folder = Folder(maildir.path)
    result = folder.sync()
    assert result.new_uids == [1, 2, 3, 4, 5]
    assert not os.listdir(maildir.path / "new")
    assert [uid_of_base(maildir)[name] for name in delivered] == [1, 2, 3, 4, 5]
    assert folder.uidnext == 6
    assert [m.uid for m in folder.messages()] == [1, 2, 3, 4, 5]
    first = folder.messages()[0]
    assert first.flags == frozenset()
    assert first.size == (first.path.stat().st_size)
    assert first.name.startswith(delivered[0] + ",U=1,M=")  # ,S=<size> stays in the base
    assert folder.read(1) == b"Subject: m0\n\nbody 0\n"
    assert not folder.sync()  # nothing new since the last sync of this object


def test_uids_are_stable_across_objects_and_processes(maildir: Maildir) -> None:
    deliver(maildir, 3)
    first = Folder(maildir.path)
    first.sync()
    before = {m.name: m.uid for m in first.messages()}
    uidvalidity = first.uidvalidity
    code = (
        "import sys; from pathlib import Path; from mailroom.store import Folder\n"
        "f = Folder(Path(sys.argv[1])); f.sync()\n"
        "print(f.uidvalidity); [print(m.uid, m.name) for m in f.messages()]\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(maildir.path)], check=True, capture_output=True, text=True
    ).stdout.splitlines()
    assert int(out[0]) == uidvalidity
    assert {line.split(" ", 1)[1]: int(line.split(" ", 1)[0]) for line in out[1:]} == before
    again = Folder(maildir.path)
    assert {m.name: m.uid for m in again.messages()} == before
    assert again.uidvalidity == uidvalidity


def test_existing_size_is_kept_and_foreign_cur_files_get_uids(maildir: Maildir) -> None:
    (maildir.path / "cur" / "12345.foreign.host:2,S").write_bytes(b"x")
    (maildir.path / "cur" / "12346.other.host,S=3:2,FS").write_bytes(b"abc")
    folder = Folder(maildir.path)
    assert folder.sync().new_uids == [1, 2]
    # Adopted in place (store/uidlist.py): the names stay as the other tool wrote them.
    assert cur_names(maildir) == ["12345.foreign.host:2,S", "12346.other.host,S=3:2,FS"]
    assert [(m.uid, m.modseq) for m in folder.messages()] == [(1, 2), (2, 2)]
    assert folder.message(2).flags == {"\\Flagged", "\\Seen"}
    assert folder.message(2).size == 3


def test_uid_is_never_reused_after_expunging_the_highest(maildir: Maildir) -> None:
    deliver(maildir, 3)
    folder = Folder(maildir.path)
    folder.sync()
    folder.store_flags([3], ["\\Deleted"], Mode.ADD)
    assert folder.expunge() == [3]
    assert folder.uidnext == 4
    deliver(maildir, 1)
    assert Folder(maildir.path).sync().new_uids == [1, 2, 4]
    assert folder.sync().new_uids == [4]
    assert folder.append(b"Subject: appended\n\n") == 5


def test_flags_round_trip_through_names_and_modseq_increases(maildir: Maildir) -> None:
    deliver(maildir, 2)
    folder = Folder(maildir.path)
    folder.sync()
    start = folder.highestmodseq
    changed = folder.store_flags(
        [1, 2], ["\\Seen", "\\Answered", "\\Draft", "\\Flagged", "\\Deleted"], Mode.REPLACE
    )
    modseq = changed[1][1]
    assert modseq == start + 1 == folder.highestmodseq
    every = frozenset({"\\Seen", "\\Answered", "\\Draft", "\\Flagged", "\\Deleted"})
    assert changed[1] == changed[2] == (every, modseq)
    assert all(NAME.match(n)["flags"] == "DFRST" for n in cur_names(maildir))  # ASCII order
    assert all(NAME.match(n)["modseq"] == str(modseq) for n in cur_names(maildir))

    other = Folder(maildir.path)
    assert other.message(1).flags == {"\\Seen", "\\Answered", "\\Draft", "\\Flagged", "\\Deleted"}
    assert other.message(1).modseq == modseq

    assert folder.store_flags([1], ["\\seen"], Mode.REMOVE)[1][0] == {
        "\\Answered",
        "\\Draft",
        "\\Flagged",
        "\\Deleted",
    }
    assert folder.highestmodseq == modseq + 1
    # an unchanged message keeps its modseq and is not renamed
    unchanged = folder.store_flags([2], ["\\Seen"], Mode.ADD)
    assert unchanged[2][1] == modseq
    assert folder.highestmodseq == modseq + 1
    # changes by another object are reported by sync(); our own are not reported again
    assert folder.sync().flag_changes == {}
    deliver(maildir, 1)  # not yet reported to `folder`: a STORE on it must not hide it from sync()
    folder.store_flags([3], ["\\Seen"], Mode.ADD)
    assert folder.sync().new_uids == [3]
    other.sync()
    folder.store_flags([2], ["\\Flagged"], Mode.REMOVE)
    assert other.sync().flag_changes == {2: (folder.message(2).flags, folder.highestmodseq)}
    # \Recent is a session attribute: ignored; unknown system flags are refused
    assert folder.store_flags([2], ["\\Recent"], Mode.REPLACE)[2][0] == frozenset()
    with pytest.raises(InvalidFlag):
        folder.store_flags([2], ["\\Bogus"], Mode.ADD)
    with pytest.raises(InvalidFlag):
        folder.store_flags([2], ["bad(keyword"], Mode.ADD)


def test_keywords_are_letters_with_a_keywords_file(maildir: Maildir) -> None:
    deliver(maildir, 1)
    folder = Folder(maildir.path)
    folder.sync()
    folder.store_flags([1], ["$Junk", "\\Seen", "$Forwarded"], Mode.ADD)
    assert NAME.match(cur_names(maildir)[0])["flags"] == "Sab"
    assert (maildir.path / "mailroom-keywords").read_text() == "0 $Junk\n1 $Forwarded\n"
    assert Folder(maildir.path).message(1).flags == {"$Junk", "\\Seen", "$Forwarded"}
    assert folder.store_flags([1], ["$junk"], Mode.REMOVE)[1][0] == {"\\Seen", "$Forwarded"}
    assert folder.keywords == ["$Junk", "$Forwarded"]
    folder.store_flags([1], ["NeverSet"], Mode.REMOVE)  # removing an unknown keyword defines none
    assert folder.keywords == ["$Junk", "$Forwarded"]
    folder.store_flags([1], [f"k{i}" for i in range(24)], Mode.ADD)
    assert not folder.can_create_keywords
    with pytest.raises(TooManyKeywords):
        folder.store_flags([1], ["one-too-many"], Mode.ADD)
    assert len(folder.keywords) == 26


def test_state_file_is_small_and_rebuild_gives_the_same_uids(maildir: Maildir) -> None:
    deliver(maildir, 4)
    folder = Folder(maildir.path)
    folder.sync()
    folder.store_flags([2], ["\\Seen"], Mode.ADD)
    folder.store_flags([4], ["\\Deleted"], Mode.ADD)
    folder.expunge()
    state = (maildir.path / STATE_FILE).read_text()
    assert f"uidvalidity={folder.uidvalidity}\n" in state and "uidnext=5\n" in state
    uids, uidvalidity, modseq = uid_of_base(maildir), folder.uidvalidity, folder.highestmodseq

    (maildir.path / STATE_FILE).unlink()
    rebuilt = Folder(maildir.path)
    assert rebuilt.uidvalidity == uidvalidity
    assert {m.uid for m in rebuilt.messages()} == {1, 2, 3}
    assert uid_of_base(maildir) == uids
    # UIDNEXT and HIGHESTMODSEQ come back from the expunge's high-water mark: 4 is not reused
    assert rebuilt.uidnext == 5
    assert rebuilt.highestmodseq >= modseq

    # Without the mark too, from the names alone: the expunged 4 is not known any more (documented)
    (maildir.path / STATE_FILE).unlink()
    (maildir.path / HIGHWATER_FILE).unlink()
    rebuilt = Folder(maildir.path)
    assert rebuilt.uidnext == 4
    assert rebuilt.highestmodseq >= modseq - 1

    (maildir.path / STATE_FILE).write_text("garbage\n")
    assert Folder(maildir.path).uidvalidity == uidvalidity


def test_rebuild_without_any_state_keeps_uids_and_picks_a_new_uidvalidity(maildir: Maildir) -> None:
    deliver(maildir, 2)
    folder = Folder(maildir.path)
    folder.sync()
    uids = uid_of_base(maildir)
    old = folder.uidvalidity
    (maildir.path / STATE_FILE).unlink()
    (maildir.path / UIDVALIDITY_FILE).unlink()
    (maildir.path / STATE_FILE).write_text(f"version=1\nuidvalidity={old - 10}\n")  # corrupt
    rebuilt = Folder(maildir.path)
    assert rebuilt.uidvalidity != old - 10
    assert uid_of_base(maildir) == uids
    assert rebuilt.uidnext == 3


def test_state_heals_upwards_from_names(maildir: Maildir) -> None:
    deliver(maildir, 2)
    folder = Folder(maildir.path)
    folder.sync()
    old_state = (maildir.path / STATE_FILE).read_bytes()
    deliver(maildir, 1)
    folder.sync()
    # a restore where the state file is older than the newest message
    (maildir.path / STATE_FILE).write_bytes(old_state)
    fresh = Folder(maildir.path)
    assert fresh.uidnext == 4
    assert fresh.append(b"x") == 4


def test_duplicate_uids_are_reassigned(maildir: Maildir) -> None:
    deliver(maildir, 2)
    folder = Folder(maildir.path)
    folder.sync()
    original = folder.message(1).path
    copy = maildir.path / "cur" / "1000000000.copy.host,S=20,U=1,M=2:2,S"
    os.link(original, copy)
    fresh = Folder(maildir.path)
    fresh.sync()
    assert sorted(m.uid for m in fresh.messages()) == [1, 2, 3]
    assert fresh.message(1).name == copy.name  # the lower name keeps the UID
    assert fresh.message(3).name.startswith(original.name.split(",U=")[0] + ",U=3,")
    assert folder.sync().new_uids == [3]


def test_delivery_during_sync_is_picked_up_next_time(
    maildir: Maildir, monkeypatch: pytest.MonkeyPatch
) -> None:
    deliver(maildir, 2)
    folder = Folder(maildir.path)
    real_rename = os.rename
    late: list[str] = []

    def rename_and_deliver(src: object, dst: object) -> None:
        real_rename(src, dst)
        if not late:  # a message lands in new/ after sync listed new/
            late.append("")
            late[0] = maildir.deliver(b"Subject: late\n\n")

    monkeypatch.setattr(os, "rename", rename_and_deliver)
    first = folder.sync()
    monkeypatch.setattr(os, "rename", real_rename)
    assert first.new_uids == [1, 2]
    assert os.listdir(maildir.path / "new") == late
    assert folder.sync().new_uids == [3]
    assert uid_of_base(maildir)[late[0]] == 3


def test_message_vanishing_before_rename_is_skipped(
    maildir: Maildir, monkeypatch: pytest.MonkeyPatch
) -> None:
    deliver(maildir, 2)
    folder = Folder(maildir.path)
    folder.sync()
    doomed = folder.message(1).path
    real_rename = os.rename

    def vanish_first(src: object, dst: object) -> None:
        if Path(str(src)) == doomed and doomed.exists():
            doomed.unlink()  # another Maildir tool removed it between listing and rename
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", vanish_first)
    result = folder.store_flags([1, 2], ["\\Seen"], Mode.ADD)
    assert list(result) == [2]
    monkeypatch.setattr(os, "rename", real_rename)
    assert folder.sync().expunged_uids == [1]


def test_read_follows_a_rename_by_another_object(maildir: Maildir) -> None:
    deliver(maildir, 1)
    reader, writer = Folder(maildir.path), Folder(maildir.path)
    reader.sync()
    writer.store_flags([1], ["\\Seen"], Mode.ADD)
    assert reader.read(1).startswith(b"Subject: m0")
    writer.store_flags([1], ["\\Deleted"], Mode.ADD)
    writer.expunge()
    with pytest.raises(MessageGone):
        reader.read(1)


def test_expunge_only_deleted_and_only_given_uids(maildir: Maildir) -> None:
    deliver(maildir, 4)
    folder = Folder(maildir.path)
    folder.sync()
    folder.store_flags([1, 2, 3], ["\\Deleted"], Mode.ADD)
    assert folder.expunge([2, 4]) == [2]
    assert folder.expunge() == [1, 3]
    assert [m.uid for m in folder.messages()] == [4]
    assert folder.sync().expunged_uids == []  # already returned by expunge()
    other = Folder(maildir.path)
    assert other.sync().new_uids == [4]


def test_append_is_durable_and_keeps_flags_and_internaldate(maildir: Maildir) -> None:
    folder = Folder(maildir.path)
    uid = folder.append(b"Subject: draft\n\n", ["\\Draft", "\\Seen"], internaldate=1_600_000_000)
    assert uid == 1
    assert os.listdir(maildir.path / "tmp") == []
    [name] = cur_names(maildir)
    match = NAME.match(name)
    assert match and match["flags"] == "DS" and match["uid"] == "1"
    assert match["base"].endswith(",S=16,W=18")  # W=: with CRLF for the two LFs
    info = Folder(maildir.path).message(1)
    assert info.internaldate == 1_600_000_000
    assert info.flags == {"\\Draft", "\\Seen"}
    assert folder.sync().new_uids == [1]  # the session learns of it through sync (EXISTS)


def test_copy_and_move_give_uid_mappings(maildir: Maildir, tmp_path: Path) -> None:
    deliver(maildir, 3)
    source = Folder(maildir.path)
    source.sync()
    source.store_flags([2], ["\\Flagged", "$Label1"], Mode.ADD)
    dest_box = Maildir(maildir.path / ".Archive")
    dest_box.create()
    dest = Folder(dest_box.path)
    dest.append(b"already there")
    assert source.copy([2, 3, 99], dest) == {2: 2, 3: 3}
    assert dest.message(2).flags == {"\\Flagged", "$Label1"}
    assert dest.read(3) == source.read(3)
    assert os.stat(dest.message(3).path).st_ino == os.stat(source.message(3).path).st_ino  # hard link
    assert source.move([1, 2], dest) == {1: 4, 2: 5}
    assert [m.uid for m in source.messages()] == [3]
    assert dest.read(4).startswith(b"Subject: m0")
    assert os.listdir(dest_box.path / "tmp") == []
    assert source.sync().expunged_uids == []
    assert Folder(maildir.path).sync().new_uids == [3]


def test_copy_falls_back_to_copying_bytes(maildir: Maildir, monkeypatch: pytest.MonkeyPatch) -> None:
    deliver(maildir, 1)
    source = Folder(maildir.path)
    source.sync()
    dest_box = Maildir(maildir.path / ".Other")
    dest_box.create()

    def no_links(src: object, dst: object) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    dest = Folder(dest_box.path)
    assert source.copy([1], dest) == {1: 1}
    assert dest.read(1) == source.read(1)
    assert dest.message(1).internaldate == source.message(1).internaldate


def test_copy_into_the_same_folder(maildir: Maildir) -> None:
    deliver(maildir, 1)
    folder = Folder(maildir.path)
    folder.sync()
    assert folder.copy([1], folder) == {1: 2}
    assert folder.sync().new_uids == [2]
    assert len({NAME.match(n)["base"] for n in cur_names(maildir)}) == 2


def test_warm_sync_does_not_rescan(maildir: Maildir, monkeypatch: pytest.MonkeyPatch) -> None:
    deliver(maildir, 3)
    folder = Folder(maildir.path)
    folder.sync()
    listed: list[str] = []
    real_listdir = os.listdir

    def counting_listdir(path: object) -> list[str]:
        listed.append(str(path))
        return real_listdir(path)

    monkeypatch.setattr(os, "listdir", counting_listdir)
    assert not folder.sync()
    assert not any(p.endswith("cur") for p in listed)  # only new/ was looked at
    in_another_process(lambda: Folder(maildir.path).store_flags([1], ["\\Seen"], Mode.ADD))
    assert folder.sync().flag_changes == {1: (frozenset({"\\Seen"}), folder.highestmodseq)}
    assert any(p.endswith("cur") for p in listed)


def test_usage_counts_new_names(maildir: Maildir) -> None:
    deliver(maildir, 2)
    folder = Folder(maildir.path)
    folder.sync()
    folder.store_flags([1], ["\\Seen"], Mode.ADD)
    sub = Maildir(maildir.path / ".Sent")
    sub.create()
    Folder(sub.path).append(b"12345")
    (maildir.path / "cur" / "1.nosize.host:2,S").write_bytes(b"abc")  # no S=: stat
    expected = sum(len(f"Subject: m{i}\n\nbody {i}\n") for i in range(2)) + 5 + 3
    assert maildir.usage() == expected


def test_an_old_empty_new_dir_is_not_listed_but_delivery_is_seen(
    maildir: Maildir, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = Folder(maildir.path)
    folder.sync()
    os.utime(maildir.path / "new", (1_600_000_000, 1_600_000_000))  # empty and long unchanged
    folder.sync()
    listed: list[str] = []
    real_listdir = os.listdir

    def counting_listdir(path: object) -> list[str]:
        listed.append(str(path))
        return real_listdir(path)

    monkeypatch.setattr(os, "listdir", counting_listdir)
    assert not folder.sync()
    assert listed == []
    maildir.deliver(b"Subject: hello\n\n")  # the rename into new/ changes its mtime
    assert folder.sync().new_uids == [1]


def test_folder_objects_of_one_process_share_the_listing_but_not_their_view(maildir: Maildir) -> None:
    a, b = Folder(maildir.path), Folder(maildir.path)
    deliver(maildir, 3)
    assert a.sync().new_uids == [1, 2, 3]
    assert a._listing is b._listing
    assert b.sync().new_uids == [1, 2, 3]
    a.store_flags([2], ["\\Deleted"], Mode.ADD)
    assert not a.sync()
    assert list(b.sync().flag_changes) == [2]
    assert a.expunge() == [2]
    deliver(maildir, 1)
    assert a.sync().new_uids == b.sync().new_uids == [4]
    assert b.sync().expunged_uids == []  # b saw the expunge in its previous sync
    c = Folder(maildir.path)
    assert c.sync().new_uids == [1, 3, 4]


def test_a_lagging_view_falls_back_to_a_full_compare(
    maildir: Maildir, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailroom.store import folder as folder_module

    monkeypatch.setattr(folder_module, "_LOG_TRIM", 4)
    monkeypatch.setattr(folder_module, "_LOG_MAX", 8)
    deliver(maildir, 3)
    busy, idle = Folder(maildir.path), Folder(maildir.path)
    busy.sync()
    idle.sync()
    for round_ in range(10):
        busy.store_flags([1], ["\\Seen"] if round_ % 2 else [], Mode.REPLACE)
        busy.sync()
    busy.store_flags([3], ["\\Deleted"], Mode.ADD)
    busy.expunge()
    deliver(maildir, 1)
    busy.sync()
    assert len(busy._listing.log) <= 8
    assert idle._seen is not None and idle._seen < idle._listing.log_base  # the log moved on
    result = idle.sync()
    assert result.new_uids == [4]
    assert result.expunged_uids == [3]
    assert list(result.flag_changes) == [1]


def test_a_folder_replaced_under_the_same_name_is_another_folder(tmp_path: Path) -> None:
    box = Maildir(tmp_path / ".Work")
    box.create()
    old = Folder(box.path)
    old.append(b"old")
    renamed = tmp_path / ".Gone"
    os.rename(box.path, renamed)
    box.create()
    with pytest.raises(FolderGone):
        old.sync()
    new = Folder(box.path)
    assert new.messages() == []
    assert Folder(renamed).messages()[0].uid == 1


def test_names_with_odd_digits_are_renamed_not_crashed_on(maildir: Maildir) -> None:
    # '²' is a digit to str.isdigit() but not to int(): a name from elsewhere must not crash a scan.
    (maildir.path / "cur" / "1.odd.host,U=²,M=1:2,S").write_bytes(b"Subject: odd\n\n")
    (maildir.path / "cur" / "2.odd.host,U=7,M=²:2,").write_bytes(b"Subject: odd too\n\n")
    folder = Folder(maildir.path)
    assert len(folder.sync().new_uids) == 2
    assert {info.flags for info in folder.messages()} == {frozenset({"\\Seen"}), frozenset()}


def test_a_new_keyword_elsewhere_changes_no_other_message(maildir: Maildir) -> None:
    for n in range(3):
        maildir.deliver(b"Subject: %d\n\n" % n)
    folder = Folder(maildir.path)
    folder.sync()
    # Another process (its own listing) gives message 2 a keyword the folder did not have yet.
    script = "import sys; from mailroom.store import Folder; f = Folder(sys.argv[1]); f.sync(); "
    script += "f.store_flags([2], ['$Fresh'], 'add')"
    subprocess.run([sys.executable, "-c", script, str(maildir.path)], check=True)
    result = folder.sync()
    assert list(result.flag_changes) == [2]
    assert result.flag_changes[2][0] == frozenset({"$Fresh"})


def test_expunge_makes_the_high_water_mark_durable_before_any_name_goes(
    maildir: Maildir, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An APPEND leaves UIDNEXT on disk only through the new name; expunging that message must
    not remove the name before a durable mark holds the UIDNEXT above it (else a crash in
    between lets the UID be given again)."""
    folder = Folder(maildir.path)
    folder.sync()
    uid = folder.append(b"Subject: x\n\nx\n", ["\\Deleted"])
    events: list[str] = []
    real_mark, real_replace, real_unlink = (
        folder_module.write_highwater,
        folder_module.replace_synced,
        os.unlink,
    )
    monkeypatch.setattr(
        folder_module,
        "write_highwater",
        lambda path, mark: (events.append(f"mark {mark.uidnext}"), real_mark(path, mark))[1],
    )
    monkeypatch.setattr(
        folder_module,
        "replace_synced",
        lambda path, data: (events.append(f"durable {Path(path).name}"), real_replace(path, data))[1],
    )
    monkeypatch.setattr(
        folder_module.os,
        "unlink",
        lambda path: (events.append("unlink") if "/cur/" in str(path) else None, real_unlink(path))[1],
    )
    assert folder.expunge() == [uid]
    assert events == [f"mark {uid + 1}", "unlink"]  # and no durable state file: the mark stands for it
    assert read_highwater(maildir.path) == (folder.uidvalidity, uid + 1, folder.highestmodseq)
    assert f"uidnext={uid + 1}" in (maildir.path / STATE_FILE).read_text()


def test_state_as_synced_is_what_the_last_sync_saw(maildir: Maildir) -> None:
    """SELECT reports UIDNEXT from the same look as EXISTS: a message delivered after the sync
    shows in state() (a new look) but not in state_as_synced()."""
    deliver(maildir, 3)
    folder = Folder(maildir.path)
    folder.sync()
    assert folder.state_as_synced() == folder.state()
    uidvalidity, uidnext, highest = folder.state_as_synced()
    assert uidnext == 4
    deliver(maildir, 1, "late")
    assert folder.state_as_synced() == (uidvalidity, 4, highest)
    assert folder.state()[1] == 5


def settled(box: Maildir, folder: Folder) -> None:
    """Sync with new/ empty and long unchanged, as it is between deliveries on a real server
    (quiet() trusts new/'s mtime only then: see _Listing._probe)."""
    folder.sync()  # moves what is in new/, which changes its mtime
    os.utime(box.path / "new", (1_600_000_000, 1_600_000_000))
    folder.sync()


@pytest.fixture(params=[True, False], ids=["notice", "looks"])
def notice(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """quiet() with the kernel's notice of changes (store/changes.py), and without it, as on a
    file system it does not trust, where it looks at the folder each time."""
    if request.param:
        monkeypatch.setattr(folder_module.CHANGES, "wanted", True)  # as CHANGES.prepare() does
    else:
        monkeypatch.setattr(folder_module.CHANGES, "watch", lambda path: None)
    return bool(request.param)


def test_a_process_that_did_not_ask_for_the_notice_watches_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pop3d and the CLI never ask Folder.quiet: a look serves them, and costs no watch."""
    for wanted in (False, True):
        monkeypatch.setattr(folder_module.CHANGES, "wanted", wanted)
        box = Maildir(tmp_path / f"box-{wanted}")
        box.create()
        deliver(box, 2)
        folder = Folder(box.path)
        settled(box, folder)
        assert (folder._listing._watch is not None) is wanted
        assert folder.quiet([])  # without the notice, by a look at the folder


def test_quiet_only_when_sync_would_report_nothing(maildir: Maildir, notice: bool) -> None:
    deliver(maildir, 3)
    a, b = Folder(maildir.path), Folder(maildir.path)
    assert not a.quiet([])  # never synced
    a.sync()
    assert not a.quiet([])  # the sync moved the mail out of new/: a change since its look
    a.sync()
    # Looking, new/ changed too recently for its mtime to be trusted; the notice needs no mtime.
    assert a.quiet([]) is notice
    settled(maildir, a)
    settled(maildir, b)
    assert a.quiet([]) and b.quiet([])
    assert not a.quiet(["$Forwarded"])  # keywords other than the session announced

    deliver(maildir, 1, "late")
    assert not a.quiet([])
    assert a.sync().new_uids == [4]
    settled(maildir, a)
    settled(maildir, b)

    b.store_flags([1], ["\\Seen"], Mode.ADD)  # another session of this process
    assert not b.quiet([])  # its own change: the next sync() forgets it
    assert not b.sync()
    assert b.quiet([])
    assert not a.quiet([])  # the listing has the change, as b's sync left it: a has not seen it
    assert list(a.sync().flag_changes) == [1]
    assert a.quiet([])

    def elsewhere() -> None:
        Folder(maildir.path).store_flags([2], ["\\Flagged"], Mode.ADD)

    in_another_process(elsewhere)  # the state file changed; cur/'s mtime may not have
    assert not a.quiet([])
    assert list(a.sync().flag_changes) == [2]
    assert a.quiet([])

    # A Maildir tool that is not Mailroom renames in cur/ and writes no state file: cur/'s
    # mtime tells (it has the resolution of the kernel's clock tick, hence the pause).
    time.sleep(0.05)
    [name] = [n for n in os.listdir(maildir.path / "cur") if ",U=3," in n]
    os.rename(maildir.path / "cur" / name, maildir.path / "cur" / (name + "T"))
    assert not a.quiet([])
    assert list(a.sync().flag_changes) == [3]


def test_quiet_neither_waits_nor_lists_nor_locks(
    maildir: Maildir, monkeypatch: pytest.MonkeyPatch, notice: bool
) -> None:
    """It runs on the event loop: a busy listing makes it answer False, not wait."""
    deliver(maildir, 2)
    folder = Folder(maildir.path)
    settled(maildir, folder)
    assert folder.quiet([])  # with the notice, this first check records the count it found

    def forbidden(*args: object) -> None:
        raise AssertionError("quiet() must not list a directory or take the lock file")

    monkeypatch.setattr(os, "listdir", forbidden)
    monkeypatch.setattr(folder_module.fcntl, "flock", forbidden)
    stats: list[str] = []
    real_stat = os.stat

    def counting_stat(path: object, *args: object, **kwargs: object) -> os.stat_result:
        stats.append(os.fspath(path))  # type: ignore[arg-type]
        return real_stat(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "stat", counting_stat)
    assert folder.quiet([])
    # With the notice: one read of it and a stat of cur/; without: cur/, new/ and the state file.
    assert stats == [str(maildir.path / "cur")] if notice else len(stats) == 2
    monkeypatch.setattr(os, "stat", real_stat)
    with held_elsewhere(folder._listing.mutex):
        assert not folder.quiet([])
    assert folder.quiet([])
