"""The parallel read of a big directory (store/dirlisting.py): the listing is os.listdir's
whatever the helpers do, and on ext4 the helpers' start positions really split the directory
(else they would all read it from the start, and gain nothing)."""

from __future__ import annotations

import ctypes
import os
import struct
import threading
from pathlib import Path

import pytest

from mailroom.store import Folder, Maildir, dirlisting
from mailroom.store import folder as folder_module

NAMES = 3000


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cur")
    for n in range(NAMES):
        (path / f"17900{n:05d}.M{n}P1Q{n}.host,S=5:2,S").touch()
    return path


def names_from(path: Path, start: int, end: int) -> list[str]:
    """The names getdents64 gives from position start until the position passes end."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    names: list[str] = []
    try:
        os.lseek(fd, start, os.SEEK_SET)
        buffer = ctypes.create_string_buffer(4096)  # small: the reads past end stay short
        while (size := dirlisting._getdents64(fd, buffer, 4096)) > 0:
            raw, at = buffer.raw[:size], 0
            while at < size:
                _, _, reclen, _ = struct.unpack_from("QqHB", raw, at)
                name = raw[at + 19 : at + reclen].split(b"\0", 1)[0].decode()
                names += [name] if name not in (".", "..") else []
                at += reclen
            if os.lseek(fd, 0, os.SEEK_CUR) >= end:
                break
    finally:
        os.close(fd)
    return names


def test_the_listing_with_helpers_is_os_listdirs(big: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[threading.Thread] = []
    real = dirlisting.read_ahead_dir

    def read_ahead_dir(path: str) -> list[threading.Thread]:
        started.extend(real(path))
        return started

    monkeypatch.setattr(dirlisting, "read_ahead_dir", read_ahead_dir)
    assert sorted(dirlisting.listdir(str(big), dirlisting.BIG_DIRECTORY)) == sorted(os.listdir(big))
    assert len(started) == dirlisting.READERS - 1
    for thread in started:  # not left running into the next test, which counts open files
        thread.join(timeout=10)
    started.clear()
    dirlisting.listdir(str(big), dirlisting.BIG_DIRECTORY - 1)  # a small directory: no helpers
    assert started == []


def test_without_getdents64_the_listing_is_the_same(big: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dirlisting, "_getdents64", None)
    assert dirlisting.read_ahead_dir(str(big)) == []
    assert sorted(dirlisting.listdir(str(big), 1 << 30)) == sorted(os.listdir(big))


def test_the_helpers_end_and_close_their_directories(big: Path) -> None:
    before = len(os.listdir("/proc/self/fd"))
    for thread in dirlisting.read_ahead_dir(str(big)):
        thread.join(timeout=10)
        assert not thread.is_alive()
    assert len(os.listdir("/proc/self/fd")) == before


def test_on_ext4_the_segments_split_the_directory(big: Path) -> None:
    if dirlisting._getdents64 is None:
        pytest.skip("no getdents64 in this libc")
    with open("/proc/mounts") as mounts:
        fs = max(
            ((line.split()[1], line.split()[2]) for line in mounts if str(big).startswith(line.split()[1])),
            key=lambda mount: len(mount[0]),
        )[1]
    if fs != "ext4":
        pytest.skip(f"{big} is on {fs}, whose directory positions are not hashes")
    step = dirlisting._POSITIONS // dirlisting.READERS
    segments = [
        names_from(big, n * step, (n + 1) * step if n < dirlisting.READERS - 1 else dirlisting._POSITIONS)
        for n in range(dirlisting.READERS)
    ]
    seen = [name for segment in segments for name in segment]
    assert set(seen) == set(os.listdir(big))
    # Each segment is about an eighth of the directory, and they overlap by at most the one
    # buffer each reads past its end: the readers do not all start from the beginning.
    share = NAMES // dirlisting.READERS
    assert all(share // 2 < len(segment) < 2 * share for segment in segments)
    assert len(seen) < 1.25 * NAMES


def test_only_a_folders_first_listing_reads_ahead(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    box = Maildir(tmp_path / "alice")
    box.create()
    (box.path / "cur" / "1790000000.M1P1Q1.import:2,S").write_bytes(b"a")
    sizes: list[int] = []
    real = dirlisting.listdir

    def listdir(path: str, size: int) -> list[str]:
        sizes.append(size)
        return real(path, size)

    monkeypatch.setattr(dirlisting, "listdir", listdir)
    folder_module._registry.__init__()  # a process that has not listed it yet
    folder = Folder(box.path)
    assert folder.sync().new_uids == [1]
    (box.path / "cur" / "1790000001.M2P1Q2.import:2,").write_bytes(b"b")  # another tool's
    os.utime(box.path / "cur", ns=(1, 1))  # a change the next sync sees, whatever the clock
    assert folder.sync().new_uids == [2]
    assert sizes == [(box.path / "cur").stat().st_size, 0]
