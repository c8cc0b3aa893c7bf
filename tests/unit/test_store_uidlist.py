"""Messages another tool put into cur/ get UIDs in place (store/uidlist.py): no renames, the
same UIDs in every later process, flags changed on either side kept, and no UID ever given to
a second message, whichever file is lost."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mailroom.store import Folder, Maildir, Mode
from mailroom.store import folder as folder_module
from mailroom.store.folder import STATE_FILE
from mailroom.store.index import INDEX_FILE
from mailroom.store.uidlist import UIDLIST_FILE, AdoptedRun, read_uidlist, write_uidlist

FOREIGN = [f"17900000{i:02d}.M{i}P1Q{i}.import,S=5:2,{'S' if i % 2 else ''}" for i in range(6)]


@pytest.fixture
def imported(tmp_path: Path) -> Path:
    """A Maildir written by another tool: six messages in cur/ without U= in their names."""
    box = Maildir(tmp_path / "example.test" / "alice")
    box.create()
    for name in reversed(FOREIGN):  # the order on disk must not matter
        (box.path / "cur" / name).write_bytes(b"hello")
    return box.path


def new_process() -> None:
    """What a freshly started daemon knows: no listing in memory."""
    folder_module._registry.__init__()


def cur(path: Path) -> list[str]:
    return sorted(os.listdir(path / "cur"))


def uids(path: Path) -> dict[str, int]:
    return {m.name: m.uid for m in Folder(path).messages()}


def test_first_open_adopts_without_renaming(imported: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    renames: list[object] = []
    real = os.rename
    monkeypatch.setattr(os, "rename", lambda a, b: (renames.append(a), real(a, b)))
    folder = Folder(imported)
    assert folder.sync().new_uids == [1, 2, 3, 4, 5, 6]
    assert renames == []
    assert cur(imported) == sorted(FOREIGN)
    assert uids(imported) == {name: n + 1 for n, name in enumerate(FOREIGN)}  # by name
    assert folder.uidnext == 7
    assert folder.message(2).flags == {"\\Seen"} and folder.message(1).flags == frozenset()
    read = read_uidlist(imported, None)
    assert read is not None and read[0][FOREIGN[0].split(":")[0]] == (1, folder.message(1).modseq)
    assert (imported / UIDLIST_FILE).stat().st_mode & 0o777 == 0o600


def test_a_new_process_sees_the_same_uids_with_or_without_the_index(imported: Path) -> None:
    Folder(imported).sync()
    before = uids(imported)
    new_process()
    assert uids(imported) == before
    (imported / INDEX_FILE).unlink(missing_ok=True)
    new_process()
    assert uids(imported) == before
    assert Folder(imported).uidnext == 7


def test_flags_changed_by_another_tool_keep_the_uid(imported: Path) -> None:
    folder = Folder(imported)
    folder.sync()
    old = imported / "cur" / FOREIGN[0]
    old.rename(imported / "cur" / (FOREIGN[0] + "F"))  # the other tool sets \Flagged
    new_process()
    again = Folder(imported)
    result = again.sync()
    assert again.message(1).flags == {"\\Flagged"}
    assert again.uidnext == 7 and result.new_uids == [1, 2, 3, 4, 5, 6]
    assert folder.sync().flag_changes.keys() == {1}  # the first process sees it as a change


def test_our_flag_change_gives_the_name_its_uid_and_the_entry_leaves(imported: Path) -> None:
    folder = Folder(imported)
    folder.sync()
    folder.store_flags([3], ["\\Answered"], Mode.ADD)
    name = folder.message(3).name
    assert ",U=3," in name and name.startswith(FOREIGN[2].split(":")[0])
    (imported / "cur" / "1790000100.M9P1Q9.import:2,").write_bytes(b"late")  # a later import
    new_process()
    later = Folder(imported)
    later.sync()
    assert later.message(7).name == "1790000100.M9P1Q9.import:2,"
    adopted = read_uidlist(imported, None)
    assert adopted is not None
    assert FOREIGN[2].split(":")[0] not in adopted[0]  # pruned: the name carries U=3 now
    assert len(adopted[0]) == 6
    assert uids(imported)[name] == 3


def test_an_expunged_adopted_uid_is_never_given_again(imported: Path) -> None:
    folder = Folder(imported)
    folder.sync()
    folder.store_flags([6], ["\\Deleted"], Mode.ADD)  # renamed with U=6, then expunged
    assert folder.expunge() == [6]
    os.unlink(imported / "cur" / FOREIGN[4])  # UID 5, removed by another tool
    (imported / "cur" / "1790000200.M1P1Q1.import:2,").write_bytes(b"new")
    new_process()
    again = Folder(imported)
    again.sync()
    assert sorted(uids(imported).values()) == [1, 2, 3, 4, 7]


def test_a_lost_state_file_heals_above_the_adopted_uids(imported: Path) -> None:
    Folder(imported).sync()
    (imported / STATE_FILE).unlink()
    (imported / INDEX_FILE).unlink(missing_ok=True)
    os.unlink(imported / "cur" / FOREIGN[5])  # UID 6 is now only in the uidlist
    new_process()
    folder = Folder(imported)
    folder.sync()
    assert folder.uidnext == 7
    assert uids(imported)[FOREIGN[4]] == 5


def test_a_lost_uidlist_gives_new_uids_never_old_ones(imported: Path) -> None:
    Folder(imported).sync()
    (imported / UIDLIST_FILE).unlink()
    (imported / INDEX_FILE).unlink(missing_ok=True)
    new_process()
    folder = Folder(imported)
    folder.sync()
    assert sorted(uids(imported).values()) == [7, 8, 9, 10, 11, 12]
    assert folder.uidnext == 13


def test_damaged_uidlist_lines_cost_only_their_messages(imported: Path) -> None:
    Folder(imported).sync()
    lines = (imported / UIDLIST_FILE).read_bytes().split(b"\n")
    lines[1] = b"x1 2 " + lines[1].split(b" ", 2)[2]  # the entry of UID 1
    lines[2] = lines[2][:5]  # the entry of UID 2, cut short
    (imported / UIDLIST_FILE).write_bytes(b"\n".join(lines))
    (imported / INDEX_FILE).unlink(missing_ok=True)
    new_process()
    folder = Folder(imported)
    folder.sync()
    got = uids(imported)
    assert [got[name] for name in FOREIGN] == [7, 8, 3, 4, 5, 6]


def test_names_with_our_fields_are_still_renamed(imported: Path) -> None:
    odd = "1790000300.M1P1Q1.import,M=4:2,S"  # an M= without U=: not a name of another tool
    (imported / "cur" / odd).write_bytes(b"odd")
    folder = Folder(imported)
    folder.sync()
    renamed = [n for n in cur(imported) if n.startswith("1790000300.")]
    assert renamed == ["1790000300.M1P1Q1.import,U=7,M=2:2,S"]
    assert folder.message(7).flags == {"\\Seen"}


def test_the_bulk_adoption_of_a_first_open_equals_the_one_by_one_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """_adopt_all (list operations for a whole imported folder) gives the listing, uidlist and
    state that adopting name by name gives."""
    results = []
    for bulk in (True, False):
        box = Maildir(tmp_path / ("bulk" if bulk else "single") / "alice")
        box.create()
        for name in FOREIGN:
            (box.path / "cur" / name).write_bytes(b"hello")
        if not bulk:
            monkeypatch.setattr(folder_module._Listing, "_adopt_all", lambda *args: False)
        new_process()
        folder = Folder(box.path)
        folder.sync()
        state = folder.state()
        listed = [(m.uid, m.flags, m.modseq, m.name) for m in folder.messages()]
        results.append((state[1:], listed, (box.path / UIDLIST_FILE).read_bytes()))
    assert results[0] == results[1]


def test_two_names_with_one_base_get_two_uids(tmp_path: Path) -> None:
    box = Maildir(tmp_path / "alice")
    box.create()
    (box.path / "cur" / "1790000000.M1P1Q1.import:2,S").write_bytes(b"a")
    (box.path / "cur" / "1790000000.M1P1Q1.import:2,").write_bytes(b"b")  # the same base twice
    folder = Folder(box.path)
    assert folder.sync().new_uids == [1, 2]
    names = cur(box.path)
    assert "1790000000.M1P1Q1.import:2," in names  # adopted in place
    assert "1790000000.M1P1Q1.import,U=2,M=2:2,S" in names  # renamed: its base is taken


@pytest.mark.parametrize(
    "names",
    [
        FOREIGN,  # the usual form: taken in bulk
        [*FOREIGN, "1790000099.M9P1Q9.import"],  # no info at all
        [*FOREIGN, "1790000098.M8P1Q8.import:1,experimental"],  # another info version
        [*FOREIGN[:2], "a:2,S:2,T", "b"],  # as many ':2,' as names, but not one each
        ["x:2,", "y:2,FS", "z:2,:"],
    ],
)
def test_bases_and_letters_are_what_partition_gives(names: list[str]) -> None:
    parts = [name.partition(":") for name in names]
    expected = ([b for b, _, _ in parts], [i[2:] if i[:2] == "2," else "" for _, _, i in parts])
    assert folder_module._bases_and_letters(names) == expected


def test_names_without_uids_and_dot_files(tmp_path: Path) -> None:
    ours = "1790000000.M1P1Q1.host,S=5,U=7,M=3:2,S"
    assert sorted(folder_module._without_uids({*FOREIGN, ours})) == sorted(FOREIGN)
    assert sorted(folder_module._without_uids(set(FOREIGN))) == sorted(FOREIGN)
    for name in [*FOREIGN, ".nfs0001", ".hidden:2,S"]:
        (tmp_path / name).write_bytes(b"")
    assert sorted(folder_module._listed(str(tmp_path))) == sorted(FOREIGN)
    (tmp_path / ".nfs0001").unlink()
    (tmp_path / ".hidden:2,S").unlink()
    assert sorted(folder_module._listed(str(tmp_path))) == sorted(FOREIGN)


def test_an_adopted_run_is_the_mapping_it_stands_for(tmp_path: Path) -> None:
    bases = [name.split(":")[0] for name in FOREIGN]
    run = AdoptedRun(bases, 7, 3)
    entries = {base: (7 + n, 3) for n, base in enumerate(bases)}
    assert dict(run) == entries and len(run) == 6 and run.highest == (12, 3)
    assert bases[2] in run and "1790000000.M9P9Q9.other" not in run
    assert run.get(bases[5]) == (12, 3) and run.get("nothing") is None
    assert not run.keys().isdisjoint([bases[4]]) and run.keys().isdisjoint(["nothing"])
    # Written from the run's columns, the list reads back as the same entries, line for line
    # what the entries written one by one give.
    for name, adopted in (("run", run), ("dict", entries)):
        (tmp_path / name).mkdir()
        write_uidlist(tmp_path / name, adopted)
    assert (tmp_path / "run" / UIDLIST_FILE).read_bytes() == (tmp_path / "dict" / UIDLIST_FILE).read_bytes()
    read = read_uidlist(tmp_path / "run", None)
    assert read is not None and read[0] == entries
