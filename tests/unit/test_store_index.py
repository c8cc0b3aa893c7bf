"""The saved index of a big folder (store/index.py): used when current, a head start when old,
ignored when damaged, and never a different answer from a scan of cur/."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from mailroom.store import Folder, Maildir, Mode
from mailroom.store import folder as folder_module
from mailroom.store.index import INDEX_FILE, SavedIndex, read_index
from mailroom.store.statefile import STATE_FILE


@pytest.fixture
def big(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Maildir:
    """A folder counted as big (the threshold lowered to 5) with 12 messages, some flagged."""
    monkeypatch.setattr(folder_module, "INDEX_MIN_MESSAGES", 5)
    monkeypatch.setattr(folder_module, "INDEX_INTERVAL", 0.0)
    box = Maildir(tmp_path / "example.test" / "alice")
    box.create()
    for i in range(12):
        box.deliver(f"Subject: m{i}\n\nbody {i}\n".encode())
    folder = Folder(box.path)
    folder.sync()
    folder.store_flags([2, 5, 7], ["\\Seen", "$Work"], Mode.ADD)
    folder.store_flags([3], ["\\Deleted"], Mode.ADD)
    return box


def new_process() -> None:
    """What a freshly started daemon knows: no listing in memory."""
    folder_module._registry.__init__()


def listing(path: Path) -> list[tuple[int, frozenset[str], int, str]]:
    return [(m.uid, m.flags, m.modseq, m.name) for m in Folder(path).messages()]


def scanned(path: Path) -> list[tuple[int, frozenset[str], int, str]]:
    """The listing from cur/ alone, without the index (then the index is put back)."""
    index = path / INDEX_FILE
    saved = index.read_bytes() if index.exists() else None
    index.unlink(missing_ok=True)
    new_process()
    result = listing(path)
    new_process()
    if saved is not None:
        index.write_bytes(saved)
    return result


def count_listings(monkeypatch: pytest.MonkeyPatch, path: Path, sub: str = "cur") -> list[str]:
    """The listings of path/sub (cur/ or new/) made from now on."""
    calls: list[str] = []
    real = os.listdir

    def listdir(where: object = ".") -> list[str]:
        if str(where) == str(path / sub):
            calls.append(str(where))
        return real(where)  # type: ignore[arg-type]

    monkeypatch.setattr(folder_module.os, "listdir", listdir)
    return calls


def test_a_big_folder_saves_its_index_and_a_new_process_opens_it_without_listing_cur(
    big: Maildir, monkeypatch: pytest.MonkeyPatch
) -> None:
    Folder(big.path).sync()  # the last change is saved too (INDEX_INTERVAL is 0 here)
    assert (big.path / INDEX_FILE).exists()
    assert oct((big.path / INDEX_FILE).stat().st_mode & 0o777) == "0o600"
    expected = scanned(big.path)
    new_process()
    calls = count_listings(monkeypatch, big.path)
    folder = Folder(big.path)
    result = folder.sync()
    assert result.new_uids == list(range(1, 13))
    assert folder.summaries([2, 3, 4]) == [
        (frozenset({"\\Seen", "$Work"}), expected[1][2]),
        (frozenset({"\\Deleted"}), expected[2][2]),
        (frozenset(), expected[3][2]),
    ]
    assert folder.first_uid_without("\\Seen") == 1
    assert calls == []  # the columns came from the index; no name was needed yet
    assert listing(big.path) == expected  # the names are read from the index on first need
    assert calls == []
    assert folder.read(7) == b"Subject: m6\n\nbody 6\n"


def test_an_old_index_is_a_head_start_and_the_rescan_finds_every_change(big: Maildir) -> None:
    Folder(big.path).sync()
    old_index = (big.path / INDEX_FILE).read_bytes()
    # Changes made by another process after the index was written, including another Maildir
    # tool removing a file and new mail waiting in new/.
    new_process()
    folder = Folder(big.path)
    folder.sync()
    folder.store_flags([1, 7], ["\\Flagged"], Mode.ADD)
    folder.store_flags([2], ["\\Seen"], Mode.REMOVE)
    folder.expunge([3])
    doomed = next(m for m in folder.messages() if m.uid == 9)
    os.unlink(doomed.path)
    big.deliver(b"Subject: late\n\nlate\n")
    (big.path / INDEX_FILE).write_bytes(old_index)

    new_process()
    reopened = Folder(big.path)
    result = reopened.sync()
    assert 13 in result.new_uids and 3 not in result.new_uids and 9 not in result.new_uids
    assert listing(big.path) == scanned(big.path)
    flags = {uid: flags for uid, flags, _, _ in listing(big.path)}
    assert flags[1] == {"\\Flagged"} and flags[2] == {"$Work"} and flags[7] >= {"\\Flagged", "\\Seen"}


@pytest.mark.parametrize(
    "damage",
    [
        lambda raw: raw[: len(raw) // 2],  # torn
        lambda raw: b"",  # empty
        lambda raw: raw.replace(b"mailroom-index 3", b"mailroom-index 9", 1),  # another version
        lambda raw: raw[:-40] + bytes(40),  # names damaged: the columns alone are not trusted
        lambda raw: raw[:200] + b"\xff" * 20 + raw[220:],  # columns damaged
        lambda raw: b"garbage\n" * 100,
    ],
)
def test_a_damaged_index_is_ignored(big: Maildir, damage) -> None:  # type: ignore[no-untyped-def]
    Folder(big.path).sync()
    expected = scanned(big.path)
    raw = (big.path / INDEX_FILE).read_bytes()
    (big.path / INDEX_FILE).write_bytes(damage(raw))
    new_process()
    assert listing(big.path) == expected
    assert Folder(big.path).first_uid_without("\\Seen") == 1


def test_select_reads_only_the_uids_and_the_rest_is_right_when_needed(
    big: Maildir, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SELECT needs the UIDs and the first unseen one (in the index header): the flag ids and
    modseqs, three quarters of the columns, are read only when asked for."""
    folder = Folder(big.path)
    folder.store_flags([1, 2, 3], ["\\Seen"], Mode.ADD)  # the first unseen is 4 now
    expected = {uid: (flags, modseq) for uid, flags, modseq, _ in scanned(big.path)}
    new_process()
    reads: list[str] = []
    for part in ("fids", "modseqs", "names"):
        real = getattr(SavedIndex, part)
        monkeypatch.setattr(
            SavedIndex, part, lambda self, part=part, real=real: (reads.append(part), real(self))[1]
        )
    folder = Folder(big.path)
    folder.sync(list_first=False)
    assert list(folder.known_uids()) == list(range(1, 13))
    assert folder.first_uid_without("\\Seen") == 4
    assert reads == []
    assert folder.first_uid_without("\\Seen", skip=lambda uid: uid == 4) == 6  # 5 is \\Seen
    assert reads == ["fids"]
    assert folder.summaries(list(range(1, 13))) == [expected[u] for u in range(1, 13)]
    assert reads == ["fids", "modseqs"]


def test_the_first_unseen_of_a_folder_all_seen_is_none(big: Maildir) -> None:
    folder = Folder(big.path)
    folder.store_flags(list(range(1, 13)), ["\\Seen"], Mode.ADD)
    Folder(big.path).sync()
    new_process()
    assert Folder(big.path).first_uid_without("\\Seen") is None


def test_the_first_unseen_is_found_again_after_every_change(big: Maildir) -> None:
    """It is remembered between SELECTs: a change here or by another Maildir tool is seen."""
    folder = Folder(big.path)
    folder.sync()
    folder.store_flags([1, 2, 3], ["\\Seen"], Mode.ADD)
    assert folder.first_uid_without("\\Seen") == 4
    assert folder.first_uid_without("\\Seen") == 4  # remembered
    assert folder.first_uid_without("\\Seen", skip=lambda uid: uid == 4) == 6  # 5 is \\Seen
    folder.store_flags([4], ["\\Seen"], Mode.ADD)
    assert folder.first_uid_without("\\Seen") == 6
    folder.store_flags([1], ["\\Seen"], Mode.REMOVE)
    assert folder.first_uid_without("\\Seen") == 1
    # Another tool marks message 1 seen in its file name.
    cur = big.path / "cur"
    (name,) = [n for n in os.listdir(cur) if ",U=1," in n]
    os.rename(cur / name, cur / (name + "S"))
    time.sleep(0.01)
    os.utime(cur)  # its mtime moves on even within the same tick of the file system's clock
    folder.sync()
    assert folder.first_uid_without("\\Seen") == 6
    folder.store_flags(list(range(1, 13)), ["\\Seen"], Mode.ADD)
    assert folder.first_uid_without("\\Seen") is None


def test_a_reselect_after_every_flag_was_read_still_knows_the_first_unseen(
    big: Maildir, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A FETCH of every message's flags reads the flag ids from the index; the index's first
    unseen UID holds until the listing changes, so the reselect after it answers on the event
    loop (reopened_quietly) without a search through the ids."""
    Folder(big.path).store_flags([1, 2, 3], ["\\Seen"], Mode.ADD)  # the first unseen is 4 now
    new_process()
    folder = Folder(big.path)
    folder.sync(list_first=False)
    os.utime(big.path / "new", (1_600_000_000, 1_600_000_000))  # no delivery in a long while
    folder.sync(list_first=False)
    searches: list[str] = []
    real = folder_module._Listing.uids_with

    def uids_with(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        searches.append("searched")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(folder_module._Listing, "uids_with", uids_with)
    assert [flags for flags, _ in folder.summaries(list(range(1, 13)))][1] == {"\\Seen", "$Work"}
    assert "_fids" in vars(folder._listing)  # read now
    quiet = folder.reopened_quietly()
    assert quiet is not None and quiet[2] == 4
    assert folder.first_uid_without("\\Seen") == 4
    assert searches == []
    # A change makes it unknown until searched for again, and then right.
    folder.store_flags([4], ["\\Seen"], Mode.ADD)
    folder.sync(list_first=False)
    assert folder.reopened_quietly() is None
    assert folder.first_uid_without("\\Seen") == 6  # 5 is \\Seen
    assert searches == ["searched"]


@pytest.mark.parametrize("column", ["fids", "modseqs"])
def test_index_columns_that_do_not_read_back_come_from_cur(big: Maildir, column: str) -> None:
    Folder(big.path).sync()
    expected = scanned(big.path)
    raw = bytearray((big.path / INDEX_FILE).read_bytes())
    header, _, _ = bytes(raw).partition(b"\n")
    fields = header.split()
    count, state_len, table_len = int(fields[3]), int(fields[6]), int(fields[7])
    fids_at = len(header) + 1 + state_len + table_len + 4 * count
    if column == "fids":
        raw[fids_at] ^= 1  # still a valid flag id: only the checksum tells
    else:
        raw[fids_at + 4 * count + 3] ^= 0xFF
    (big.path / INDEX_FILE).write_bytes(bytes(raw))
    new_process()
    assert listing(big.path) == expected


def test_index_names_that_do_not_read_back_are_found_in_cur(big: Maildir) -> None:
    """The columns read fine but the names fail their checksum: names come from cur/ by UID."""
    Folder(big.path).sync()
    expected = scanned(big.path)
    raw = bytearray((big.path / INDEX_FILE).read_bytes())
    raw[-5] ^= 0xFF  # inside the names section, past the columns' checksum
    (big.path / INDEX_FILE).write_bytes(bytes(raw))
    new_process()
    folder = Folder(big.path)
    folder.sync()
    saved = read_index(str(big.path))
    assert saved is not None  # the columns are still usable
    saved.close()
    assert [m.name for m in folder.messages()] == [name for *_, name in expected]
    assert folder.read(1) == b"Subject: m0\n\nbody 0\n"


def test_a_small_folder_keeps_no_index(tmp_path: Path) -> None:
    box = Maildir(tmp_path / "example.test" / "bob")
    box.create()
    box.deliver(b"Subject: one\n\n1\n")
    Folder(box.path).sync()
    assert not (box.path / INDEX_FILE).exists()


def test_the_first_open_in_a_process_reads_the_index_ahead_and_later_ones_do_not(
    big: Maildir, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cold SELECT starts the disk on the index and the state file at once, before it waits
    for the stats before them."""
    advised: list[tuple[str, int, int]] = []
    real = os.posix_fadvise

    def spy(fd: int, offset: int, length: int, advice: int) -> None:
        advised.append((os.readlink(f"/proc/self/fd/{fd}"), offset, advice))
        real(fd, offset, length, advice)

    monkeypatch.setattr(os, "posix_fadvise", spy)
    Folder(big.path).sync()  # saves the index
    new_process()
    advised.clear()
    first = Folder(big.path)
    first.sync()
    assert advised == [
        (str(big.path / INDEX_FILE), 0, os.POSIX_FADV_WILLNEED),
        (str(big.path / STATE_FILE), 0, os.POSIX_FADV_WILLNEED),
    ]
    Folder(big.path).sync()  # the listing is in memory now: nothing to read ahead
    assert len(advised) == 2
    new_process()
    (big.path / INDEX_FILE).unlink()
    assert [m.uid for m in Folder(big.path).messages()] == list(range(1, 13))  # no index, no harm
    assert advised[2:] == [(str(big.path / STATE_FILE), 0, os.POSIX_FADV_WILLNEED)]


def age_new(path: Path, seconds: float) -> None:
    """Make new/'s mtime that many seconds old (as if the last arrival was that long ago)."""
    then = time.time_ns() - int(seconds * 1e9)
    os.utime(path / "new", ns=(then, then))


def test_a_new_process_skips_listing_new_that_was_found_empty_at_its_mtime(
    big: Maildir, monkeypatch: pytest.MonkeyPatch
) -> None:
    """new/ was empty at its mtime (over a second old then) when the index was saved: a new
    process's first SELECT need not list it, and mail delivered since is still found."""
    age_new(big.path, 5)
    new_process()
    Folder(big.path).store_flags([1], ["\\Answered"], Mode.ADD)  # lists new/, saves the index
    expected = listing(big.path)
    new_process()
    calls = count_listings(monkeypatch, big.path, "new")
    assert listing(big.path) == expected
    assert calls == []

    big.deliver(b"Subject: after\n\nafter\n")  # new/ changes: its mtime is no longer the saved one
    new_process()
    folder = Folder(big.path)
    assert 13 in folder.sync().new_uids
    assert calls and set(calls) == {str(big.path / "new")}


def test_an_empty_new_with_a_fresh_mtime_is_listed_by_every_new_process(
    big: Maildir, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An mtime under a second old when new/ was found empty may hide an arrival in the same
    clock tick: it is not saved, so the next process lists new/ again."""
    age_new(big.path, 0)
    new_process()
    Folder(big.path).store_flags([1], ["\\Answered"], Mode.ADD)
    saved = read_index(str(big.path))
    assert saved is not None
    saved.close()
    assert saved.new_empty_at == 0
    new_process()
    calls = count_listings(monkeypatch, big.path, "new")
    Folder(big.path).sync()
    assert calls and set(calls) == {str(big.path / "new")}
